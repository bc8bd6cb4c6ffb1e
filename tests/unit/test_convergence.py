"""When an app counts as converged (plan/convergence.py), which ``up`` waits for."""

from __future__ import annotations

from flotilla.plan import Desired, DesiredService, Observed, ObservedReplica
from flotilla.plan.convergence import converged, ready_slots

WEB = DesiredService(name="web", replicas=2, config_hash="new")


def replica(index: int, *, config: str = "new", healthy: bool | None = True, state: str = "running",
            service: str = "web") -> ObservedReplica:
    return ObservedReplica(container_id=f"{service}{index}{config}", name=f"x-{service}-{index}", service=service,
                           index=index, config_hash=config, state=state, healthy=healthy)


def is_converged(*replicas: ObservedReplica, services=(WEB,)) -> bool:
    return converged(Desired(app="shop", services=tuple(services)), Observed(app="shop", replicas=replicas))


def test_every_slot_healthy_on_the_current_config_is_converged():
    assert is_converged(replica(1), replica(2))


def test_a_missing_unhealthy_or_unprobed_slot_is_not():
    assert not is_converged(replica(1))
    assert not is_converged(replica(1), replica(2, healthy=False))
    assert not is_converged(replica(1), replica(2, healthy=None))
    assert not is_converged(replica(1), replica(2, state="exited"))


def test_an_old_config_still_running_beside_its_successor_is_not():
    assert not is_converged(replica(1), replica(2), replica(2, config="old"))
    assert not is_converged(replica(1), replica(2, config="old"))


def test_a_replica_of_a_service_no_longer_wanted_is_not():
    assert not is_converged(replica(1), replica(2), replica(1, service="gone"))
    assert is_converged(services=()) and not is_converged(replica(1), services=())


def test_ready_slots_count_only_wanted_slots_of_the_service():
    assert ready_slots(WEB, [replica(1), replica(3), replica(2, config="old"), replica(2, service="db")]) == {1}
