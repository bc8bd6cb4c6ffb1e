"""What the dashboard may change: scale a service, restart a replica; each recorded as from the dashboard.

Why it exists: the page's buttons must do exactly what the CLI would (the
same validation: `flotilla scale`'s bounds, autoscaled services refused
outside theirs) and leave a trace that says where the change came from, so
`flotilla events` tells a click from a command.
"""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.events import EventLog
from flotilla.daemon.operations import Operations
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.traffic import Traffic
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import BadRequestError, NotFoundError

EVENT_KIND = "dashboard"
MAX_REPLICAS = 100


@dataclass(frozen=True)
class Actions:
    apps: AppRepository
    operations: Operations
    events: EventLog
    snapshots: Snapshots
    traffic: Traffic | None
    engine: ReplicaEngine
    wakeups: Wakeups

    def scale(self, app: str, *, service: str, replicas: str) -> str:
        """Scale ``service`` of ``app`` to ``replicas`` (text from a form); the sentence to show."""
        if not replicas.strip().isdigit() or int(replicas) > MAX_REPLICAS:
            raise BadRequestError(f"replicas {replicas!r}: write a whole number from 0 to {MAX_REPLICAS}")
        spec = self.apps.require(app)
        if service not in spec.services:
            raise NotFoundError(f"app {app} has no service {service!r}; it has: {', '.join(spec.services)}")
        before = spec.services[service].replicas
        self.operations.scale(app, {service: int(replicas)})
        message = f"{service} {before} -> {int(replicas)}, from the dashboard"
        self.events.record(app, EVENT_KIND, service, message)
        return f"{app}: scaled {message}"

    def restart(self, app: str, *, replica: str) -> str:
        """Drain and stop one replica (by container name); the reconciler starts its successor."""
        spec = self.apps.require(app)
        found = [r for r in self.snapshots.latest(spec).replicas if r.name == replica]
        if not found:
            raise NotFoundError(f"app {app} has no replica {replica!r} now; it may have been replaced already")
        if self.traffic is not None:
            self.traffic.drain(app, found[0])
        self.engine.remove_replica(found[0].container_id, graceful=True)
        self.events.record(app, EVENT_KIND, found[0].service, f"restarted {found[0].replica}, from the dashboard")
        self.wakeups.trigger(app)
        return f"{app}: restarted {found[0].replica}; its slot is being refilled"
