"""Warm standby (``standby: N``): slots past the count run, are probed and get no traffic; a
scale-up takes them first. Pure: the planner, convergence, the gateway bridge and the spec."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from flotilla.daemon.health import ProbeTarget
from flotilla.daemon.traffic import Traffic
from flotilla.errors import SpecError
from flotilla.gateway.metrics import MetricsWindow
from flotilla.plan import CreateReplica, Desired, DesiredService, Observed, ObservedReplica, RemoveReplica, plan
from flotilla.plan.convergence import converged, ready_slots
from flotilla.spec import parse_spec

NETS = frozenset({"flotilla-shop-internal"})
_ids = itertools.count()


def replica(index: int, *, hash_: str = "h", healthy: bool = True) -> ObservedReplica:
    cid = f"c{next(_ids)}"
    return ObservedReplica(container_id=cid, name=f"shop-web-{index}-{cid}", service="web", index=index,
                           config_hash=hash_, state="running", healthy=healthy, ip=f"10.0.0.{index + 1}")


def desired(replicas: int, standby: int, hash_: str = "h") -> Desired:
    return Desired(app="shop", services=(DesiredService("web", replicas, hash_, standby=standby),))


def observed(*replicas: ObservedReplica) -> Observed:
    return Observed(app="shop", replicas=tuple(replicas), networks=NETS)


def test_a_fresh_service_starts_its_standby_slots_after_the_serving_ones():
    p = plan(desired(2, 3), observed(), now=0)
    creates = p.of_kind(CreateReplica)
    assert sorted(a.index for a in creates) == [1, 2, 3, 4, 5]
    assert {a.index: a.reason for a in creates}[4] == "web keeps 3 on standby"


def test_a_scale_up_within_the_standby_creates_only_the_new_standby_slots():
    running = [replica(i) for i in range(1, 4)]  # replicas 1 + standby 2, all healthy
    p = plan(desired(3, 2), observed(*running), now=0)
    assert sorted(a.index for a in p.of_kind(CreateReplica)) == [4, 5]
    assert p.of_kind(RemoveReplica) == ()


def test_a_scale_down_keeps_standby_slots_and_stops_only_past_them():
    running = [replica(i) for i in range(1, 7)]
    p = plan(desired(2, 2), observed(*running), now=0)
    assert sorted(a.index for a in p.of_kind(RemoveReplica)) == [5, 6]
    assert all("down to 2 and 2 on standby" in a.reason for a in p.of_kind(RemoveReplica))


def test_convergence_waits_for_standby_but_ready_counts_serving_slots():
    service = DesiredService("web", 2, "h", standby=1)
    starting = observed(replica(1), replica(2), replica(3, healthy=False))
    assert ready_slots(service, starting.replicas) == {1, 2}
    assert not converged(desired(2, 1), starting)
    assert converged(desired(2, 1), observed(replica(1), replica(2), replica(3)))


@given(replicas=st.integers(0, 20), standby=st.integers(0, 10), present=st.integers(0, 40))
def test_planned_slots_are_exactly_count_plus_standby(replicas, standby, present):
    running = [replica(i) for i in range(1, present + 1)]
    p = plan(desired(replicas, standby), observed(*running), now=0)
    kept = {r.index for r in running} - {a.index for a in p.of_kind(RemoveReplica)}
    assert kept | {a.index for a in p.of_kind(CreateReplica)} == set(range(1, replicas + standby + 1))


class RecordingGateway:
    def __init__(self) -> None:
        self.desired: list[dict] = []

    def apply(self, specs, desired, held=frozenset(), certificates=None):
        self.desired.append({key: sorted(s.name for s in servers) for key, servers in desired.items()})
        return []


def spec(replicas: int, standby: int):
    return parse_spec(f"app: shop\nservices:\n  web: {{image: x, port: 8000, replicas: {replicas}, "
                      f"standby: {standby}, routes: [{{host: shop.test}}]}}\n", filename="f.yaml", environ={})


def test_the_gateway_routes_serving_slots_only_and_a_scale_up_promotes_standby():
    gateway = RecordingGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0)
    three = observed(replica(1), replica(2), replica(3))
    traffic.sync(spec(1, 2), three)
    assert [len(v) for v in gateway.desired[-1].values()] == [1]
    traffic.sync(spec(3, 2), three)  # flotilla scale web=3: a routing change, nothing to start
    assert [len(v) for v in gateway.desired[-1].values()] == [3]


def test_a_standby_replica_answering_its_first_probe_is_not_routed():
    gateway = RecordingGateway()
    traffic = Traffic(gateway=gateway, metrics=MetricsWindow(), clock=lambda: 0.0)
    first = replica(1)
    traffic.sync(spec(1, 1), observed(first))
    applied = len(gateway.desired)
    standby = replica(2)
    traffic.serve_ready(ProbeTarget(container_id=standby.container_id, app="shop", replica="web-2",
                                    ip=standby.ip or "", port=8000, kind="tcp", path=None, interval=1,
                                    timeout=1, service="web", name=standby.name, index=2))
    assert len(gateway.desired) == applied


def test_standby_needs_routes_and_a_bound():
    for body, message in (("{image: x, port: 8000, standby: 2}", "has no routes"),
                          ("{image: x, port: 8000, standby: 51, routes: [{host: a.test}]}", "between 0 and 50")):
        try:
            parse_spec(f"app: shop\nservices:\n  web: {body}\n", filename="f.yaml", environ={})
        except SpecError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{body} was accepted")


def test_standby_survives_the_trip_to_the_daemon():
    from flotilla.spec import spec_from_dict, spec_to_dict

    assert spec_from_dict(spec_to_dict(spec(1, 2))).services["web"].standby == 2
    assert "standby" not in spec_to_dict(spec(1, 0))["services"]["web"]


def test_the_autoscaler_divides_by_serving_replicas_only():
    from flotilla.daemon.traffic import serving_replicas

    scaled = spec(1, 3)
    four = observed(*(replica(i) for i in range(1, 5)))
    assert [r.index for r in serving_replicas("web", scaled.services["web"], four)] == [1]  # 2..4 on standby
