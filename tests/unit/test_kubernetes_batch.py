"""Jobs as CronJobs and before_deploy as a Job (engines/kubernetes/batch.py), rendered from every-feature.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.errors import ConflictError
from flotilla.spec import load_spec, parse_spec

EVERY = Path(__file__).resolve().parents[1] / "kubernetes" / "every-feature.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(EVERY)


@pytest.fixture(scope="module")
def objects(spec):
    return render(spec, options=RenderOptions())


def find(objects, kind, name):
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_of(cron: dict) -> dict:
    return cron["spec"]["jobTemplate"]["spec"]["template"]


def test_a_job_from_a_service_runs_its_image_env_and_secrets_with_the_jobs_command(objects):
    cron = find(objects, "CronJob", "job-nightly-report")
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["timeZone"] == "Etc/UTC"
    run = cron["spec"]["jobTemplate"]["spec"]
    assert run["activeDeadlineSeconds"] == 1800 and run["backoffLimit"] == 0
    pod = pod_of(cron)["spec"]
    (box,) = pod["containers"]
    assert box["image"] == "registry.example/market-worker:1.4.2"
    assert box["args"] == ["python3", "-m", "worker.report"]
    names = {e["name"] for e in box["env"]}
    assert {"QUEUE", "DB_PASSWORD", "SESSIONS_REDIS_NODES"} <= names  # the worker's env, secrets, caches
    assert pod["restartPolicy"] == "Never" and "readinessProbe" not in box and "ports" not in box


def test_policies_concurrency_and_missed_runs(objects):
    report, cleanup = find(objects, "CronJob", "job-nightly-report"), find(objects, "CronJob", "job-cleanup")
    assert report["spec"]["concurrencyPolicy"] == "Forbid" and report["spec"]["startingDeadlineSeconds"] == 30
    assert cleanup["spec"]["concurrencyPolicy"] == "Replace" and "startingDeadlineSeconds" not in cleanup["spec"]
    assert cleanup["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600  # the default timeout


def test_job_pods_are_restricted_reach_services_and_are_served_by_none(objects):
    for pod in (pod_of(find(objects, "CronJob", n)) for n in ("job-cleanup", "job-nightly-report")):
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
        ctx = spec["containers"][0]["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert pod["metadata"]["labels"]["io.flotilla.role"] == "replica"  # the services' from-app policies admit it
        for service in (o for o in objects if o["kind"] == "Service"):
            selector = service["spec"]["selector"]
            assert not all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())
    egress = find(objects, "NetworkPolicy", "job-cleanup-egress")
    assert egress["spec"]["podSelector"]["matchLabels"]["io.flotilla.service"] == "job-cleanup"


def test_before_deploy_is_a_job_per_revision(spec, objects):
    (gate,) = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("web-before-deploy-")]
    box = gate["spec"]["template"]["spec"]["containers"][0]
    assert box["args"] == ["python3", "-m", "web.migrate"] and box["image"] == "registry.example/market-web:1.4.2"
    assert gate["spec"]["activeDeadlineSeconds"] == 300 and gate["spec"]["backoffLimit"] == 0
    assert gate["metadata"]["labels"]["io.flotilla.task"] == "before-deploy"
    assert "ttlSecondsAfterFinished" not in gate["spec"]  # kept: the same revision applied again runs nothing
    newer = spec.model_copy(update={"services": {**spec.services, "web": spec.services["web"].model_copy(
        update={"image": "registry.example/market-web:1.5.0"})}})
    names = {o["metadata"]["name"] for o in render(newer, options=RenderOptions()) if o["kind"] == "Job"}
    assert gate["metadata"]["name"] not in names  # a new image: a new Job
    scaled = spec.model_copy(update={"services": {**spec.services, "web": spec.services["web"].model_copy(
        update={"replicas": 5})}})
    assert gate["metadata"]["name"] in {o["metadata"]["name"] for o in render(scaled, options=RenderOptions())}


def test_a_schedule_with_seconds_has_no_kubernetes_form():
    spec = parse_spec("app: a\nservices: {w: {image: x}}\njobs: {j: {schedule: '* * * * * */10', service: w}}\n",
                      filename="f.yaml", environ={})
    with pytest.raises(ConflictError, match="seconds.*5-field"):
        render(spec, options=RenderOptions())
