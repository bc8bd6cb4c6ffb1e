"""The gateway's pure parts: server sync rules and traffic metrics."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.gateway.metrics import MetricsWindow, Sample, prometheus_text, request_rate
from flotilla.gateway.sync import DesiredServer, activator_changes, enabled_for_config, server_changes


@dataclass(frozen=True)
class Now:
    address: str
    port: int
    admin: str


def ops(changes):
    return [(c.slot, c.op) for c in changes]


FREE = Now("0.0.0.0", 1, "maint")


def slots(**taken):
    """Four slots; ``taken`` puts replicas in some: slot2=("10.0.0.2", "ready")."""
    pool = {f"slot{i}": FREE for i in range(1, 5)}
    pool.update({name: Now(address, 8000, admin) for name, (address, admin) in taken.items()})
    return pool


def test_new_replica_takes_the_first_free_slot_in_maintenance_and_is_ready_only_when_healthy():
    starting = DesiredServer("web-1", "10.0.0.2", 8000, healthy=None)
    assert ops(server_changes("be", [starting], slots(slot1=("10.0.0.9", "ready")))) == [
        ("slot2", "assign"), ("slot1", "maint"), ("slot1", "release"),
    ]
    healthy = DesiredServer("web-1", "10.0.0.2", 8000, healthy=True)
    assert ops(server_changes("be", [healthy], slots())) == [("slot1", "assign"), ("slot1", "ready")]
    assert ops(server_changes("be", [healthy], slots(slot3=("10.0.0.2", "maint")))) == [("slot3", "ready")]
    assignment = server_changes("be", [healthy], slots())[0]
    assert (assignment.address, assignment.port) == ("10.0.0.2", 8000)


def test_unknown_health_keeps_a_serving_replica_in_rotation():
    unknown = DesiredServer("web-1", "10.0.0.2", 8000, healthy=None)
    assert server_changes("be", [unknown], slots(slot1=("10.0.0.2", "ready"))) == []
    assert enabled_for_config(unknown, Now("10.0.0.2", 8000, "ready")) is True
    assert enabled_for_config(unknown, None) is False


def test_unhealthy_replica_leaves_rotation_and_gone_ones_free_their_slot():
    sick = DesiredServer("web-1", "10.0.0.2", 8000, healthy=False)
    current = slots(slot1=("10.0.0.2", "ready"), slot2=("10.0.0.9", "ready"))
    assert ops(server_changes("be", [sick], current)) == [("slot1", "maint"), ("slot2", "maint"), ("slot2", "release")]
    release = server_changes("be", [sick], current)[-1]
    assert (release.address, release.port) == ("0.0.0.0", 1)


def test_draining_replicas_are_left_alone():
    current = slots(slot2=("10.0.0.3", "drain"))
    assert server_changes("be", [], current, draining={"10.0.0.3"}) == []


def test_no_free_slot_is_an_error_not_a_silent_drop():
    import pytest

    from flotilla.errors import NoFreeSlotError

    full = {f"slot{i}": Now(f"10.0.0.{i}", 8000, "ready") for i in range(1, 3)}
    wanted = [DesiredServer(f"w{i}", f"10.0.0.{i}", 8000, True) for i in range(1, 4)]
    with pytest.raises(NoFreeSlotError):
        server_changes("be", wanted, full)


healths = st.sampled_from([True, False, None])
admins = st.sampled_from(["ready", "drain", "maint"])
addresses = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(addresses, healths, max_size=4),
       st.dictionaries(st.integers(1, 6), st.tuples(addresses, admins)))
def test_after_sync_exactly_the_healthy_replicas_are_ready(desired_health, occupied):
    seen: set[str] = set()
    pool = {}
    for number in range(1, 7):  # six slots, each address in at most one
        address, admin = occupied.get(number, ("0.0.0.0", "maint"))
        if address in seen:
            address, admin = "0.0.0.0", "maint"
        seen.add(address)
        pool[f"slot{number}"] = Now(address, 80 if address != "0.0.0.0" else 1, admin)
    desired = [DesiredServer(a, a, 80, h) for a, h in desired_health.items()]
    state = {slot: (s.address, s.admin) for slot, s in pool.items()}
    for change in server_changes("be", desired, pool):
        address, admin = state[change.slot]
        if change.op == "assign":
            assert address == "0.0.0.0" and admin == "maint", "assign only a free slot"
            state[change.slot] = (change.address, "maint")
        elif change.op == "release":
            assert admin == "maint", "free a slot only from maintenance"
            state[change.slot] = ("0.0.0.0", "maint")
        else:
            state[change.slot] = (address, change.op)
    by_address = {a: admin for a, admin in state.values() if a != "0.0.0.0"}
    assert set(by_address) == set(desired_health)
    before = {s.address: s.admin for s in pool.values()}
    for address, health in desired_health.items():
        if health is True:
            assert by_address[address] == "ready"
        elif health is False:
            assert by_address[address] != "ready"
        else:  # unknown: unchanged, or not yet in rotation if new
            assert by_address[address] == before.get(address, "maint")


def sample(at, total, in_flight=0):
    return Sample(at=at, requests_total=total, in_flight=in_flight, queued=0, http_5xx_total=0, response_ms=2.0)


def test_request_rate_over_the_last_second():
    samples = [sample(0, 0), sample(1, 100), sample(2, 300)]
    assert request_rate(samples, over=1.0) == 200.0
    assert request_rate(samples, over=2.0) == 150.0
    assert request_rate(samples[:1], over=1.0) == 0.0
    assert request_rate([sample(0, 50), sample(1, 10)], over=1.0) == 0.0  # counters reset by a reload


def test_window_keeps_a_bounded_history_and_forgets_removed_services():
    window = MetricsWindow(seconds=10)
    for t in range(30):
        window.add("shop", "web", sample(float(t), t * 10, in_flight=t % 3))
    assert len(window.samples("shop", "web")) == 11
    current = window.current("shop", "web")
    assert current.rps == 10.0 and current.requests_total == 290
    window.forget([])
    assert window.current("shop", "web") is None


def test_prometheus_text_format():
    window = MetricsWindow()
    window.add("shop", "web", sample(0, 5))
    window.add("shop", "web", sample(1, 25, in_flight=3))
    text = prometheus_text(window.all_current(), replicas={("shop", "web"): 2})
    assert '# TYPE flotilla_service_requests_total counter' in text
    assert 'flotilla_service_requests_total{app="shop",service="web"} 25' in text
    assert 'flotilla_service_in_flight_requests{app="shop",service="web"} 3' in text
    assert 'flotilla_service_ready_replicas{app="shop",service="web"} 2' in text
    assert text.endswith("\n")


def test_the_activator_is_no_slot_and_is_ready_first_and_in_maintenance_last():
    pool = {**slots(), "activator": Now("-", 0, "maint")}
    assert ops(server_changes("be", [], pool)) == [], "never freed as a slot whose replica is gone"
    assert ops(activator_changes("be", held=True, current=pool["activator"])[0]) == [("activator", "ready")]
    assert activator_changes("be", held=False, current=pool["activator"]) == ([], [])
    ready = Now("-", 0, "ready")
    before, after = activator_changes("be", held=False, current=ready)
    assert before == [] and ops(after) == [("activator", "maint")]
    assert activator_changes("be", held=True, current=None) == ([], []), "a backend without one"
