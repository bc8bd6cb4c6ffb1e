"""The autoscaling policy: how many replicas a service needs, decided once a second.

Why it exists: the decision is the part of autoscaling that must be right and
stable, so it lives here apart from the I/O (metric sampling, starting
containers) as a pure function. ``decide`` takes the recent observations of
one service, its ``AutoscaleSpec``, the state carried from the previous
decision and the time, and returns the replica count with a readable reason.
It reads no clock and touches nothing, so tests can drive it second by second
through synthetic load traces.

The rules, after Kubernetes' HorizontalPodAutoscaler and Knative's panic window:

- Need per targeted metric, in replicas: (in-flight + queued) / concurrency
  target, total rps / rps target, sum over ready replicas of cpu% / cpu target;
  the busiest metric wins.
- The concurrency need is bounded by Little's law where the gateway knows the
  replicas' service time: arrivals/s x seconds per request is the concurrency
  the load sustains (the window's median), which does not grow with a backlog
  (the queue grows while capacity starts; the arrivals do not). With a queue,
  one replica more is allowed, to drain it, unless the gateway's per-replica
  limit (``Observation.limit``) leaves the sustained count enough free slots
  to empty the queue within half the queue's timeout (``Observation.queue_timeout``;
  ``DRAIN_SECONDS`` when unknown): the drain replica is never
  stacked on a count that already drains. So a step that needs 4 gets 4 or 5,
  never the maximum, even when the service time swells under load.
- Scale-up looks at the last ``SHORT_WINDOW`` seconds, so a step in load is
  answered within two ticks; everything else at the last ``STABLE_WINDOW``
  seconds.
- Tolerance: while the need is within ±10% of the current count, the count is
  kept. A scale-down lands on a count that leaves the load at most 90% of its
  target (``ceil(need / 0.9)``), so the noise that allowed it cannot push the
  count straight back up: on steady load the count never reverses direction.
- Scale-up is immediate. A need of twice the ready replicas or more is a burst:
  the count jumps to it and no scale-down happens for ``PANIC_HOLD`` seconds.
- Scale-down is stabilised as in the HPA: the count is the highest
  recommendation of the last ``scale_down_delay`` seconds, so the need must
  have stayed lower for that long.
- With ``min: 0``, a service without traffic (nothing in flight, no requests)
  recommends zero; any traffic recommends at least one, at once.
- No data (no recent observation, CPU unknown) holds the count, and says so.
- The result is always clamped to ``[min, max]``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flotilla.spec.models import AutoscaleSpec

TOLERANCE = 0.10
STABLE_WINDOW = 6.0
SHORT_WINDOW = 2.0
PANIC_FACTOR = 2.0
PANIC_HOLD = 6.0
# A queue the sustained count's free slots empty within half its timeout needs no extra replica:
# its requests are served in time, and one more would take a second to start (benchmarks/autoscale.py)
# and then idle for scale_down_delay. Without a known timeout, this long:
DRAIN_SECONDS = 2.0
_EPSILON = 1e-9
_HUGE = 10**9  # a need beyond any sane max; keeps ceil() away from infinities


@dataclass(frozen=True)
class Observation:
    """One second of one service, as the daemon saw it."""

    at: float  # seconds, on the caller's clock
    in_flight: float  # requests in flight at the gateway, summed over replicas
    rps: float  # requests per second arriving at the gateway, over the last second
    cpu_percent: float | None  # mean CPU of the ready replicas, % of their limit; None if unknown
    ready: int  # replicas serving
    queued: float = 0.0  # requests waiting in the gateway's queue for a free replica
    service_time: float | None = None  # seconds a replica takes per request (recent mean); None: unknown
    limit: float | None = None  # the most requests the gateway gives one replica at once; None: no limit
    queue_timeout: float | None = None  # seconds a request may wait in the gateway's queue; None: unknown


@dataclass(frozen=True)
class PolicyState:
    """What one decision hands to the next; the caller stores it between ticks.

    ``recommendations`` holds only the (time, replicas) pairs that can still
    matter for scale-down stabilisation: oldest first, each higher than every
    later one (a recommendation followed by a higher or equal one can never be
    the maximum again, so it is dropped).
    """

    desired: int
    last_change_at: float | None
    panic_until: float | None
    recommendations: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class Decision:
    replicas: int  # the desired replica count after this decision
    state: PolicyState
    reason: str  # e.g. "in-flight 43 over 2 replicas, target 10 → 5 replicas"
    changed: bool


@dataclass(frozen=True)
class _Need:
    """One metric over one window, and what it asks for at the current count."""

    replicas: int  # the recommendation for this metric, unclamped
    raw: int  # ceil(need): the replicas that put the metric exactly at its target
    metric: str = ""  # "" for a hold that is not about a metric's value
    value: float = 0.0  # what the reason shows: total in-flight, total rps, mean cpu %
    target: float = 0.0
    ready: int = 0
    note: str = ""  # the reason's text when ``metric`` is ""
    queued: float = 0.0  # for concurrency: the mean queue, shown beside the in-flight value
    bound: str = ""  # why the need is lower than the load asked for (Little's law), if it is

    @property
    def text(self) -> str:
        """``in-flight 43 over 2 replicas, target 10``."""
        if not self.metric:
            return self.note
        label, unit = _LABEL[self.metric]
        queue = f" + {_num(self.queued)} queued" if self.queued > _EPSILON else ""
        text = f"{label(self.value)}{queue} over {_replicas(self.ready)}, target {_num(self.target)}{unit}"
        return f"{text}; {self.bound}" if self.bound else text


@dataclass(frozen=True)
class _Assessment:
    """This tick's recommendation before stabilisation."""

    wanted: int  # unclamped
    text: str
    panic: bool = False
    no_traffic: bool = False


@dataclass(frozen=True)
class _Tick:
    """Everything one decision worked out, for its state and its reason."""

    assessment: _Assessment
    current: int
    recommended: int  # this tick's recommendation, clamped
    replicas: int  # the decision
    history: tuple[tuple[float, int], ...]
    panic_until: float | None  # None once the panic is over
    bounds: tuple[int, int]
    delay: float
    now: float


def initial_state(*, replicas: int, now: float) -> PolicyState:
    """The state of a service that has just come under the autoscaler with ``replicas``.

    The count is recorded as a recommendation at ``now``, so nothing scales
    down before ``scale_down_delay`` has passed (a restarted daemon does not
    shed replicas on its first ticks).
    """
    return PolicyState(desired=replicas, last_change_at=None, panic_until=None,
                       recommendations=((now, replicas),))


def decide(*, window: Sequence[Observation], policy: AutoscaleSpec, state: PolicyState,
           now: float) -> Decision:
    """The replica count for ``now``, from the observations in ``window`` (any order)."""
    bounds = _bounds(policy)
    assessment = _assess(window=window, policy=policy, current=state.desired, now=now)
    tick = _tick(assessment, state=state, bounds=bounds, delay=_delay(policy), now=now)
    changed = tick.replicas != state.desired
    new_state = PolicyState(
        desired=tick.replicas,
        last_change_at=now if changed else state.last_change_at,
        panic_until=tick.panic_until,
        recommendations=tick.history,
    )
    return Decision(replicas=tick.replicas, state=new_state, reason=_reason(tick), changed=changed)


def _tick(assessment: _Assessment, *, state: PolicyState, bounds: tuple[int, int], delay: float,
          now: float) -> _Tick:
    recommended = _clamp(assessment.wanted, bounds)
    history = _remember(state.recommendations, at=now, replicas=recommended, delay=delay)
    panic_until = now + PANIC_HOLD if assessment.panic else state.panic_until
    if panic_until is not None and now >= panic_until:
        panic_until = None
    replicas = _stabilised(state.desired, recommended, history, in_panic=panic_until is not None)
    return _Tick(assessment=assessment, current=state.desired, recommended=recommended,
                 replicas=_clamp(replicas, bounds), history=history, panic_until=panic_until,
                 bounds=bounds, delay=delay, now=now)


# --- this tick's recommendation -------------------------------------------------------


def _assess(*, window: Sequence[Observation], policy: AutoscaleSpec, current: int,
            now: float) -> _Assessment:
    stable = _recent(window, now=now, seconds=STABLE_WINDOW)
    if not stable:
        return _Assessment(current, f"no metrics in the last {STABLE_WINDOW:g}s")
    traffic = _has_traffic(stable)
    if policy.min <= 0 and not traffic:
        return _Assessment(0, "no traffic", no_traffic=True)
    targets = _targets(policy)
    if not targets:
        return _Assessment(current, "no usable autoscale target")
    short = _recent(window, now=now, seconds=SHORT_WINDOW) or stable
    assessment = _busiest(stable=stable, short=short, targets=targets, current=current)
    if traffic and assessment.wanted < 1:
        last = stable[-1]
        text = f"traffic at 0 replicas (in-flight {_num(last.in_flight)}, rps {last.rps:.1f})"
        return _Assessment(1, text)
    return assessment


def _busiest(*, stable: Sequence[Observation], short: Sequence[Observation],
             targets: dict[str, float], current: int) -> _Assessment:
    """The metric asking for the most replicas, over both windows (stable wins ties).

    A metric without data in the stable window holds the count: it may not
    lower it, while the known metrics may still raise it.
    """
    ready = max(0, stable[-1].ready)
    calm = _needs(stable, targets=targets, current=current, ready=ready)
    burst = _needs(short, targets=targets, current=current, ready=ready)
    missing = [m for m in targets if m not in calm]
    needs = [*calm.values(), *burst.values()]
    if missing:
        note = f"{' and '.join(_NAME[m] for m in missing)} unknown in the last {STABLE_WINDOW:g}s"
        needs.append(_Need(replicas=current, raw=current, note=note))
    top = max(needs, key=lambda n: n.replicas)  # max() keeps the first of equals: stable first
    panic = any(n.raw >= PANIC_FACTOR * max(ready, 1) for n in burst.values())
    return _Assessment(top.replicas, top.text, panic=panic)


def _needs(samples: Sequence[Observation], *, targets: dict[str, float], current: int,
           ready: int) -> dict[str, _Need]:
    found = {m: _need(m, samples=samples, target=t, current=current, ready=ready)
             for m, t in targets.items()}
    return {m: need for m, need in found.items() if need is not None}


def _need(metric: str, *, samples: Sequence[Observation], target: float, current: int,
          ready: int) -> _Need | None:
    """One metric's need over ``samples``; None when no sample has a usable value."""
    if metric == "in_flight":
        return _concurrency_need(samples, target=target, current=current, ready=ready)
    if metric == "cpu":
        known = [o for o in samples if _usable(o.cpu_percent) and o.ready > 0]
        totals = [o.ready * o.cpu_percent for o in known]  # CPU of the whole service, in %
        value = _mean([o.cpu_percent for o in known]) if known else 0.0
    else:
        totals = [v for v in (getattr(o, metric) for o in samples) if _usable(v)]
        value = _mean(totals) if totals else 0.0
    if not totals:
        return None
    per_target = _mean(totals) / target  # in replicas: 1.0 is one replica exactly at target
    return _Need(replicas=_recommend(per_target, current=current), raw=_ceil(per_target),
                 metric=metric, value=value, target=target, ready=ready)


def _concurrency_need(samples: Sequence[Observation], *, target: float, current: int,
                      ready: int) -> _Need | None:
    """(in-flight + queued) / target, bounded by what the arrivals sustain (``_arrival_bound``)."""
    known = [o for o in samples if _usable(o.in_flight) and _usable(o.queued)]
    if not known:
        return None
    in_flight, queued = _mean([o.in_flight for o in known]), _mean([o.queued for o in known])
    per_target = (in_flight + queued) / target
    bound = _arrival_bound(samples, target=target, queued=queued)
    note = ""
    if bound is not None and bound[0] < per_target:
        per_target, note = bound
    return _Need(replicas=_recommend(per_target, current=current), raw=_ceil(per_target),
                 metric="in_flight", value=in_flight, target=target, ready=ready, queued=queued,
                 bound=note)


def _arrival_bound(samples: Sequence[Observation], *, target: float,
                   queued: float) -> tuple[float, str] | None:
    """Little's law: arrivals/s x service time is the concurrency the load sustains, in replicas
    at ``target``; one more while requests queue, to drain them (``_drains``). None without both
    numbers."""
    timed = [o for o in samples if _usable(o.rps) and _usable(o.service_time) and o.service_time > 0]
    if not timed:
        return None
    rps, seconds = _arrivals(timed), _mean([o.service_time for o in timed])
    sustained = rps * seconds / target
    note = f"arrivals {rps:.1f}/s x {seconds:.2f}s = {_num(rps * seconds)} in flight, need {_ceil(sustained)}"
    if queued <= _EPSILON:
        return sustained, note
    limits = [o.limit for o in timed if _positive(o.limit)]
    waits = [o.queue_timeout / 2 for o in timed if _positive(o.queue_timeout)]
    drain = _drains(queued, replicas=_ceil(sustained), limit=min(limits) if limits else None,
                    concurrency=rps * seconds, seconds=seconds, within=min(waits) if waits else DRAIN_SECONDS)
    if drain is not None:
        return sustained, f"{note}, whose free slots empty the queue in {drain:.1f}s"
    return sustained + 1, f"{note} + 1 to drain the queue"


def _arrivals(timed: Sequence[Observation]) -> float:
    """The window's median arrivals, so one second's spike buys nothing; but the latest while the
    queue grows: then arrivals outrun the replicas now, and the median lags a step by a second."""
    median = statistics.median(o.rps for o in timed)
    growing = len(timed) > 1 and _usable(timed[-1].queued) and timed[-1].queued > timed[0].queued
    return max(median, timed[-1].rps) if growing else median


def _drains(queued: float, *, replicas: int, limit: float | None, concurrency: float, seconds: float,
            within: float) -> float | None:
    """The seconds ``replicas`` of ``limit`` slots each take to empty ``queued`` requests beside the
    sustained ``concurrency``, if ``within``; None if longer or unknown (no limit)."""
    if limit is None:
        return None
    free = replicas * limit - concurrency  # slots the sustained load leaves free
    if free <= _EPSILON:
        return None
    drain = queued * seconds / free
    return drain if drain <= within else None


_LABEL = {  # the metric's words in a reason, and the unit of its target
    "in_flight": (lambda v: f"in-flight {_num(v)}", ""),
    "rps": (lambda v: f"rps {v:.1f}", ""),
    "cpu": (lambda v: f"cpu {v:.0f}%", "%"),
}


def _recommend(need: float, *, current: int) -> int:
    """HPA's rule with a tolerance band, and headroom after a scale-down.

    ``need`` is in replicas. Within ±``TOLERANCE`` of ``current`` nothing moves;
    above, ``ceil(need)``; below, the count that puts the load at 90% of its
    target, so that noise around the new count cannot bring the old one back.
    """
    if need > current * (1 + TOLERANCE) + _EPSILON:
        return _ceil(need)
    if need < current * (1 - TOLERANCE) - _EPSILON:
        return min(current, _ceil(need / (1 - TOLERANCE)))
    return current


# --- stabilisation ---------------------------------------------------------------------


def _remember(history: tuple[tuple[float, int], ...], *, at: float, replicas: int,
              delay: float) -> tuple[tuple[float, int], ...]:
    """Add this tick's recommendation; drop what is too old or can no longer be the max."""
    kept = [(t, r) for t, r in history if t > at - delay and r > replicas]
    return (*kept, (at, replicas))


def _stabilised(current: int, recommended: int, history: tuple[tuple[float, int], ...], *,
                in_panic: bool) -> int:
    """Up at once; down only to the highest recommendation still in the history."""
    if recommended >= current:
        return recommended
    if in_panic:
        return current
    return min(current, max(r for _, r in history))


# --- the reason --------------------------------------------------------------------------


def _reason(tick: _Tick) -> str:
    if tick.assessment.no_traffic and tick.replicas == 0 < tick.current:
        return f"no traffic for {_span(tick.delay)} → 0 replicas"
    if tick.replicas > tick.current:
        outcome = f"{_replicas(tick.replicas)}{_up_note(tick)}"
    elif tick.replicas < tick.current:
        outcome = f"{_replicas(tick.replicas)}{_down_note(tick)}"
    else:
        outcome = f"holding {tick.current}{_hold_note(tick)}"
    return f"{tick.assessment.text} → {outcome}"


def _up_note(tick: _Tick) -> str:
    if tick.assessment.panic:
        return f" (burst: no scale-down for {PANIC_HOLD:g}s{_bound_note(tick, sep='; ')})"
    return _bound_note(tick)


def _down_note(tick: _Tick) -> str:
    low, high = tick.bounds
    if tick.current > high and tick.replicas == high:
        return f" (max {high})"
    return f" (need lower for {_span(tick.delay)}{_bound_note(tick, sep='; ')})"


def _hold_note(tick: _Tick) -> str:
    if tick.recommended < tick.current and tick.panic_until is not None:
        return f" (burst: no scale-down for another {_secs(tick.panic_until - tick.now)})"
    if tick.recommended < tick.current:
        since = max((t for t, r in tick.history if r >= tick.current), default=tick.now)
        return f" (scale-down waits {_span(tick.delay)}, {_secs(since + tick.delay - tick.now)} left)"
    return _bound_note(tick)


def _bound_note(tick: _Tick, *, sep: str = "") -> str:
    """Why the decision is not what the metric asked for: a bound of the policy."""
    low, high = tick.bounds
    wanted = tick.assessment.wanted
    if wanted > high:
        note = f"max {high}, need {wanted}"
    elif wanted < low:
        note = f"min {low}"
    else:
        return ""
    return f"{sep}{note}" if sep else f" ({note})"


# --- small helpers -----------------------------------------------------------------------


def _recent(window: Sequence[Observation], *, now: float, seconds: float) -> list[Observation]:
    """The observations in ``(now - seconds, now]``, oldest first."""
    return sorted((o for o in window if now - seconds < o.at <= now), key=lambda o: o.at)


def _has_traffic(samples: Sequence[Observation]) -> bool:
    return any(_positive(o.in_flight) or _positive(o.queued) or _positive(o.rps) for o in samples)


_NAME = {"in_flight": "in-flight", "rps": "rps", "cpu": "cpu"}


def _targets(policy: AutoscaleSpec) -> dict[str, float]:
    """Observation field -> per-replica target, for the targeted metrics with a usable value."""
    target = policy.target
    found = {"in_flight": target.concurrency, "rps": target.rps, "cpu": target.cpu}
    return {m: float(v) for m, v in found.items() if _positive(v)}


def _bounds(policy: AutoscaleSpec) -> tuple[int, int]:
    low = max(0, policy.min)
    return low, max(low, policy.max)


def _delay(policy: AutoscaleSpec) -> float:
    """``scale_down_delay`` in seconds; infinite means never, nonsense (negative, NaN) means none."""
    delay = policy.scale_down_delay
    return float(delay) if delay is not None and delay >= 0 else 0.0


def _clamp(n: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return max(low, min(high, n))


def _usable(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v >= 0


def _positive(v: float | None) -> bool:
    return _usable(v) and v > 0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)  # may be inf on absurd values: _ceil() caps it


def _ceil(x: float) -> int:
    return _HUGE if not x < _HUGE else math.ceil(x - _EPSILON)


def _num(v: float) -> str:
    return f"{v:.1f}".removesuffix(".0")


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def _span(seconds: float) -> str:
    """A configured duration: ``60s``, ``2.5s``, or ``forever``."""
    return f"{seconds:g}s" if seconds < _HUGE else "forever"


def _secs(seconds: float) -> str:
    """Time left, in whole seconds rounded up."""
    return f"{max(0, math.ceil(seconds - _EPSILON))}s" if seconds < _HUGE else "forever"
