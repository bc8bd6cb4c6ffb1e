"""The daemon's gateway bridge (daemon/traffic.py): one app's refused routes never block the others."""

from __future__ import annotations

import pytest

from flotilla.daemon.traffic import Traffic
from flotilla.errors import GatewayError
from flotilla.gateway.metrics import MetricsWindow
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import parse_spec


class RefusingGateway:
    """A gateway manager stand-in that refuses any configuration holding one app."""

    def __init__(self, refused: str, error: Exception) -> None:
        self.refused, self.error = refused, error
        self.applied: list[set[str]] = []

    def apply(self, specs, desired):
        if self.refused in specs:
            raise self.error
        self.applied.append(set(specs))
        return []


def app(name: str):
    return parse_spec(f"app: {name}\nservices:\n  web: {{image: x, port: 8000, routes: [{{host: {name}.test}}]}}\n",
                      filename="f.yaml", environ={})


def running(name: str) -> Observed:
    return Observed(app=name, replicas=(ObservedReplica(container_id="c", name=f"{name}-web-1-abc", service="web",
                                                        index=1, config_hash="h", state="running", ip="10.0.0.2",
                                                        healthy=True),))


@pytest.mark.parametrize("error", [ValueError("frontend name not valid"), GatewayError("haproxy -c refused it")])
def test_a_refused_app_is_left_out_and_the_next_app_syncs(error):
    gateway = RefusingGateway("bad", error)
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0)
    traffic.sync(app("good"), running("good"))
    with pytest.raises(GatewayError, match="haproxy -c refused it|cannot take the routes of bad"):
        traffic.sync(app("bad"), running("bad"))
    traffic.sync(app("other"), running("other"))
    assert gateway.applied == [{"good"}, {"good", "other"}]


def test_primed_apps_reach_the_gateway_with_the_first_sync():
    gateway = RefusingGateway("none", ValueError())
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0)
    traffic.prime(app("a"), running("a"))
    traffic.prime(app("b"), running("b"))
    assert gateway.applied == []
    traffic.sync(app("a"), running("a"))
    assert gateway.applied == [{"a", "b"}]
    traffic.forget("b")
    assert gateway.applied[-1] == {"a"}


def test_an_app_routed_as_before_renders_nothing_until_the_full_sync_interval():
    gateway = RefusingGateway("none", ValueError())
    clock = [100.0]
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: clock[0])
    traffic.sync(app("a"), running("a"))
    traffic.sync(app("a"), running("a"))
    assert len(gateway.applied) == 1, "a settled app's pass costs no render"
    unhealthy = Observed(app="a", replicas=tuple(r.__class__(**{**r.__dict__, "healthy": False})
                                                 for r in running("a").replicas))
    traffic.sync(app("a"), unhealthy)
    assert len(gateway.applied) == 2, "a health change reaches the gateway at once"
    clock[0] += 5.0
    traffic.sync(app("a"), unhealthy)
    assert len(gateway.applied) == 3, "and the whole picture is applied again every few seconds"
