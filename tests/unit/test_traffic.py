"""The daemon's gateway bridge (daemon/traffic.py): one app's refused routes never block the others."""

from __future__ import annotations

import pytest

from flotilla.daemon.health import ProbeTarget
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

    def apply(self, specs, desired, held=frozenset(), certificates=None):
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


def zero(name: str):
    return parse_spec(f"app: {name}\nservices:\n  web: {{image: x, port: 8000, routes: [{{host: {name}.test}}], "
                      "autoscale: {min: 0, max: 2, target: {concurrency: 2}}}\n", filename="f.yaml", environ={})


class HoldingGateway(RefusingGateway):
    def __init__(self) -> None:
        super().__init__("none", ValueError())
        self.held: list[frozenset] = []

    def apply(self, specs, desired, held=frozenset(), certificates=None):
        self.held.append(frozenset(held))
        return super().apply(specs, desired, held)


def test_a_service_at_zero_is_held_and_released_with_a_grace():
    gateway = HoldingGateway()
    clock = [0.0]
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: clock[0], scale_from_zero=True)
    assert not traffic.held("z", "web"), "nothing is held before the gateway took it"
    traffic.sync(zero("z"), Observed(app="z", replicas=()))
    assert gateway.held[-1] == {("z", "web")}
    assert traffic.held("z", "web") and not traffic.held("z", "other") and not traffic.held("y", "web")
    traffic.sync(zero("z"), running("z"))
    assert gateway.held[-1] == frozenset(), "a healthy replica serves: the activator leaves"
    assert traffic.held("z", "web"), "requests the gateway gave it just before are still relayed"
    clock[0] += 6.0
    assert not traffic.held("z", "web")


def test_held_follows_what_the_gateway_took_not_a_refused_sync():
    gateway = RefusingGateway("z", GatewayError("haproxy -c refused it"))
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0, scale_from_zero=True)
    with pytest.raises(GatewayError):
        traffic.sync(zero("z"), Observed(app="z", replicas=()))
    assert not traffic.held("z", "web")


def test_without_scale_from_zero_nothing_is_held():
    gateway = HoldingGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0)
    traffic.sync(zero("z"), Observed(app="z", replicas=()))
    assert gateway.held == [frozenset()] and not traffic.held("z", "web")


class RecordingGateway(HoldingGateway):
    """Keeps the servers of every configuration it took."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: list[dict] = []

    def apply(self, specs, desired, held=frozenset(), certificates=None):
        self.servers.append({key: list(found) for key, found in desired.items()})
        return super().apply(specs, desired, held)


def first_answer(app_name: str, *, ip: str = "10.0.0.3", service: str = "web") -> ProbeTarget:
    return ProbeTarget(container_id="c2", app=app_name, replica=f"{service}-2", ip=ip, port=8000, kind="http",
                       path="/", interval=1.0, timeout=0.5, service=service, name=f"{app_name}-{service}-2-abc")


def test_a_replica_that_first_answers_is_routed_at_once_beside_the_others():
    # Issue 18: a new replica waited for the reconcile pass after the one that started it (and its
    # siblings) to reach the gateway; the prober now hands its first answer straight to the gateway.
    gateway = RecordingGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0, scale_from_zero=True)
    traffic.sync(app("a"), running("a"))
    traffic.serve_ready(first_answer("a"))
    routed = gateway.servers[-1][("a", "web")]
    assert [(s.address, s.healthy) for s in routed] == [("10.0.0.2", True), ("10.0.0.3", True)]
    traffic.sync(app("a"), running("a"))  # a pass that has not seen it yet puts things back as observed
    traffic.serve_ready(first_answer("a", ip=""))  # no address yet: nothing to route
    assert len(gateway.servers) == 3


def test_a_first_answer_releases_a_held_service_and_ignores_what_is_not_routed():
    gateway = RecordingGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0, scale_from_zero=True)
    traffic.sync(zero("z"), Observed(app="z", replicas=()))
    assert gateway.held[-1] == {("z", "web")}
    traffic.serve_ready(first_answer("z", service="other"))  # no such service
    traffic.serve_ready(first_answer("unknown"))  # no such app
    assert len(gateway.servers) == 1
    traffic.serve_ready(first_answer("z"))
    assert gateway.held[-1] == frozenset(), "the first replica to answer takes over from the activator"
    traffic.serve_ready(first_answer("z"))  # already routed: nothing to render
    assert len(gateway.servers) == 2


class CertificateGateway(RefusingGateway):
    def __init__(self) -> None:
        super().__init__("none", ValueError())
        self.certificates: list[dict] = []

    def apply(self, specs, desired, held=frozenset(), certificates=None):
        self.certificates.append(dict(certificates or {}))
        return super().apply(specs, desired, held)


def test_a_new_certificate_reaches_the_gateway_though_the_routes_are_unchanged():
    served = {"site": b"one"}
    gateway = CertificateGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0,
                      certificates=lambda spec: dict(served))
    traffic.sync(app("a"), running("a"))
    traffic.sync(app("a"), running("a"))  # nothing changed: nothing applied
    served["site"] = b"two"  # `flotilla certs set` (or a renewal) put a new one in the store
    traffic.sync(app("a"), running("a"))
    assert gateway.certificates == [{("a", "site"): b"one"}, {("a", "site"): b"two"}]
