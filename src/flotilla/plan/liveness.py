"""Liveness, pure: which running replicas have failed their health check long enough to replace.

A replica that hangs while its process lives (deadlocked, out of threads) is
taken out of traffic by its failing health check, but without this it would
be kept for ever. A service with ``health.replace_after`` has such a replica
replaced: stopped at once (it answers nothing, so there is nothing to drain)
and its slot refilled with the crash back-off, as if it had crashed. Failures
in the first ``health.start_period`` of a replica's life do not count.

Mass failure: when no replica of a service is healthy, the cause is more
likely a dependency than every replica, and killing them all would only add
cold starts. Then at most one replica of the service is replaced at a time
(the one failing longest), and only while every slot holds a replica that
is itself past ``replace_after``: the replacement must start and fail its
own time out before the next goes, and the others are kept. Replacing an
unhealthy replica never lowers the count of healthy ones, so health alone
never takes a service below one healthy replica.

A service in the middle of a rollout is left alone here: an unhealthy new
replica is the rollout's failure (plan/rollouts.py), not a replica to heal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flotilla.plan.model import Desired, DesiredService, Hold, Observed, ObservedReplica, RemoveReplica


@dataclass(frozen=True)
class Failing:
    """What the prober knows of one replica: when it first saw it, and since when it fails (None: it passes)."""

    first_seen: float
    failing_since: float | None


def liveness_actions(
    desired: Desired,
    observed: Observed,
    *,
    failing: Mapping[str, Failing],
    now: float,
    rolling: frozenset[str] = frozenset(),
) -> list[RemoveReplica | Hold]:
    """Replicas to replace for failing their check, and holds (with ``until``) for those still within their time."""
    actions: list[RemoveReplica | Hold] = []
    for service in desired.services:
        if service.replace_after is None or service.name in rolling:
            continue
        live = [r for r in observed.replicas if r.service == service.name and r.running]
        actions += _service_liveness(service, live, failing=failing, now=now)
    return actions


def _service_liveness(service: DesiredService, live: list[ObservedReplica], *,
                      failing: Mapping[str, Failing], now: float) -> list[RemoveReplica | Hold]:
    due: list[tuple[float, ObservedReplica]] = []
    holds: list[RemoveReplica | Hold] = []
    for replica in live:
        since = _failing_since(service, failing.get(replica.container_id), healthy=replica.healthy)
        if since is None:
            continue
        until = since + (service.replace_after or 0.0)
        if now >= until:
            due.append((since, replica))
        else:
            holds.append(Hold(service.name, replica.index, f"failing its health check; replaced at "
                              f"{until - now:.1f}s from now unless it recovers", until=until))
    if not due:
        return holds
    if not any(r.healthy is True for r in live):
        if len(live) < service.slots or len(due) < len(live):
            return holds  # mass failure, and a slot empty or a replica still starting: wait for it first
        due = sorted(due, key=lambda d: (d[0], d[1].index))[:1]
    return holds + [_replace(service, replica, now - since) for since, replica in due]


def _failing_since(service: DesiredService, state: Failing | None, *, healthy: bool | None) -> float | None:
    """When the replica's failures began to count, or None if it is not failing."""
    if state is None or state.failing_since is None or healthy is True:
        return None
    return max(state.failing_since, state.first_seen + service.start_period)


def _replace(service: DesiredService, replica: ObservedReplica, failed_for: float) -> RemoveReplica:
    reason = (f"unresponsive: failed its health check for {failed_for:.1f}s "
              f"(health.replace_after {service.replace_after:g}s); replacing it")
    return RemoveReplica(container_id=replica.container_id, name=replica.name, service=replica.service,
                         index=replica.index, reason=reason, graceful=False)


def merge(planned: tuple, liveness: list[RemoveReplica | Hold]) -> tuple:
    """The plan's actions plus liveness', without touching a replica the plan already removes."""
    removed = {a.container_id for a in planned if isinstance(a, RemoveReplica)}
    extra = [a for a in liveness if not (isinstance(a, RemoveReplica) and a.container_id in removed)]
    return tuple(planned) + tuple(extra)
