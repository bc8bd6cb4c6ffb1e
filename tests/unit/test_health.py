"""The health prober's state machine, with a fake probe and an injected clock.

The real probe, over sockets, is tested in tests/integration/test_health_probe.py.
"""

from __future__ import annotations

from flotilla.daemon.health import (
    FAILURES_TO_UNHEALTHY,
    NEVER_UP_AFTER,
    NO_PROBE_SETTLE,
    STARTUP_INTERVAL,
    HealthProber,
    ProbeTarget,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def target(kind="http", cid="c1", interval=2.0):
    return ProbeTarget(
        container_id=cid, app="shop", replica="web-1", ip="127.0.0.1", port=9,
        kind=kind, path="/healthz", interval=interval, timeout=0.5,
    )


def make(results):
    """A prober whose probes answer from ``results`` in order; changes are recorded."""
    clock = Clock()
    changes = []
    answers = iter(results)
    prober = HealthProber(
        on_change=lambda t, healthy, detail: changes.append((t.replica, healthy)),
        clock=clock,
        probe_fn=lambda t: next(answers),
    )
    return prober, clock, changes


def step(prober, clock, advance):
    """Run one probe round synchronously, then move the clock."""
    for state in prober._due():  # drive the loop by hand
        prober._probe_one(state)
    clock.now += advance


def test_new_replica_is_healthy_after_its_first_good_probe():
    prober, clock, changes = make([(False, "refused"), (True, "HTTP 200")])
    prober.set_targets("shop", [target()])
    assert prober.healthy("c1") is None
    step(prober, clock, STARTUP_INTERVAL)
    assert prober.healthy("c1") is None and changes == []
    step(prober, clock, 0)
    assert prober.healthy("c1") is True and changes == [("web-1", True)]


def test_healthy_replica_turns_unhealthy_only_after_two_failures_in_a_row():
    prober, clock, changes = make([(True, "ok"), (False, "timeout"), (True, "ok"), (False, "x"), (False, "y")])
    prober.set_targets("shop", [target(interval=2.0)])
    step(prober, clock, 2.0)
    step(prober, clock, 2.0)  # one failure: still healthy
    assert prober.healthy("c1") is True
    step(prober, clock, 2.0)
    step(prober, clock, 2.0)
    assert prober.healthy("c1") is True
    step(prober, clock, 2.0)
    assert prober.healthy("c1") is False
    assert changes == [("web-1", True), ("web-1", False)]
    assert FAILURES_TO_UNHEALTHY == 2


def test_probes_wait_for_their_interval():
    prober, clock, _ = make([(True, "ok")] * 3)
    prober.set_targets("shop", [target(interval=2.0)])
    step(prober, clock, 1.0)
    assert prober._due() == []  # 1 s into a 2 s interval
    clock.now += 1.0
    assert len(prober._due()) == 1


def test_unprobed_replica_must_keep_running_to_count_as_healthy():
    prober, clock, _ = make([(True, "running (no probe)")])
    prober.set_targets("shop", [target(kind="none")])
    assert prober._due() == []
    clock.now += NO_PROBE_SETTLE
    step(prober, clock, 0)
    assert prober.healthy("c1") is True


def test_removed_targets_are_forgotten_and_kept_ones_keep_their_state():
    prober, clock, _ = make([(True, "ok")] * 2)
    prober.set_targets("shop", [target(cid="c1"), target(cid="c2")])
    step(prober, clock, 0)
    prober.set_targets("shop", [target(cid="c2")])
    assert prober.healthy("c1") is None and prober.healthy("c2") is True


def test_the_first_answer_goes_to_on_ready_at_once_and_only_the_first():
    # Issue 18: a new replica is probed at once, then every STARTUP_INTERVAL, and its first good
    # probe routes it (on_ready) before the health change wakes a reconcile pass; a recovery later
    # is the reconciler's business, not a new replica's.
    clock, calls = Clock(), []
    answers = iter([(False, "refused"), (True, "ok"), (False, "a"), (False, "b"), (True, "ok")])
    prober = HealthProber(on_change=lambda t, healthy, detail: calls.append(("change", healthy)), clock=clock,
                          probe_fn=lambda t: next(answers), on_ready=lambda t: calls.append(("ready", t.replica)))
    prober.add_target(target(interval=2.0))
    assert len(prober._due()) == 1, "probed at once, not after an interval"
    prober._states["c1"].in_flight = False
    step(prober, clock, STARTUP_INTERVAL)
    assert STARTUP_INTERVAL <= 0.05 and calls == []
    step(prober, clock, 2.0)
    assert calls == [("ready", "web-1"), ("change", True)]
    for _ in range(3):
        step(prober, clock, 2.0)
    assert calls == [("ready", "web-1"), ("change", True), ("change", False), ("change", True)]


def test_a_failing_on_ready_still_reports_the_change():
    clock, changes = Clock(), []
    prober = HealthProber(on_change=lambda t, healthy, detail: changes.append(healthy), clock=clock,
                          probe_fn=lambda t: (True, "ok"), on_ready=lambda t: 1 / 0)
    prober.add_target(target())
    step(prober, clock, 0)
    assert changes == [True]


def test_a_replica_that_never_answers_is_unhealthy_after_never_up_after():
    prober, clock, changes = make([(False, "refused")] * 100)
    prober.set_targets("shop", [target()])
    while clock.now < 1000.0 + NEVER_UP_AFTER - STARTUP_INTERVAL:
        step(prober, clock, STARTUP_INTERVAL)
    assert prober.healthy("c1") is None
    step(prober, clock, STARTUP_INTERVAL)
    step(prober, clock, STARTUP_INTERVAL)
    assert prober.healthy("c1") is False and changes == [("web-1", False)]
