"""Deploy history, rollback, failed rollouts and liveness, on the in-memory engine.

The reconciler, the operations and the deployments part run for real on a
store file (so history that survives a daemon restart is tested as such); the
engine, the prober and the clock are the in-memory stand-ins of
tests/support. What the real Docker and HAProxy add (zero failed requests under
load) is tests/integration/test_deploys.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.counts import ReplicaCounts
from flotilla.daemon.deployments import Deployments
from flotilla.daemon.events import EventLog
from flotilla.daemon.operations import Operations
from flotilla.daemon.reconciler import Reconciler, restarted
from flotilla.daemon.revision_store import RevisionStore
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.store import Store
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import ConflictError, NotFoundError
from flotilla.plan import CreateReplica, Hold, RemoveReplica
from flotilla.secrets import Vault
from flotilla.secrets.keys import generate_key
from flotilla.spec import config_hash, spec_from_dict
from tests.support.memory_engine import FixedHealth, MemoryEngine, RecordingRoutes
from tests.unit import test_reconciler as reconciler_tests
from tests.unit.test_reconciler import Clock


def spec_data(image: str = "shop-web:1", *, replicas: int = 2, deploy: dict | None = None,
              health: dict | None = None) -> dict:
    service = {"image": image, "port": 8000, "replicas": replicas}
    if deploy:
        service["deploy"] = deploy
    if health:
        service["health"] = health
    return {"app": "shop", "services": {"web": service}}


class Daemon(reconciler_tests.Daemon):
    """The daemon's parts that make and judge revisions, on one store file; ``restart`` builds them anew."""

    def __init__(self, db: Path, engine: MemoryEngine, clock: Clock, health: FixedHealth | None = None) -> None:
        self.db, self.engine, self.clock = db, engine, clock
        self.health = health or FixedHealth()
        self.store = Store(db, clock=clock)
        self.apps = AppRepository(self.store)
        events = EventLog(self.store)
        wakeups = Wakeups(clock=clock)
        snapshots = Snapshots(engine=engine, prober=self.health)
        cache_states = CacheStates()
        runtime = RuntimeSpecs(cache_states=cache_states, snapshots=snapshots, cache_image="redis")
        self.revisions = RevisionStore(db)
        self.deployments = Deployments(store=self.revisions, apps=self.apps, events=events, engine=engine,
                                       clock=clock)
        self.reconciler = Reconciler(
            engine=engine, apps=self.apps, snapshots=snapshots, events=events, runtime=runtime, wakeups=wakeups,
            crash_history=self.store, cache_states=cache_states, clock=clock, traffic=RecordingRoutes(engine.calls),
            deployments=self.deployments,
        )
        self.ops = Operations(apps=self.apps, runtime=runtime, engine=engine, reconciler=self.reconciler,
                              counts=ReplicaCounts(apps=self.apps, events=events, wakeups=wakeups), events=events,
                              wakeups=wakeups, deployments=self.deployments)

    def up(self, data: dict, *, settle: bool = True) -> int:
        revision = self.ops.submit(data, dry_run=False)["revision"]
        if settle:
            self.settle()
        return revision

    def restart(self) -> Daemon:
        self.store.close()
        self.revisions.close()
        return Daemon(self.db, self.engine, self.clock, self.health)

    def outcomes(self) -> list[tuple[int, str, str]]:
        return [(r["revision"], r["command"], r["outcome"]) for r in self.ops.history("shop")["revisions"]]

    def running_hashes(self) -> set[str]:
        return {r.config_hash for r in self.engine.running("shop", "web")}


def hash_of(data: dict) -> str:
    return config_hash(spec_from_dict(data), "web")


@pytest.fixture
def daemon(tmp_path) -> Daemon:
    return Daemon(tmp_path / "state.db", MemoryEngine(), Clock())


# -- revisions and rollback ---------------------------------------------------------------

def test_three_ups_make_three_revisions_and_a_rollback_is_the_fourth(daemon):
    for n in (1, 2, 3):
        assert daemon.up(spec_data(f"shop-web:{n}")) == n
    assert daemon.outcomes() == [(1, "up", "rolled out"), (2, "up", "rolled out"), (3, "up", "rolled out")]
    result = daemon.ops.rollback("shop", 2)
    assert (result["revision"], result["target"]) == (4, 2)
    daemon.settle()
    assert daemon.outcomes()[-1] == (4, "rollback to 2", "rolled out")
    assert daemon.running_hashes() == {hash_of(spec_data("shop-web:2"))}
    shown = daemon.ops.revision("shop", 4)
    assert shown["current"] and shown["images"] == {"shop-web:2": "sha256:shop-web:2"}
    assert '-        "image": "shop-web:3"' in shown["diff"] and '+        "image": "shop-web:2"' in shown["diff"]


def test_rollback_without_a_number_goes_to_the_last_good_revision_before_the_current(daemon):
    daemon.up(spec_data("shop-web:1"))
    daemon.up(spec_data("shop-web:2"))
    assert daemon.ops.rollback("shop", None)["target"] == 1


def test_scale_and_an_unchanged_up_make_no_revision_and_a_rollback_keeps_todays_counts(daemon):
    daemon.up(spec_data("shop-web:1"))
    daemon.up(spec_data("shop-web:2"))
    daemon.ops.scale("shop", {"web": 3})
    daemon.settle()
    assert daemon.up(spec_data("shop-web:2")) == 2  # the same spec again (counts aside): still revision 2
    daemon.ops.scale("shop", {"web": 3})
    daemon.ops.rollback("shop", 1)
    daemon.settle()
    assert len(daemon.engine.running("shop", "web")) == 3
    assert len(daemon.outcomes()) == 3


def test_an_unknown_revision_is_refused_naming_the_known_ones(daemon):
    daemon.up(spec_data())
    with pytest.raises(NotFoundError, match="has no revision 7; it has 1"):
        daemon.ops.rollback("shop", 7)
    with pytest.raises(ConflictError, match="no earlier revision that rolled out"):
        daemon.ops.rollback("shop", None)


def test_history_survives_a_daemon_restart(daemon):
    daemon.up(spec_data("shop-web:1"))
    daemon.up(spec_data("shop-web:2"))
    assert daemon.restart().outcomes() == [(1, "up", "rolled out"), (2, "up", "rolled out")]


# -- failed rollouts undo themselves --------------------------------------------------------

def test_a_new_replica_that_crashes_fails_the_rollout_and_the_app_returns_to_the_previous_revision(daemon):
    daemon.up(spec_data("shop-web:1"))
    old = {r.container_id for r in daemon.engine.running("shop", "web")}
    daemon.up(spec_data("shop-web:bad"), settle=False)
    daemon.reconcile()
    (new,) = [r for r in daemon.engine.running("shop", "web") if r.container_id not in old]
    daemon.engine.exit(new.container_id, code=3, output="Traceback\nImportError: no module named shop")
    daemon.settle()
    assert daemon.outcomes()[-1] == (2, "up", "rolled back")
    reason = daemon.ops.revision("shop", 2)["reason"]
    assert "exited with code 3" in reason and "last output: Traceback | ImportError: no module named shop" in reason
    assert "returned to revision 1" in reason
    assert {r.container_id for r in daemon.engine.running("shop", "web")} == old, "the old replicas never stopped"
    assert daemon.ops.history("shop")["current"] == 1
    assert daemon.apps.get("shop").services["web"].image == "shop-web:1"


def test_a_new_replica_that_never_turns_healthy_fails_the_rollout_after_the_deploy_deadline(daemon):
    daemon.up(spec_data("shop-web:1", deploy={"deadline": "30s"}))
    old = {r.container_id for r in daemon.engine.running("shop", "web")}
    daemon.up(spec_data("shop-web:sick", deploy={"deadline": "30s"}), settle=False)
    daemon.reconcile()
    (new,) = [r for r in daemon.engine.running("shop", "web") if r.container_id not in old]
    daemon.health.unhealthy.add(new.container_id)
    daemon.clock.now += 29
    daemon.reconcile()
    assert daemon.outcomes()[-1][2] == "rolling out"
    daemon.clock.now += 2
    daemon.settle()
    assert daemon.outcomes()[-1] == (2, "up", "rolled back")
    assert "no new replica turned healthy within the deploy deadline of 30s" in daemon.ops.revision("shop", 2)["reason"]
    assert {r.container_id for r in daemon.engine.running("shop", "web")} == old


def test_on_failure_hold_stops_replacing_and_reports(daemon):
    held = {"on_failure": "hold", "deadline": "10s"}
    daemon.up(spec_data("shop-web:1", deploy=held))
    daemon.up(spec_data("shop-web:sick", deploy=held), settle=False)
    daemon.reconcile()
    sick = [r for r in daemon.engine.running("shop", "web") if r.config_hash == hash_of(spec_data("shop-web:sick"))]
    daemon.health.unhealthy.update(r.container_id for r in sick)
    daemon.clock.now += 11
    daemon.reconcile()
    plan = daemon.reconcile()
    assert daemon.outcomes()[-1] == (2, "up", "failed")
    assert not plan.of_kind(CreateReplica)
    assert any("failed and is held" in h.reason for h in plan.of_kind(Hold))


def test_a_daemon_killed_mid_rollout_undoes_it_when_it_comes_back(daemon):
    daemon.up(spec_data("shop-web:1", deploy={"deadline": "30s"}))
    daemon.up(spec_data("shop-web:sick", deploy={"deadline": "30s"}), settle=False)
    daemon.reconcile()
    daemon.health.unhealthy.update(r.container_id for r in daemon.engine.running("shop", "web")
                                   if r.config_hash == hash_of(spec_data("shop-web:sick")))
    restarted_daemon = daemon.restart()
    daemon.clock.now += 31
    restarted_daemon.settle()
    assert restarted_daemon.outcomes()[-1] == (2, "up", "rolled back")
    assert restarted_daemon.running_hashes() == {hash_of(spec_data("shop-web:1", deploy={"deadline": "30s"}))}


# -- rolling restart --------------------------------------------------------------------------

def test_restart_replaces_every_replica_one_at_a_time_without_a_revision(daemon):
    daemon.up(spec_data(replicas=3))
    before = {r.container_id for r in daemon.engine.running("shop", "web")}
    daemon.ops.restart("shop", "web")
    creates = []
    for _ in range(10):
        plan = daemon.reconcile()
        creates.append(len(plan.of_kind(CreateReplica)))
        if not plan.changes:
            break
    assert max(creates) == 1, "one replica at a time"
    after = {r.container_id for r in daemon.engine.running("shop", "web")}
    assert len(after) == 3 and not after & before
    assert daemon.running_hashes() == {restarted(hash_of(spec_data(replicas=3)), 1)}
    assert len(daemon.outcomes()) == 1
    with pytest.raises(NotFoundError, match="no service 'nope'"):
        daemon.ops.restart("shop", "nope")


# -- liveness ----------------------------------------------------------------------------------

LIVE = {"path": "/healthz", "replace_after": "10s", "start_period": "5s"}


def test_a_replica_failing_its_check_for_replace_after_is_replaced_with_the_crash_back_off(daemon):
    daemon.up(spec_data(replicas=2, health=LIVE))
    hung, other = daemon.engine.running("shop", "web")
    daemon.health.unhealthy.add(hung.container_id)
    daemon.health.failing_since[hung.container_id] = (daemon.clock.now - 60, daemon.clock.now)
    daemon.clock.now += 9
    plan = daemon.reconcile()
    assert not plan.of_kind(RemoveReplica) and plan.of_kind(Hold)[0].until == daemon.clock.now + 1
    daemon.clock.now += 1
    (removal,) = daemon.reconcile().of_kind(RemoveReplica)
    assert removal.container_id == hung.container_id and not removal.graceful
    assert "unresponsive: failed its health check for 10.0s" in daemon.events("health")[-1]
    assert daemon.store.crash_history("shop")[("web", hung.index)].count == 1
    assert [a.replica for a in daemon.reconcile().of_kind(CreateReplica)] == [hung.replica]
    assert other.container_id in {r.container_id for r in daemon.engine.running("shop", "web")}


def test_failures_within_the_start_period_do_not_count(daemon):
    daemon.up(spec_data(replicas=2, health=LIVE))
    slow, _ = daemon.engine.running("shop", "web")
    daemon.health.unhealthy.add(slow.container_id)
    daemon.health.failing_since[slow.container_id] = (daemon.clock.now, daemon.clock.now)
    daemon.clock.now += 12  # 12 s failing, but only 7 s of it after the start period
    assert not daemon.reconcile().of_kind(RemoveReplica)
    daemon.clock.now += 3
    assert daemon.reconcile().of_kind(RemoveReplica)


def test_when_every_replica_is_unhealthy_only_one_is_replaced_at_a_time(daemon):
    daemon.up(spec_data(replicas=3, health=LIVE))
    for replica in daemon.engine.running("shop", "web"):
        daemon.health.unhealthy.add(replica.container_id)
        daemon.health.failing_since[replica.container_id] = (0.0, daemon.clock.now + replica.index)
    daemon.clock.now += 60
    (removal,) = daemon.reconcile().of_kind(RemoveReplica)
    assert removal.index == 1, "the one failing longest"
    (created,) = daemon.reconcile().of_kind(CreateReplica)
    daemon.health.unhealthy.add(daemon.engine.running("shop", "web")[0].container_id)  # the new one starts
    assert not daemon.reconcile().of_kind(RemoveReplica), "no other goes while the new one is starting"
    assert len(daemon.engine.running("shop", "web")) == 3


def test_liveness_leaves_a_rolling_out_service_to_the_rollout(daemon):
    daemon.up(spec_data("shop-web:1", health=LIVE))
    daemon.up(spec_data("shop-web:2", health=LIVE), settle=False)
    daemon.reconcile()
    for replica in daemon.engine.running("shop", "web"):
        daemon.health.unhealthy.add(replica.container_id)
        daemon.health.failing_since[replica.container_id] = (0.0, daemon.clock.now)
    daemon.clock.now += 20
    plan = daemon.reconcile()
    assert not any(a.reason.startswith("unresponsive") for a in plan.of_kind(RemoveReplica))


# -- secrets --------------------------------------------------------------------------------

def test_a_rollback_restores_old_secret_values_or_refuses_before_changing_anything(tmp_path):
    vault = Vault(tmp_path / "vault.db", generate_key(), clock=lambda: 1.0)
    store = RevisionStore(tmp_path / "state.db")
    deployments = Deployments(store=store, apps=AppRepository(Store(tmp_path / "state.db", clock=lambda: 1.0)),
                              events=EventLog(Store(tmp_path / "state.db", clock=lambda: 1.0)),
                              engine=MemoryEngine(), clock=lambda: 1.0, vault=vault)
    vault.set("shop", "token", b"old")
    number = store.add(app="shop", spec=spec_data(), images={}, secrets={"token": 1}, created=1.0, command="up",
                       previous=0)
    vault.set("shop", "token", b"new")
    assert deployments.secrets_to_restore("shop", store.get("shop", number)) == {"token": b"old"}
    for _ in range(20):
        vault.set("shop", "token", b"newer")
    with pytest.raises(ConflictError, match="used token version 1, which the vault no longer keeps; nothing"):
        deployments.secrets_to_restore("shop", store.get("shop", number))


def test_a_first_revision_that_crashes_is_left_to_the_crash_back_off(daemon):
    daemon.up(spec_data("shop-web:bad", replicas=1), settle=False)
    daemon.reconcile()
    (replica,) = daemon.engine.running("shop", "web")
    daemon.engine.exit(replica.container_id, code=3)
    daemon.reconcile()
    assert daemon.outcomes() == [(1, "up", "rolling out")]
    assert daemon.apps.get("shop").services["web"].image == "shop-web:bad"
