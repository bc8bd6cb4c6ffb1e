"""The reconciler on the in-memory engine: observe -> plan -> apply, without Docker.

Covers what lives between the pure planner and the engine: the crash-loop
back-off (kept in the store, so it survives a daemon restart), a container
removed behind Flotilla's back, the order a plan is applied in, and a
restarted daemon adopting what runs instead of starting it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.events import EventLog
from flotilla.daemon.reconciler import Reconciler
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.store import Store
from flotilla.daemon.wakeups import Wakeups
from flotilla.plan import CreateReplica, Hold, RemoveReplica
from flotilla.spec import AppSpec, parse_spec
from tests.support.memory_engine import FixedHealth, MemoryEngine, RecordingRoutes


def spec(replicas: int = 1, *, level: str = "info") -> AppSpec:
    return parse_spec(f"""\
app: shop
services:
  web:
    image: shop-web:1
    port: 8000
    replicas: {replicas}
    env: {{LOG_LEVEL: {level}}}
    routes: [{{host: shop.localhost}}]
""", filename="flotilla.yaml", environ={})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Daemon:
    """The reconciler and the parts it reads, on one store file; ``restart`` builds them anew."""

    def __init__(self, db: Path, engine: MemoryEngine, clock: Clock) -> None:
        self.db, self.engine, self.clock = db, engine, clock
        self.health = FixedHealth()
        self.routes = RecordingRoutes(engine.calls)
        self.store = Store(db, clock=clock)
        self.apps = AppRepository(self.store)
        snapshots = Snapshots(engine=engine, prober=self.health)
        cache_states = CacheStates()
        self.reconciler = Reconciler(
            engine=engine, apps=self.apps, snapshots=snapshots, events=EventLog(self.store),
            runtime=RuntimeSpecs(cache_states=cache_states, snapshots=snapshots, cache_image="redis"),
            wakeups=Wakeups(clock=clock), crash_history=self.store, cache_states=cache_states, clock=clock,
            traffic=self.routes,
        )

    def up(self, app_spec: AppSpec):
        self.apps.put(app_spec)
        return self.reconcile()

    def reconcile(self):
        return self.reconciler.reconcile("shop")

    def settle(self) -> None:
        """Reconcile until a pass changes nothing, as the loop does (a pass with changes wakes another)."""
        for _ in range(10):
            if not self.reconcile().changes:
                return
        raise AssertionError("the app did not settle in 10 passes")

    def restart(self) -> Daemon:
        self.store.close()
        return Daemon(self.db, self.engine, self.clock)

    def events(self, kind: str) -> list[str]:
        return [e.message for e in self.store.events("shop") if e.kind == kind]


@pytest.fixture
def daemon(tmp_path) -> Daemon:
    return Daemon(tmp_path / "state.db", MemoryEngine(), Clock())


def only(daemon: Daemon) -> str:
    (replica,) = daemon.engine.running("shop", "web")
    return replica.container_id


def test_a_first_failure_is_healed_at_once_then_the_back_off_doubles(daemon):
    daemon.up(spec())
    delays = []
    for _ in range(4):
        daemon.engine.exit(only(daemon), code=3, output="boom")
        plan = daemon.reconcile()
        if not plan.of_kind(CreateReplica):
            (hold,) = plan.of_kind(Hold)
            delays.append(round(hold.until - daemon.clock.now, 1))
            assert daemon.reconcile().of_kind(Hold), "no restart before the back-off ends"
            daemon.clock.now = hold.until
            assert daemon.reconcile().of_kind(CreateReplica)
        else:
            delays.append(0.0)
        daemon.clock.now += 0.5
    assert delays == [0.0, 1.0, 2.0, 4.0]
    assert daemon.events("crash")[-1].endswith("exited with code 3 (failure 4 in a row); last output: boom")
    assert list(daemon.reconciler.crash_loops("shop")) == ["web-1"]


def test_a_daemon_restarted_during_a_crash_loop_keeps_its_back_off(daemon):
    daemon.up(spec())
    for _ in range(3):  # failures 1 and 2 restart; the third is held for 2 s
        daemon.engine.exit(only(daemon))
        plan = daemon.reconcile()
        if plan.of_kind(Hold):
            daemon.clock.now = plan.of_kind(Hold)[0].until
            daemon.reconcile()
    daemon.engine.exit(only(daemon))
    assert daemon.reconcile().of_kind(Hold)  # failure 4: held for 4 s
    restarted = daemon.restart()
    daemon.clock.now += 1.0
    (hold,) = restarted.reconcile().of_kind(Hold)
    assert hold.until - daemon.clock.now == pytest.approx(3.0)
    assert "crash loop: failed 4 times" in hold.reason
    assert not restarted.engine.running("shop", "web"), "the restarted daemon must not restart it early"
    assert restarted.events("crash")[-1].endswith("(failure 4 in a row)"), "the dead container is not counted twice"


def test_a_container_removed_behind_flotillas_back_counts_as_a_failure(daemon):
    daemon.up(spec())
    daemon.settle()
    daemon.engine.vanish(only(daemon))
    plan = daemon.reconcile()
    assert [a.replica for a in plan.of_kind(CreateReplica)] == ["web-1"]
    (message,) = daemon.events("crash")
    assert message.endswith("was removed outside Flotilla (failure 1 in a row)")
    daemon.settle()
    daemon.engine.vanish(only(daemon))
    assert daemon.reconcile().of_kind(Hold), "a second vanish in a row backs off like a crash"


def test_replicas_flotilla_removes_itself_are_not_failures(daemon):
    daemon.up(spec(replicas=3))
    daemon.up(spec(replicas=1))
    assert len(daemon.engine.running("shop", "web")) == 1
    daemon.reconcile()
    assert daemon.events("crash") == []


def test_one_plan_removes_the_dead_first_then_creates_then_drains_and_stops(daemon):
    daemon.up(spec(replicas=3))
    daemon.settle()
    web1, _, web3 = daemon.engine.running("shop", "web")
    daemon.engine.exit(web1.container_id)
    daemon.engine.calls.clear()
    plan = daemon.up(spec(replicas=2))  # web-1 died and is healed; web-3 is scaled away
    assert len(plan.of_kind(RemoveReplica)) == 2 and len(plan.of_kind(CreateReplica)) == 1
    new = next(r for r in daemon.engine.running("shop", "web") if r.index == 1)
    assert daemon.engine.calls == [
        ("remove_dead", "web-1", web1.container_id),
        ("create", "web-1", new.container_id),
        ("drain", "web-3", web3.container_id),
        ("stop", "web-3", web3.container_id),
    ]


def test_a_replaced_replica_is_drained_and_stopped_only_once_its_successor_is_healthy(daemon):
    daemon.up(spec())
    daemon.settle()
    old = only(daemon)
    daemon.engine.calls.clear()
    daemon.up(spec(level="debug"))
    (new,) = [r for r in daemon.engine.running("shop", "web") if r.container_id != old]
    assert daemon.engine.calls == [("create", "web-1", new.container_id)], "the old one keeps serving meanwhile"
    daemon.health.unhealthy.add(new.container_id)
    assert daemon.reconcile().of_kind(RemoveReplica) == ()
    daemon.health.unhealthy.clear()
    daemon.reconcile()
    assert daemon.engine.calls[1:] == [("drain", "web-1", old), ("stop", "web-1", old)]


def test_a_restarted_daemon_adopts_what_runs_and_changes_nothing(daemon):
    daemon.up(spec(replicas=3))
    running = {r.container_id for r in daemon.engine.running("shop", "web")}
    restarted = daemon.restart()
    daemon.engine.calls.clear()
    restarted.reconciler.prime_gateway()
    plan = restarted.reconcile()
    assert plan.changes == ()
    assert daemon.engine.calls == []
    assert {r.container_id for r in daemon.engine.running("shop", "web")} == running
    assert len(restarted.routes.served["shop"]) == 3, "the gateway learns every replica before any app syncs it"


def test_down_removes_everything_and_forgets_the_crash_history(daemon):
    daemon.up(spec())
    daemon.engine.exit(only(daemon))
    daemon.reconcile()
    result = daemon.reconciler.remove_app("shop")
    assert result["networks"] == ["flotilla-shop-internal"] and daemon.engine.replicas("shop") == []
    assert daemon.store.crash_history("shop") == {} and daemon.apps.get("shop") is None
    assert "shop" not in daemon.routes.served


def test_a_dry_run_of_any_spec_changes_nothing_in_memory_or_on_disk(daemon):
    daemon.up(spec(replicas=2))
    daemon.settle()
    before = (dict(daemon.health.targets), dict(daemon.routes.served), daemon.store.events("shop"),
              daemon.apps.get("shop"), list(daemon.engine.calls))
    other = spec(replicas=5, level="debug").model_copy(deep=True)
    web = other.services["web"].model_copy(update={"port": 9999})
    plan = daemon.reconciler.preview(other.model_copy(update={"services": {"web": web}}))
    assert len(plan.of_kind(CreateReplica)) == 4 and plan.of_kind(Hold)  # it did plan changes
    after = (dict(daemon.health.targets), dict(daemon.routes.served), daemon.store.events("shop"),
             daemon.apps.get("shop"), list(daemon.engine.calls))
    assert after == before
    assert {t.port for t in daemon.health.targets.values()} == {8000}


def test_one_apps_bug_is_its_own_error_event_and_its_neighbours_are_still_planned(daemon):
    broken = spec().model_copy(update={"app": "broken"})
    daemon.apps.put(broken)
    daemon.apps.put(spec())
    daemon.engine.failing["broken"] = ValueError("frontend name not valid")
    for app in sorted(daemon.apps.names()):  # the loop's batch: broken first
        daemon.reconciler.reconcile_safely(app)
    assert len(daemon.engine.running("shop", "web")) == 1, "the neighbour was planned and applied"
    (error,) = [e.message for e in daemon.store.events("broken") if e.kind == "error"]
    assert "internal error while reconciling broken: ValueError('frontend name not valid')" in error
    assert [e for e in daemon.store.events("shop") if e.kind == "error"] == []
