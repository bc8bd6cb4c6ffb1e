"""What `flotilla ps`, `up`'s progress and the discovery API report.

Turns one observation of an app into rows and per-service summaries, and
decides whether the app has converged (every slot served by a healthy
replica of the current config, nothing extra left).
"""

from __future__ import annotations

from flotilla.addons.redis_cluster import node_ready
from flotilla.addons.redis_cluster.nodes import cache_of
from flotilla.daemon.controller import Controller
from flotilla.naming import cache_node_place
from flotilla.errors import NotFoundError
from flotilla.gateway.metrics import prometheus_text
from flotilla.plan import Desired, DesiredService, Observed, ObservedReplica
from flotilla.spec import AppSpec, spec_from_dict


def load_app(controller: Controller, app: str) -> AppSpec:
    stored = controller.store.get_app(app)
    if stored is None:
        raise NotFoundError(f"no app named {app!r}; `flotilla up -f FILE` deploys one, `flotilla ps` lists them")
    return spec_from_dict(stored.spec)


def app_status(controller: Controller, app: str) -> dict:
    spec = controller.runtime_spec(load_app(controller, app))
    observed = controller.snapshot(spec)
    desired = controller.desired(spec)
    services = [_with_autoscale(controller, spec, _service_summary(s, observed, spec)) for s in desired.services]
    caches = [cache_status(controller, spec, name, observed) for name in spec.caches]
    return {
        "app": app,
        "services": services,
        "caches": caches,
        "replicas": [replica_row(controller, r, desired) for r in _sorted(observed.replicas)],
        "converged": _converged(desired, observed) and all(c["ready"] for c in caches),
        "failing": [
            {"replica": name, "failures": rec.count} for name, rec in controller.crash_loops(app).items()
        ],
    }


def cache_status(controller: Controller, spec: AppSpec, cache: str, observed: Observed) -> dict:
    """One cache for ``ps``: ready or why not, and every node's role, shard, slots and links."""
    cache_spec = spec.caches[cache]
    state = controller.caches.state(spec.app, cache) if controller.caches else None
    containers = {r.service: r for r in observed.replicas}
    by_id = {n.node_id: n.name for n in state.nodes} if state else {}
    nodes = []
    for node in sorted(state.nodes if state else (), key=lambda n: (not n.reachable, n.name)):
        container = containers.get(node.name)
        nodes.append({
            "name": node.name,
            "node_id": node.node_id,
            "shard": _shard_of(cache, node.name),
            "role": node.role,
            "master": by_id.get(node.master_id or "", node.master_id),
            "slots": [list(r) for r in node.slots],
            "slot_count": node.slot_count,
            "link": "up" if node.reachable and node.linked else "down",
            "ready": node_ready(node, state.nodes),
            "reachable": node.reachable,
            "container": container.name if container else None,
            "ip": container.ip if container else None,
        })
    return {
        "name": cache,
        "type": cache_spec.type,
        "shards": cache_spec.shards,
        "replicas": cache_spec.replicas,
        "ready": bool(state and state.ready),
        "reason": state.reason if state else "the daemon does not tend caches",
        "pending": list(state.pending) if state else [],
        "nodes": nodes,
    }


def _shard_of(cache: str, node: str) -> int | None:
    place = cache_node_place(cache, node)
    return place[0] if place else None


def endpoints(controller: Controller, app: str, service: str) -> list[dict]:
    spec = controller.runtime_spec(load_app(controller, app))
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
        "gateway": _gateway_state(controller, desired.app, replica),
    }


def _gateway_state(controller: Controller, app: str, replica: ObservedReplica) -> str | None:
    """``ready``/``drain``/``maint`` behind the gateway; None for internal services."""
    if controller.traffic is None:
        return None
    return controller.traffic.gateway_state(app, replica)


def _service_summary(service: DesiredService, observed: Observed, spec: AppSpec) -> dict:
    mine = [r for r in observed.replicas if r.service == service.name]
    return {
        "name": service.name,
        "cache": cache_of(spec.services[service.name]),
        "desired": service.replicas,
        "running": sum(1 for r in mine if r.running),
        "ready": len(_ready_slots(service, mine)),
        "config_hash": service.config_hash,
    }


def _with_autoscale(controller: Controller, spec: AppSpec, summary: dict) -> dict:
    bounds = spec.services[summary["name"]].autoscale
    if bounds is None:
        return summary
    reason = controller.autoscaler.describe(spec.app, summary["name"]) if controller.autoscaler else None
    return {**summary, "autoscale": {"min": bounds.min, "max": bounds.max, "reason": reason}}


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


def routes(controller: Controller, app: str) -> list[dict]:
    """The app's routing table, with how many replicas serve each route now."""
    spec = load_app(controller, app)
    observed = controller.snapshot(spec)
    rows = []
    for name, svc in spec.services.items():
        in_rotation = sum(
            1 for r in observed.replicas
            if r.service == name and _gateway_state(controller, app, r) == "ready"
        )
        rows += [
            {
                "listen": spec.gateway.listen,
                "host": route.host,
                "path": route.path,
                "strip_prefix": route.strip_prefix,
                "service": name,
                "port": svc.port,
                "replicas_in_gateway": in_rotation,
            }
            for route in svc.routes
        ]
    return rows


def metrics(controller: Controller, app: str) -> list[dict]:
    """Traffic per routed service, from the gateway's counters (last second)."""
    spec = load_app(controller, app)
    if controller.traffic is None:
        return []
    found = (controller.traffic.metrics.current(app, name) for name in spec.services)
    return [m.to_dict() for m in found if m is not None]


def prometheus(controller: Controller) -> str:
    """Every app's service metrics in Prometheus' text format."""
    if controller.traffic is None:
        return ""
    ready: dict[tuple[str, str], int] = {}
    for stored in controller.store.apps():
        spec = spec_from_dict(stored.spec)
        for replica in controller.snapshot(spec).replicas:
            if spec.services.get(replica.service) and spec.services[replica.service].routes:
                key = (spec.app, replica.service)
                ready[key] = ready.get(key, 0) + (_gateway_state(controller, spec.app, replica) == "ready")
    return prometheus_text(controller.traffic.metrics.all_current(), replicas=ready)
