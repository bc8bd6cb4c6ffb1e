"""A task's container described as a service: what `flotilla run`, a job run and before_deploy execute.

A one-off container takes most of a service (its image as the deploy pinned
it, env, secrets, networks, hardening) and changes a few things: the command,
for a job its own env, secrets and resources, and none of what only a serving
replica has (a port, health checks, routes, autoscaling). Both the daemon
(daemon/tasks.py) and the Kubernetes renderer (CronJob and Job pod templates)
start from the same description, so the two targets run the same container.
"""

from __future__ import annotations

from flotilla.errors import NotFoundError
from flotilla.spec.models import AppSpec, HealthSpec, JobSpec, ServiceSpec


def job_service_name(job: str) -> str:
    """The name a job's container goes by (its Kubernetes component, its service label)."""
    return f"job-{job}"


def as_task(svc: ServiceSpec, *, command: tuple[str, ...] | None) -> ServiceSpec:
    """``svc`` as a one-off container running ``command`` (its own when None)."""
    return svc.model_copy(update={"command": command or svc.command, "before_deploy": None, "port": None,
                                  "health": HealthSpec(), "routes": (), "autoscale": None, "replicas": 1,
                                  "concurrency": None, "queue_timeout": None})


def task_spec(spec: AppSpec, *, service: str, command: tuple[str, ...] | None) -> AppSpec:
    """``spec`` with ``service`` as a task running ``command``."""
    svc = spec.services.get(service)
    if svc is None:
        raise NotFoundError(f"app {spec.app} has no service {service!r}; it has: {', '.join(sorted(spec.services))}")
    if svc.addon:
        raise NotFoundError(f"{service} is made by {svc.addon}; run a command in one of the app's own services")
    return spec.model_copy(update={"services": {**spec.services, service: as_task(svc, command=command)}})


def job_service(spec: AppSpec, job: str) -> ServiceSpec:
    """The container of one run of ``job``: its source service's, with the job's command, env, secrets and
    resources added; or, with ``image:``, that image with only the job's own settings."""
    found: JobSpec = spec.jobs[job]
    if not found.service:
        return ServiceSpec(image=found.image or "", command=found.command, env=found.env, secrets=found.secrets,
                           resources=found.resources)
    base = spec.services[found.service]
    own = found.resources if found.resources.model_dump(exclude_none=True) else base.resources
    merged = base.model_copy(update={"env": {**base.env, **found.env}, "secrets": {**base.secrets, **found.secrets},
                                     "resources": own})
    return as_task(merged, command=found.command)


def job_spec(spec: AppSpec, job: str) -> tuple[AppSpec, str]:
    """``spec`` with the job's container added as a service; and that service's name."""
    name = job_service_name(job)
    return spec.model_copy(update={"services": {**spec.services, name: job_service(spec, job)}}), name
