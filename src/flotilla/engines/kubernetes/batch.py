"""Scheduled jobs as CronJobs, and ``before_deploy`` as a Job that runs before the Deployment changes.

A job's pod is the same container the daemon runs on one host (spec/tasks.py:
the source service's image, env, secrets and security, the job's command),
under a component name of its own (``job-NAME``), so no Service selects it,
while its ``role: replica`` label lets it reach the app's services as their
own pods do. The policies translate as follows:

* ``concurrency`` forbid/allow/replace: ``concurrencyPolicy`` Forbid/Allow/Replace;
* ``missed: skip``: ``startingDeadlineSeconds`` = plan/jobs.py's ON_TIME (a run
  that cannot start that soon after its time is skipped); ``missed: run_once``
  sets none, and the controller starts the latest missed run once when it can;
* ``timeout``: the Job's ``activeDeadlineSeconds``; ``backoffLimit: 0``, since a
  failed run is a failed run on one host too (not retried);
* schedules are read in UTC (``timeZone: Etc/UTC``); a 6-field schedule (with
  seconds) has no Kubernetes form and is refused with a message.

``before_deploy`` becomes a Job named after the service's config hash, so a
new revision is a new Job (a Job's pod template cannot change) and the same
revision applied again finds its Job done and runs nothing twice. ``apply``
applies it before any Deployment and waits for it to succeed
(engines/kubernetes/apply.py); a failure stops the apply there, with the old
Deployment untouched.
"""

from __future__ import annotations

import math

from flotilla.engines.kubernetes import meta, policies, workloads
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.errors import ConflictError
from flotilla.spec.hashing import config_hash
from flotilla.spec.models import AppSpec
from flotilla.spec.schedules import ON_TIME, has_seconds
from flotilla.spec.tasks import as_task, job_spec

BEFORE_DEPLOY_LABEL = "io.flotilla.task"
BEFORE_DEPLOY = "before-deploy"
POLICIES = {"forbid": "Forbid", "allow": "Allow", "replace": "Replace"}
HISTORY = 3  # finished Jobs a CronJob keeps, of each outcome


def batch_objects(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    """A CronJob per job, a Job per service with ``before_deploy``, and the egress policy of each pod."""
    objects = []
    for name in sorted(spec.jobs):
        objects.append(cron_job(spec, name, options=options))
        objects += policies.service_policies(*job_spec(spec, name), options=options)
    for name in sorted(n for n, s in spec.services.items() if s.before_deploy):
        objects.append(before_deploy_job(spec, name, options=options))
        objects += policies.service_policies(_before_deploy_spec(spec, name), f"{name}-before-deploy",
                                             options=options)
    return objects


def cron_job(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    job = spec.jobs[name]
    if has_seconds(job.schedule):
        raise ConflictError(f"job {name!r} is scheduled with seconds ({job.schedule!r}), which a Kubernetes "
                            f"CronJob cannot express; write a 5-field schedule to deploy it on Kubernetes")
    task_app, component = job_spec(spec, name)
    obj = meta.header("batch/v1", "CronJob", name=component, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, component, role="job"))
    obj["spec"] = {
        "schedule": job.schedule,
        "timeZone": "Etc/UTC",
        "concurrencyPolicy": POLICIES[job.concurrency],
        **({"startingDeadlineSeconds": int(ON_TIME)} if job.missed == "skip" else {}),
        "successfulJobsHistoryLimit": HISTORY,
        "failedJobsHistoryLimit": HISTORY,
        "jobTemplate": {"metadata": {"labels": meta.service_labels(spec.app, component, role="job")},
                        "spec": _run_spec(task_app, component, timeout=job.timeout, options=options)},
    }
    return obj


def before_deploy_job(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    svc = spec.services[name]
    component = f"{name}-before-deploy"
    task_app = _before_deploy_spec(spec, name)
    job_labels = {**meta.service_labels(spec.app, component, role="job"), BEFORE_DEPLOY_LABEL: BEFORE_DEPLOY}
    obj = meta.header("batch/v1", "Job", name=f"{component}-{config_hash(spec, name)[:10]}",
                      namespace=meta.namespace_of(spec.app), labels=job_labels)
    obj["spec"] = _run_spec(task_app, component, timeout=svc.before_deploy.timeout, options=options)
    return obj


def _before_deploy_spec(spec: AppSpec, name: str) -> AppSpec:
    svc = spec.services[name]
    task = as_task(svc, command=svc.before_deploy.command)
    return spec.model_copy(update={"services": {**spec.services, f"{name}-before-deploy": task}})


def is_before_deploy(obj: dict) -> bool:
    return obj["kind"] == "Job" and obj["metadata"].get("labels", {}).get(BEFORE_DEPLOY_LABEL) == BEFORE_DEPLOY


def _run_spec(task_app: AppSpec, component: str, *, timeout: float, options: RenderOptions) -> dict:
    """A Job's spec: one pod, never retried, stopped at ``timeout``."""
    template = workloads.pod_template(task_app, component, options=options)
    template["spec"]["restartPolicy"] = "Never"
    return {"backoffLimit": 0, "activeDeadlineSeconds": max(1, math.ceil(timeout)), "template": template}
