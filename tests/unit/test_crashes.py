"""Crash and vanish accounting (plan/crashes.py): pure, so tested with plain data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flotilla.plan import CrashRecord, Observed, ObservedReplica
from flotilla.plan.crashes import Failure, account, crash_loops, record_failure


def replica(cid: str, *, index: int = 1, state: str = "running", code: int | None = None) -> ObservedReplica:
    return ObservedReplica(container_id=cid, name=f"shop-web-{index}-abc", service="web", index=index,
                           config_hash="h", state=state, exit_code=code)


def look(*replicas: ObservedReplica, previous=(), removing=frozenset(), history=None):
    return account(observed=Observed(app="shop", replicas=replicas), previous=previous,
                   removing=frozenset(removing), history=history or {})


def test_an_exited_replica_is_one_failure_and_is_never_counted_twice():
    dead = replica("c1", state="exited", code=137)
    (failure,) = look(dead).failures
    assert failure.describe() == "shop-web-1-abc exited with code 137" and failure.slot == ("web", 1)
    history = {("web", 1): record_failure({}, failure, now=10.0)}
    assert look(dead, history=history).failures == ()


def test_a_running_replica_that_vanished_failed_but_one_flotilla_removed_did_not():
    before = (replica("c1"), replica("c2", index=2))
    found = look(previous=before, removing={"c2"})
    assert [(f.container_id, f.vanished) for f in found.failures] == [("c1", True)]
    assert found.failures[0].describe() == "shop-web-1-abc was removed outside Flotilla"
    assert found.removed_gone == {"c2"}


def test_a_dead_replica_that_then_vanished_is_not_counted_again():
    before = (replica("c1", state="exited", code=1),)
    assert look(previous=before).failures == ()


def test_failures_in_a_row_count_up_and_a_recovered_slot_starts_again():
    failure = Failure(service="web", index=1, container_id="c1", name="n", exit_code=1)
    first = record_failure({}, failure, now=0.0)
    second = record_failure({("web", 1): first}, failure, now=1.0)
    assert (first.count, second.count, second.container_id) == (1, 2, "c1")
    much_later = record_failure({("web", 1): second}, failure, now=1000.0)
    assert much_later.count == 1


def test_crash_loops_are_slots_failing_repeatedly_and_not_yet_recovered():
    history = {("web", 1): CrashRecord(count=3, last_failure=100.0),
               ("web", 2): CrashRecord(count=1, last_failure=100.0)}
    assert list(crash_loops(history, now=101.0)) == ["web-1"]
    assert crash_loops(history, now=10_000.0) == {}


@given(st.lists(st.sampled_from(["running", "exited", "dead", "created"]), max_size=6),
       st.sets(st.integers(min_value=0, max_value=5)))
def test_every_failure_names_a_container_that_ran_or_died_and_none_is_flotillas_own(states, removing_at):
    observed = tuple(replica(f"c{i}", index=i + 1, state=s, code=1) for i, s in enumerate(states))
    previous = tuple(replica(f"p{i}", index=i + 1) for i in range(6))
    removing = {f"p{i}" for i in removing_at}
    found = look(*observed, previous=previous, removing=removing)
    ids = [f.container_id for f in found.failures]
    assert len(ids) == len(set(ids))
    assert not set(ids) & removing
    assert found.removed_gone == removing
    assert {i for i in ids if i.startswith("c")} == {r.container_id for r in observed if r.state in ("exited", "dead")}
