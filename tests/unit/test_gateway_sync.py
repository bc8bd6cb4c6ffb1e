"""The gateway's pure parts: server sync rules and traffic metrics."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.gateway.metrics import MetricsWindow, Sample, prometheus_text, request_rate
from flotilla.gateway.sync import DesiredServer, enabled_for_config, server_changes


@dataclass(frozen=True)
class Now:
    address: str
    port: int
    admin: str


def ops(changes):
    return [(c.server, c.op) for c in changes]


def test_new_replica_is_added_in_maintenance_and_ready_only_when_healthy():
    starting = DesiredServer("web-1", "10.0.0.2", 8000, healthy=None)
    assert ops(server_changes("be", [starting], {})) == [("web-1", "add")]
    healthy = DesiredServer("web-1", "10.0.0.2", 8000, healthy=True)
    assert ops(server_changes("be", [healthy], {})) == [("web-1", "add"), ("web-1", "ready")]
    assert ops(server_changes("be", [healthy], {"web-1": Now("10.0.0.2", 8000, "maint")})) == [("web-1", "ready")]


def test_unknown_health_keeps_a_serving_replica_in_rotation():
    unknown = DesiredServer("web-1", "10.0.0.2", 8000, healthy=None)
    assert server_changes("be", [unknown], {"web-1": Now("10.0.0.2", 8000, "ready")}) == []
    assert enabled_for_config(unknown, Now("10.0.0.2", 8000, "ready")) is True
    assert enabled_for_config(unknown, None) is False


def test_unhealthy_replica_leaves_rotation_and_gone_ones_are_deleted():
    sick = DesiredServer("web-1", "10.0.0.2", 8000, healthy=False)
    current = {"web-1": Now("10.0.0.2", 8000, "ready"), "web-9": Now("10.0.0.9", 8000, "ready")}
    assert ops(server_changes("be", [sick], current)) == [("web-1", "maint"), ("web-9", "maint"), ("web-9", "delete")]


def test_draining_servers_are_left_alone():
    current = {"web-2": Now("10.0.0.3", 8000, "drain")}
    assert server_changes("be", [], current, draining={"web-2"}) == []


def test_changed_address_replaces_the_server():
    moved = DesiredServer("web-1", "10.0.0.7", 8000, healthy=True)
    assert ops(server_changes("be", [moved], {"web-1": Now("10.0.0.2", 8000, "ready")})) == [
        ("web-1", "maint"), ("web-1", "delete"), ("web-1", "add"), ("web-1", "ready"),
    ]


healths = st.sampled_from([True, False, None])
admins = st.sampled_from(["ready", "drain", "maint"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), healths), st.dictionaries(st.sampled_from(["a", "b", "c", "e"]), admins))
def test_after_sync_exactly_the_healthy_replicas_are_ready(desired_health, current_admin):
    desired = [DesiredServer(n, "10.0.0.1", 80, h) for n, h in desired_health.items()]
    current = {n: Now("10.0.0.1", 80, a) for n, a in current_admin.items()}
    state = {n: a for n, a in current_admin.items()}
    for change in server_changes("be", desired, current):
        if change.op == "add":
            assert change.server not in state
            state[change.server] = "maint"
        elif change.op == "delete":
            assert state.pop(change.server) == "maint", "delete only from maintenance"
        else:
            state[change.server] = change.op
    assert set(state) == set(desired_health)
    for name, health in desired_health.items():
        if health is True:
            assert state[name] == "ready"
        elif health is False:
            assert state[name] != "ready"
        else:  # unknown: unchanged, or not yet in rotation if new
            assert state[name] == current_admin.get(name, "maint")


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
