"""What `flotilla ps`, `up`'s progress and the discovery API report.

Turns one observation of an app into rows and per-service summaries, with
whether the app has converged (plan/convergence.py decides), each cache's
nodes, the gateway's view of each replica and the autoscaler's last reason,
and the host's warnings (a Docker that does not remap user namespaces).
Read-only: it takes the parts it reads, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.addons.redis_cluster import node_ready
from flotilla.addons.redis_cluster.nodes import cache_of
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.autoscaler import Autoscaler
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.images import shown_images
from flotilla.daemon.reconciler import Reconciler
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.traffic import Traffic
from flotilla.errors import NotFoundError
from flotilla.gateway.metrics import prometheus_text
from flotilla.naming import cache_node_place
from flotilla.plan import Desired, DesiredService, Observed, ObservedReplica
from flotilla.plan.convergence import converged, ready_slots
from flotilla.spec import AppSpec
from flotilla.spec.images import shown as shown_image


class StatusViews:
    """The daemon's read side: apps, replicas, caches, routes and metrics as plain dicts."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        runtime: RuntimeSpecs,
        snapshots: Snapshots,
        reconciler: Reconciler,
        cache_states: CacheStates,
        traffic: Traffic | None = None,
        autoscaler: Autoscaler | None = None,
        warnings: tuple[str, ...] = (),
        more_metrics: tuple[Callable[[], str], ...] = (),
    ) -> None:
        self._apps = apps
        self._runtime = runtime
        self._snapshots = snapshots
        self._reconciler = reconciler
        self._cache_states = cache_states
        self._traffic = traffic
        self._autoscaler = autoscaler
        self._warnings = warnings
        self._more_metrics = more_metrics  # other parts' Prometheus text (the ACME loop's, daemon/acme.py)

    def runtime_spec(self, app: str) -> AppSpec:
        """The runtime spec of a stored app (NotFoundError, saying what to do, if none)."""
        return self._runtime.of(self._apps.require(app))

    def app_status(self, app: str) -> dict:
        spec = self.runtime_spec(app)
        observed = self._snapshots.latest(spec)
        desired = self._reconciler.desired(spec)
        services = [self._with_autoscale(spec, _service_summary(s, observed, spec)) for s in desired.services]
        shown = shown_images(spec)
        caches = [self.cache_status(spec, name, observed) for name in spec.caches]
        return {
            "app": app,
            "services": services,
            "caches": caches,
            "replicas": [_with_image(self.replica_row(r, desired), shown) for r in _sorted(observed.replicas)],
            "converged": converged(desired, observed) and all(c["ready"] for c in caches),
            "failing": [
                {"replica": name, "failures": rec.count} for name, rec in self._reconciler.crash_loops(app).items()
            ],
            "warnings": list(self._warnings),
        }

    def cache_status(self, spec: AppSpec, cache: str, observed: Observed) -> dict:
        """One cache for ``ps``: ready or why not, and every node's role, shard, slots and links."""
        cache_spec = spec.caches[cache]
        state = self._cache_states.get(spec.app, cache)
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
            "reason": state.reason if state else "not observed yet",
            "pending": list(state.pending) if state else [],
            "nodes": nodes,
        }

    def endpoints(self, app: str, service: str) -> list[dict]:
        spec = self.runtime_spec(app)
        if service not in spec.services:
            raise NotFoundError(f"app {app} has no service {service!r}; it has: {', '.join(spec.services)}")
        return [
            {"name": r.name, "replica": r.replica, "ip": r.ip, "port": spec.services[service].port}
            for r in _sorted(self._snapshots.latest(spec).replicas)
            if r.service == service and r.running and r.healthy
        ]

    def replica_row(self, replica: ObservedReplica, desired: Desired) -> dict:
        wanted = {s.name: s for s in desired.services}.get(replica.service)
        return {
            "service": replica.service,
            "replica": replica.replica,
            "name": replica.name,
            "state": replica.state,
            "healthy": bool(replica.healthy),
            "health": self._snapshots.health_detail(replica.container_id),
            "ip": replica.ip,
            "config_hash": replica.config_hash,
            "current": bool(wanted and wanted.config_hash == replica.config_hash),
            "standby": bool(wanted and wanted.replicas < replica.index <= wanted.slots),
            "container_id": replica.container_id,
            "gateway": self._gateway_state(desired.app, replica),
        }

    def _gateway_state(self, app: str, replica: ObservedReplica) -> str | None:
        """``ready``/``drain``/``maint`` behind the gateway; None for internal services."""
        return self._traffic.gateway_state(app, replica) if self._traffic else None

    def _with_autoscale(self, spec: AppSpec, summary: dict) -> dict:
        bounds = spec.services[summary["name"]].autoscale
        if bounds is None:
            return summary
        reason = self._autoscaler.describe(spec.app, summary["name"]) if self._autoscaler else None
        return {**summary, "autoscale": {"min": bounds.min, "max": bounds.max, "reason": reason}}

    def routes(self, app: str) -> list[dict]:
        """The app's routing table, with how many replicas serve each route now."""
        spec = self._apps.require(app)
        observed = self._snapshots.latest(spec)
        rows = []
        for name, svc in spec.services.items():
            in_rotation = sum(
                1 for r in observed.replicas if r.service == name and self._gateway_state(app, r) == "ready"
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

    def metrics(self, app: str) -> list[dict]:
        """Traffic per routed service, from the gateway's counters (last second)."""
        spec = self._apps.require(app)
        if self._traffic is None:
            return []
        found = (self._traffic.metrics.current(app, name) for name in spec.services)
        return [m.to_dict() for m in found if m is not None]

    def prometheus(self) -> str:
        """Every app's service metrics in Prometheus' text format, then the other parts' metrics."""
        return self._service_prometheus() + "".join(more() for more in self._more_metrics)

    def _service_prometheus(self) -> str:
        if self._traffic is None:
            return ""
        ready: dict[tuple[str, str], int] = {}
        for spec in self._apps.active():
            for replica in self._snapshots.latest(spec).replicas:
                if spec.services.get(replica.service) and spec.services[replica.service].routes:
                    key = (spec.app, replica.service)
                    ready[key] = ready.get(key, 0) + (self._gateway_state(spec.app, replica) == "ready")
        return prometheus_text(self._traffic.metrics.all_current(), replicas=ready)


def _shard_of(cache: str, node: str) -> int | None:
    place = cache_node_place(cache, node)
    return place[0] if place else None


def _with_image(row: dict, shown: dict[str, str]) -> dict:
    """A replica's image as ``tag@sha256:short``: the deploy's for a current replica; unknown for an old one."""
    return {**row, "image": shown.get(row["service"]) if row["current"] else None}


def _service_summary(service: DesiredService, observed: Observed, spec: AppSpec) -> dict:
    mine = [r for r in observed.replicas if r.service == service.name]
    return {
        "name": service.name,
        "cache": cache_of(spec.services[service.name]),
        "desired": service.replicas,
        "standby": service.standby,
        "running": sum(1 for r in mine if r.running),
        "ready": len(ready_slots(service, mine)),
        "standby_ready": len(ready_slots(service, mine, standby=True)) - len(ready_slots(service, mine)),
        "config_hash": service.config_hash,
        "image": shown_image(spec, spec.services[service.name]),
    }


def _sorted(replicas: tuple[ObservedReplica, ...]) -> list[ObservedReplica]:
    return sorted(replicas, key=lambda r: (r.service, r.index, r.name))
