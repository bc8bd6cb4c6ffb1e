"""What `flotilla ps`, `up`'s progress and the discovery API report.

Turns one observation of an app into rows and per-service summaries, and
decides whether the app has converged (every slot served by a healthy
replica of the current config, nothing extra left).
"""

from __future__ import annotations

from flotilla.daemon.controller import Controller, desired_state
from flotilla.errors import NotFoundError
from flotilla.plan import Desired, DesiredService, Observed, ObservedReplica
from flotilla.spec import AppSpec, spec_from_dict


def load_app(controller: Controller, app: str) -> AppSpec:
    stored = controller.store.get_app(app)
    if stored is None:
        raise NotFoundError(f"no app named {app!r}; `flotilla up -f FILE` deploys one, `flotilla ps` lists them")
    return spec_from_dict(stored.spec)


def app_status(controller: Controller, app: str) -> dict:
    spec = load_app(controller, app)
    observed = controller.snapshot(spec)
    desired = desired_state(spec)
    services = [_service_summary(s, observed) for s in desired.services]
    return {
        "app": app,
        "services": services,
        "replicas": [replica_row(controller, r, desired) for r in _sorted(observed.replicas)],
        "converged": _converged(desired, observed),
        "failing": [
            {"replica": name, "failures": rec.count} for name, rec in controller.crash_loops(app).items()
        ],
    }


def endpoints(controller: Controller, app: str, service: str) -> list[dict]:
    spec = load_app(controller, app)
    if service not in spec.services:
        raise NotFoundError(f"app {app} has no service {service!r}; it has: {', '.join(spec.services)}")
    observed = controller.snapshot(spec)
    return [
        {"name": r.name, "replica": r.replica, "ip": r.ip, "port": spec.services[service].port}
        for r in _sorted(observed.replicas)
        if r.service == service and r.running and r.healthy
    ]


def replica_row(controller: Controller, replica: ObservedReplica, desired: Desired) -> dict:
    wanted = {s.name: s for s in desired.services}.get(replica.service)
    return {
        "service": replica.service,
        "replica": replica.replica,
        "name": replica.name,
        "state": replica.state,
        "healthy": bool(replica.healthy),
        "health": controller.health_detail(replica.container_id),
        "ip": replica.ip,
        "config_hash": replica.config_hash,
        "current": bool(wanted and wanted.config_hash == replica.config_hash),
        "container_id": replica.container_id,
    }


def _service_summary(service: DesiredService, observed: Observed) -> dict:
    mine = [r for r in observed.replicas if r.service == service.name]
    return {
        "name": service.name,
        "desired": service.replicas,
        "running": sum(1 for r in mine if r.running),
        "ready": len(_ready_slots(service, mine)),
        "config_hash": service.config_hash,
    }


def _ready_slots(service: DesiredService, replicas: list[ObservedReplica]) -> set[int]:
    return {
        r.index
        for r in replicas
        if r.running and r.healthy and r.config_hash == service.config_hash and r.index <= service.replicas
    }


def _converged(desired: Desired, observed: Observed) -> bool:
    for service in desired.services:
        mine = [r for r in observed.replicas if r.service == service.name]
        if len(mine) != service.replicas or len(_ready_slots(service, mine)) != service.replicas:
            return False
    wanted = {s.name for s in desired.services}
    return all(r.service in wanted for r in observed.replicas)


def _sorted(replicas: tuple[ObservedReplica, ...]) -> list[ObservedReplica]:
    return sorted(replicas, key=lambda r: (r.service, r.index, r.name))
