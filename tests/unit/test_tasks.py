"""Which services' before_deploy an `up` runs, a task's container, and the job history's idempotent records."""

from __future__ import annotations

from flotilla.daemon.job_store import FAILED, RUNNING, SKIPPED, SUCCEEDED, JobStore
from flotilla.daemon.tasks import before_deploy_due
from flotilla.spec import spec_from_dict
from flotilla.spec.tasks import job_service, task_spec


def app(*, image: str = "web:1", replicas: int = 2, migrate: str = "python3 migrate.py") -> dict:
    return {"app": "shop", "services": {
        "web": {"image": image, "port": 8000, "replicas": replicas, "env": {"A": "1"},
                "routes": [{"host": "shop.localhost"}], "secrets": {"DB": "db"}, "before_deploy": migrate},
        "worker": {"image": "worker:1"}},
        "jobs": {"report": {"schedule": "0 3 * * *", "service": "web", "command": "python3 report.py",
                            "env": {"B": "2"}}}}


def test_before_deploy_runs_for_a_new_app_and_for_changed_containers_only():
    v1 = spec_from_dict(app())
    assert before_deploy_due(v1, None) == ["web"]
    assert before_deploy_due(spec_from_dict(app(replicas=5)), v1) == []  # a count is no new revision
    assert before_deploy_due(spec_from_dict(app(migrate="python3 other.py")), v1) == []  # nor the command alone
    assert before_deploy_due(spec_from_dict(app(image="web:2")), v1) == ["web"]


def test_a_task_is_its_service_without_what_only_a_replica_has():
    spec = task_spec(spec_from_dict(app()), service="web", command=("sh", "-c", "exit 3"))
    web = spec.services["web"]
    assert web.command == ("sh", "-c", "exit 3") and web.port is None and web.routes == ()
    assert web.env == {"A": "1"} and web.secrets == {"DB": "db"} and web.before_deploy is None
    job = job_service(spec_from_dict(app()), "report")
    assert job.image == "web:1" and job.command == ("python3", "report.py")
    assert job.env == {"A": "1", "B": "2"} and job.secrets == {"DB": "db"}


def test_recording_a_run_twice_changes_nothing_and_moves_the_cursor_forward_only(tmp_path):
    store = JobStore(tmp_path / "state.db")
    try:
        store.start_cursor("shop", "report", 100.0)
        first = store.record(app="shop", job="report", due=110.0, trigger="schedule", started=110.1, state=RUNNING,
                             container_id="c1")
        again = store.record(app="shop", job="report", due=110.0, trigger="schedule", started=999.0, state=RUNNING,
                             container_id="c1")
        assert first == again == 1 and store.cursors("shop") == {"report": 110.0}
        store.record(app="shop", job="report", due=50.0, trigger="manual", started=50.0, state=SKIPPED)
        assert store.cursors("shop") == {"report": 110.0}  # a manual run never moves it
        done = store.finish(app="shop", container_id="c1", ended=112.0, exit_code=0, output="x" * 20000)
        assert done.state == SUCCEEDED and done.duration == 112.0 - 110.1 and len(done.output) == 16 * 1024
        assert store.finish(app="shop", container_id="c1", ended=113.0, exit_code=0, output="") is None
        store.record(app="shop", job="report", due=120.0, trigger="schedule", started=120.0, state=RUNNING,
                     container_id="c2")
        store.note(app="shop", container_id="c2", reason="timed out")
        failed = store.finish(app="shop", container_id="c2", ended=125.0, exit_code=0, output="")
        assert failed.state == FAILED and failed.reason == "timed out"  # stopped: failed whatever its exit code
    finally:
        store.close()
