"""The planner, without Docker: unit cases and properties over random states."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.plan import (
    CrashRecord,
    CreateReplica,
    Desired,
    DesiredService,
    EnsureNetwork,
    Hold,
    Observed,
    ObservedReplica,
    RemoveReplica,
    plan,
    plan_removal,
)
from flotilla.plan.backoff import next_crash_record, restart_delay

NETS = frozenset({"flotilla-shop-internal"})
_ids = itertools.count()


def replica(service="web", index=1, hash_="new", state="running", healthy=True, exit_code=None):
    cid = f"c{next(_ids)}"
    return ObservedReplica(
        container_id=cid,
        name=f"shop-{service}-{index}-{hash_}-{cid}",
        service=service,
        index=index,
        config_hash=hash_,
        state=state,
        healthy=healthy,
        exit_code=exit_code,
    )


def desired(replicas=2, hash_="new", egress=False, service="web"):
    return Desired(app="shop", services=(DesiredService(service, replicas, hash_, egress),))


def observed(*replicas, networks=NETS):
    return Observed(app="shop", replicas=tuple(replicas), networks=networks)


def creates(p):
    return sorted((a.service, a.index) for a in p.of_kind(CreateReplica))


def removes(p):
    return sorted(a.container_id for a in p.of_kind(RemoveReplica))


def test_fresh_app_gets_network_and_every_replica():
    p = plan(desired(3), observed(networks=frozenset()), now=0)
    assert p.of_kind(EnsureNetwork)[0].name == "flotilla-shop-internal"
    assert p.of_kind(EnsureNetwork)[0].internal is True
    assert creates(p) == [("web", 1), ("web", 2), ("web", 3)]


def test_egress_service_adds_the_egress_network():
    p = plan(desired(1, egress=True), observed(), now=0)
    assert [(n.name, n.internal) for n in p.of_kind(EnsureNetwork)] == [("flotilla-shop-egress", False)]


def test_each_cache_gets_its_own_internal_network():
    nodes = tuple(DesiredService(f"{c}-0-0", 1, "h", group=f"cache:{c}") for c in ("sessions", "carts", "sessions"))
    p = plan(Desired(app="shop", services=(*nodes, DesiredService("web", 1, "h"))), observed(), now=0)
    assert [(n.name, n.internal) for n in p.of_kind(EnsureNetwork)] == [
        ("flotilla-shop-cache-carts", True), ("flotilla-shop-cache-sessions", True)]
    there = observed(networks=NETS | {"flotilla-shop-cache-carts", "flotilla-shop-cache-sessions"})
    assert plan(Desired(app="shop", services=nodes), there, now=0).of_kind(EnsureNetwork) == ()


def test_converged_app_plans_nothing():
    p = plan(desired(2), observed(replica(index=1), replica(index=2)), now=0)
    assert p.empty and p.actions == ()


def test_scale_down_removes_the_highest_slots_gracefully():
    reps = [replica(index=i) for i in (1, 2, 3, 4, 5)]
    p = plan(desired(2), observed(*reps), now=0)
    assert removes(p) == sorted(r.container_id for r in reps[2:])
    assert all(a.graceful for a in p.of_kind(RemoveReplica))
    assert creates(p) == []


def test_dead_replica_is_removed_and_replaced_at_once():
    dead = replica(index=2, state="exited", healthy=False, exit_code=137)
    p = plan(desired(2), observed(replica(index=1), dead), now=0)
    assert removes(p) == [dead.container_id]
    assert p.of_kind(RemoveReplica)[0].graceful is False
    assert "exited with code 137" in p.of_kind(RemoveReplica)[0].reason
    assert creates(p) == [("web", 2)]


def test_crash_loop_holds_with_backoff_until_its_time():
    crashes = {("web", 1): CrashRecord(count=4, last_failure=100.0)}
    p = plan(desired(1), observed(), now=101.0, crashes=crashes)
    hold = p.of_kind(Hold)[0]
    assert creates(p) == [] and hold.until == 100.0 + restart_delay(4)
    assert "crash loop: failed 4 times" in hold.reason
    later = plan(desired(1), observed(), now=hold.until, crashes=crashes)
    assert creates(later) == [("web", 1)]


def test_config_change_replaces_one_slot_at_a_time():
    old = [replica(index=i, hash_="old") for i in (1, 2, 3)]
    p = plan(desired(3), observed(*old), now=0)
    assert creates(p) == [("web", 1)]
    assert removes(p) == []
    assert len(p.of_kind(Hold)) == 2


def test_old_replica_stays_until_its_successor_is_healthy():
    old = replica(index=1, hash_="old")
    starting = replica(index=1, hash_="new", healthy=None)
    p = plan(desired(1), observed(old, starting), now=0)
    assert p.empty
    ready = replica(index=1, hash_="new", healthy=True)
    p = plan(desired(1), observed(old, ready), now=0)
    assert removes(p) == [old.container_id]


def stateful(replicas=1, hash_="new", restart_delay=0.0):
    return Desired(app="shop", services=(
        DesiredService("node", replicas, hash_, recreate=True, restart_delay=restart_delay),))


def test_stateful_replica_is_stopped_before_its_replacement_starts():
    old = replica(service="node", index=1, hash_="old")
    p = plan(stateful(), observed(old), now=0)
    assert removes(p) == [old.container_id] and creates(p) == []
    assert "before its replacement starts" in p.of_kind(RemoveReplica)[0].reason
    assert creates(plan(stateful(), observed(), now=0)) == [("node", 1)]


def test_stateful_replicas_are_recreated_one_slot_at_a_time():
    old = [replica(service="node", index=i, hash_="old") for i in (1, 2)]
    p = plan(stateful(2), observed(*old), now=0)
    assert removes(p) == [old[0].container_id] and len(p.of_kind(Hold)) == 1


def grouped(hash_="new"):
    return Desired(app="shop", services=tuple(
        DesiredService(name, 1, hash_, recreate=True, group="cache:sessions") for name in ("node-a", "node-b")))


def test_a_group_is_replaced_one_service_at_a_time():
    a, b = (replica(service=s, hash_="old") for s in ("node-a", "node-b"))
    p = plan(grouped(), observed(a, b), now=0)
    assert removes(p) == [a.container_id]
    assert "waiting for node-a to be replaced first" in p.of_kind(Hold)[0].reason
    starting = replica(service="node-a", hash_="new", healthy=None)
    p = plan(grouped(), observed(starting, b), now=0)
    assert removes(p) == [] and p.of_kind(Hold)[0].service == "node-b"
    healthy = replica(service="node-a", hash_="new", healthy=True)
    assert removes(plan(grouped(), observed(healthy, b), now=0)) == [b.container_id]


def test_a_group_being_created_is_not_held_back():
    p = plan(grouped(), observed(), now=0)
    assert creates(p) == [("node-a", 1), ("node-b", 1)]


def test_restart_delay_holds_even_a_first_death():
    crashes = {("node", 1): CrashRecord(count=1, last_failure=100.0)}
    p = plan(stateful(restart_delay=5.0), observed(), now=102.0, crashes=crashes)
    assert creates(p) == [] and p.of_kind(Hold)[0].until == 105.0
    assert "it died, restarting in 3.0s" in p.of_kind(Hold)[0].reason
    assert creates(plan(stateful(restart_delay=5.0), observed(), now=105.0, crashes=crashes)) == [("node", 1)]


def test_removed_service_goes_entirely():
    gone = replica(service="legacy", index=1)
    p = plan(desired(0), observed(gone), now=0)
    assert removes(p) == [gone.container_id]
    assert "no longer in the spec" in p.of_kind(RemoveReplica)[0].reason


def test_two_replicas_in_one_slot_keep_the_healthy_one():
    sick = replica(index=1, healthy=False)
    well = replica(index=1, healthy=True)
    p = plan(desired(1), observed(sick, well), now=0)
    assert removes(p) == [sick.container_id]


def test_removal_plan_lists_every_replica():
    reps = [replica(index=i) for i in (1, 2)]
    assert removes(plan_removal(observed(*reps))) == sorted(r.container_id for r in reps)


def test_backoff_grows_and_resets_after_recovery():
    assert [restart_delay(n) for n in (1, 2, 3, 4, 10)] == [0.0, 1.0, 2.0, 4.0, 60.0]
    first = next_crash_record(None, now=0)
    second = next_crash_record(first, now=5)
    assert (first.count, second.count) == (1, 2)
    assert next_crash_record(second, now=5 + 1 + 30).count == 1


# -- properties: simulate a world that carries out plans ----------------------

def apply_to_world(obs: Observed, p, *, healthy_on_start: bool) -> Observed:
    """What Docker would look like after ``p``: removals gone, creations running."""
    removed = {a.container_id for a in p.of_kind(RemoveReplica)}
    kept = [r for r in obs.replicas if r.container_id not in removed]
    made = [
        replica(a.service, a.index, a.config_hash, healthy=True if healthy_on_start else None)
        for a in p.of_kind(CreateReplica)
    ]
    nets = obs.networks | {n.name for n in p.of_kind(EnsureNetwork)}
    return Observed(app=obs.app, replicas=tuple(kept + made), networks=nets)


def become_healthy(obs: Observed) -> Observed:
    """Every running replica passes its probe (the planner never kills a sick one)."""
    reps = tuple(
        ObservedReplica(**{**r.__dict__, "healthy": True}) if r.running else r
        for r in obs.replicas
    )
    return Observed(app=obs.app, replicas=reps, networks=obs.networks)


states = st.sampled_from(["running", "running", "running", "exited", "created", "dead"])
healths = st.sampled_from([True, True, False, None])
observed_replicas = st.lists(
    st.builds(
        lambda s, i, h, state, healthy: replica(s, i, h, state, healthy if state == "running" else False, 1),
        st.sampled_from(["web", "api", "legacy"]),
        st.integers(1, 8),
        st.sampled_from(["new", "old", "older"]),
        states,
        healths,
    ),
    max_size=14,
)
desired_specs = st.builds(
    lambda w, a: Desired(app="shop", services=(DesiredService("web", w, "new"), DesiredService("api", a, "new"))),
    st.integers(0, 8),
    st.integers(0, 8),
)


@settings(max_examples=200, deadline=None)
@given(desired_specs, observed_replicas)
def test_repeated_plans_converge_exactly(want: Desired, reps):
    obs = observed(*reps, networks=frozenset())
    for _ in range(40):
        p = plan(want, obs, now=1000.0)
        if p.empty:
            break
        obs = become_healthy(apply_to_world(obs, p, healthy_on_start=False))
    assert plan(want, obs, now=1000.0).empty
    for service in want.services:
        mine = sorted(r.index for r in obs.replicas if r.service == service.name)
        assert mine == list(range(1, service.replicas + 1))
        assert all(r.config_hash == "new" and r.running for r in obs.replicas if r.service == service.name)
    assert {r.service for r in obs.replicas} <= {"web", "api"}


@settings(max_examples=200, deadline=None)
@given(desired_specs, observed_replicas)
def test_never_removes_a_healthy_old_replica_without_a_healthy_successor(want: Desired, reps):
    obs = observed(*reps)
    p = plan(want, obs, now=0)
    wanted = {s.name: s for s in want.services}
    for action in p.of_kind(RemoveReplica):
        gone = next(r for r in obs.replicas if r.container_id == action.container_id)
        svc = wanted.get(gone.service)
        if svc is None or not gone.running or not gone.healthy or gone.index > svc.replicas:
            continue
        successors = [
            r for r in obs.replicas
            if r.service == gone.service and r.index == gone.index and r.running and r.healthy
            and r.container_id != gone.container_id
        ]
        assert successors, f"{action} leaves slot {gone.replica} without a healthy replica"


@settings(max_examples=200, deadline=None)
@given(desired_specs, observed_replicas)
def test_at_most_one_new_replacement_per_service_and_no_duplicate_slots(want: Desired, reps):
    p = plan(want, observed(*reps), now=0)
    slots = [(a.service, a.index) for a in p.of_kind(CreateReplica)]
    assert len(slots) == len(set(slots))
    for service in want.services:
        replacing = [
            a for a in p.of_kind(CreateReplica)
            if a.service == service.name and "config changed" in a.reason
        ]
        assert len(replacing) <= 1


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.floats(0, 100))
def test_backoff_never_creates_before_its_time(count, elapsed):
    crashes = {("web", 1): CrashRecord(count=count, last_failure=0.0)}
    p = plan(desired(1), observed(), now=elapsed, crashes=crashes)
    assert bool(creates(p)) == (elapsed >= restart_delay(count))
