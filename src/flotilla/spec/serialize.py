"""An AppSpec as a JSON-safe dict in the shape the YAML is written in.

The CLI interpolates the spec (only it sees the user's environment and .env)
and sends this dict to the daemon, which validates it again with
``spec_from_dict``. The dict therefore has to pass the same rules: defaults
that would trip a rule when written out (a health check without a port, the
default max_body of a service without routes) are left out, and durations and memory are plain seconds and bytes.
"""

from __future__ import annotations

from flotilla.spec.models import (
    DEFAULT_MAX_BODY,
    DEFAULT_PIDS_LIMIT,
    AcmeSpec,
    AppSpec,
    AutoscaleSpec,
    CacheSpec,
    DeploySpec,
    HealthSpec,
    JobSpec,
    ServiceSpec,
)


def spec_to_dict(spec: AppSpec) -> dict:
    """JSON-safe; ``spec_from_dict(spec_to_dict(spec)) == spec``."""
    return {
        "app": spec.app,
        "gateway": {"listen": spec.gateway.listen, **_https(spec)},
        "services": {name: _service(service) for name, service in spec.services.items()},
        "caches": {name: _cache(cache) for name, cache in spec.caches.items()},
        **({"pull": spec.pull} if spec.pull != "missing" else {}),
        **({"acme": spec.acme.model_dump(exclude_none=True)} if spec.acme != AcmeSpec() else {}),
        **({"jobs": {name: _job(job) for name, job in spec.jobs.items()}} if spec.jobs else {}),
    }


def _service(service: ServiceSpec) -> dict:
    data: dict = {"image": service.image}
    if service.command is not None:
        data["command"] = list(service.command)
    if service.port is not None:
        data["port"] = service.port
    data["replicas"] = service.replicas
    if service.standby:
        data["standby"] = service.standby
    data["env"] = dict(service.env)
    if service.health != HealthSpec():
        data["health"] = service.health.model_dump(exclude_none=True)
    if service.deploy != DeploySpec():
        data["deploy"] = service.deploy.model_dump()
    data["resources"] = service.resources.model_dump(exclude_none=True)
    data["egress"] = service.egress
    data["routes"] = [route.model_dump(exclude_none=True) for route in service.routes]
    if service.max_body != DEFAULT_MAX_BODY:
        data["max_body"] = service.max_body
    data["secrets"] = dict(service.secrets)
    if service.autoscale is not None:
        data["autoscale"] = _autoscale(service.autoscale)
    data["caches"] = list(service.caches)
    data.update(_hardening(service))
    data.update(_image_source(service))
    data.update(_concurrency(service))
    data.update(_data(service))
    if service.before_deploy is not None:
        data["before_deploy"] = {"command": list(service.before_deploy.command),
                                 "timeout": service.before_deploy.timeout}
    return data


def _data(service: ServiceSpec) -> dict:
    """Volumes, the host-path opt-in and backups (spec/volumes.py), only when set."""
    data: dict = {}
    if service.volumes and not service.addon:  # a cache node's volume is the add-on's, not a spec key
        data["volumes"] = {name: v.model_dump(exclude_none=True, exclude_defaults=True) | {"path": v.path}
                           for name, v in service.volumes.items()}
    if service.allow_host_paths:
        data["allow_host_paths"] = True
    if service.backup is not None:
        data["backup"] = {key: list(value) if isinstance(value, tuple) else value
                          for key, value in service.backup.model_dump(exclude_none=True).items()}
    return data


def _https(spec: AppSpec) -> dict:
    return {"https_port": spec.gateway.https_port} if spec.gateway.https_port is not None else {}


def _concurrency(service: ServiceSpec) -> dict:
    """The gateway's per-replica limit and queue, only when set."""
    keys = ("concurrency", "queue_timeout")
    return {key: getattr(service, key) for key in keys if getattr(service, key) is not None}


def _hardening(service: ServiceSpec) -> dict:
    """Only what differs from the defaults, so a spec without these keys reads as it was written."""
    data: dict = {"user": service.user} if service.user is not None else {}
    if service.read_only:
        data["read_only"] = True
    if service.cap_add:
        data["cap_add"] = list(service.cap_add)
    if service.pids_limit != DEFAULT_PIDS_LIMIT:
        data["pids_limit"] = service.pids_limit
    return data


def _image_source(service: ServiceSpec) -> dict:
    """``pull`` and ``build`` when set (spec/validate_images.py)."""
    data: dict = {"pull": service.pull} if service.pull else {}
    if service.build:
        data["build"] = service.build.model_dump(exclude_none=True)
    return data


def _autoscale(autoscale: AutoscaleSpec) -> dict:
    return {
        "min": autoscale.min,
        "max": autoscale.max,
        "target": autoscale.target.model_dump(exclude_none=True),
        "scale_down_delay": autoscale.scale_down_delay,
    }


def _job(job: JobSpec) -> dict:
    data = job.model_dump(exclude_none=True)
    if job.command is not None:
        data["command"] = list(job.command)
    data["resources"] = job.resources.model_dump(exclude_none=True)
    return data


def _cache(cache: CacheSpec) -> dict:
    return cache.model_dump(exclude_none=True)
