"""plan/liveness.py and plan/rollouts.py as pure functions: properties over any mix of replica health."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flotilla.plan import Desired, DesiredService, Observed, ObservedReplica, RemoveReplica
from flotilla.plan.crashes import Failure
from flotilla.plan.liveness import Failing, liveness_actions
from flotilla.plan.rollouts import check_rollout

NOW = 1000.0
HEALTH = st.sampled_from([True, False, None])
FAILING_FOR = st.one_of(st.none(), st.floats(min_value=0, max_value=100))


def service(replicas: int, **extra) -> DesiredService:
    return DesiredService(name="web", replicas=replicas, config_hash="new", **extra)


def replica(index: int, healthy: bool | None, *, config_hash: str = "new", state: str = "running") -> ObservedReplica:
    return ObservedReplica(container_id=f"c{index}", name=f"shop-web-{index}", service="web", index=index,
                           config_hash=config_hash, state=state, healthy=healthy)


@given(st.lists(st.tuples(HEALTH, FAILING_FOR), min_size=1, max_size=6))
def test_liveness_never_removes_a_healthy_replica_and_in_mass_failure_at_most_one(health):
    replicas = [replica(i + 1, h) for i, (h, _) in enumerate(health)]
    failing = {r.container_id: Failing(first_seen=0.0, failing_since=None if f is None else NOW - f)
               for r, (_, f) in zip(replicas, health, strict=True)}
    desired = Desired(app="shop", services=(service(len(replicas), replace_after=10.0),))
    removed = [a for a in liveness_actions(desired, Observed(app="shop", replicas=tuple(replicas)),
                                           failing=failing, now=NOW) if isinstance(a, RemoveReplica)]
    by_id = {r.container_id: r for r in replicas}
    assert all(by_id[a.container_id].healthy is not True for a in removed)
    assert all(NOW - failing[a.container_id].failing_since >= 10.0 for a in removed)
    if not any(r.healthy is True for r in replicas):
        assert len(removed) <= 1


def test_without_replace_after_or_during_a_rollout_nothing_is_replaced():
    replicas = (replica(1, False),)
    failing = {"c1": Failing(first_seen=0.0, failing_since=0.0)}
    observed = Observed(app="shop", replicas=replicas)
    assert liveness_actions(Desired("shop", (service(1),)), observed, failing=failing, now=NOW) == []
    rolling = liveness_actions(Desired("shop", (service(1, replace_after=1.0),)), observed, failing=failing,
                               now=NOW, rolling=frozenset({"web"}))
    assert rolling == []


def test_a_rollout_settles_fails_on_a_new_crash_and_counts_its_deadline_from_the_last_progress():
    desired = Desired(app="shop", services=(service(2),))
    settled = Observed(app="shop", replicas=(replica(1, True), replica(2, True)))
    assert check_rollout(desired=desired, observed=settled, progress=0, progress_at=NOW, now=NOW,
                         deadlines={"web": 5}).state == "settled"
    halfway = Observed(app="shop", replicas=(replica(1, True), replica(2, None), replica(3, True, config_hash="old")))
    moving = check_rollout(desired=desired, observed=halfway, progress=0, progress_at=NOW - 100, now=NOW,
                           deadlines={"web": 5})
    assert (moving.state, moving.progress, moving.progress_at) == ("progressing", 1, NOW)
    stuck = check_rollout(desired=desired, observed=halfway, progress=1, progress_at=NOW - 6, now=NOW,
                          deadlines={"web": 5})
    assert stuck.state == "failed" and stuck.container_id == "c2" and "deadline of 5s" in stuck.reason
    crashed = Observed(app="shop", replicas=(replica(1, True), replica(2, False, state="exited")))
    failure = Failure(service="web", index=2, container_id="c2", name="shop-web-2", exit_code=3)
    verdict = check_rollout(desired=desired, observed=crashed, progress=1, progress_at=NOW, now=NOW,
                            deadlines={"web": 5}, failures=[failure])
    assert verdict.state == "failed" and verdict.reason == "new replica shop-web-2 exited with code 3"
    old_crash = Failure(service="web", index=3, container_id="c3", name="shop-web-3", exit_code=1)
    assert check_rollout(desired=desired, observed=halfway, progress=1, progress_at=NOW, now=NOW,
                         deadlines={"web": 5}, failures=[old_crash]).state == "progressing"
