"""Reacting to the world: Docker events and health changes become reconcile wake-ups.

The reconciler is level-based, so these only say *when* to look, never what
to do: a container of an app died, started or vanished, or a replica turned
healthy or unhealthy. Each wakes that app's reconcile (health changes are
also recorded as events, for ``flotilla events``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flotilla.daemon.events import EventLog
from flotilla.daemon.health import ProbeTarget
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import FlotillaError

log = logging.getLogger(__name__)
WATCHED_EVENTS = ("die", "start", "destroy", "oom")
RETRY_AFTER = 1.0


class EngineWatcher:
    """Follows the engine's container events; a loop for ``Loops``."""

    def __init__(self, *, engine: ReplicaEngine, wakeups: Wakeups) -> None:
        self._engine = engine
        self._wakeups = wakeups

    def run(self, stop: threading.Event) -> None:
        """Follow the events; after the stream broke (dockerd restarted), look at every app once, since the
        containers that stopped meanwhile sent their events to no one."""
        broke = False
        while not stop.is_set():
            try:
                if broke:
                    self._wakeups.trigger_all(self._engine.apps())
                    broke = False
                for event in self._engine.events(stop):
                    if event.app and event.action in WATCHED_EVENTS:
                        self._wakeups.trigger_soon(event.app)
            except FlotillaError as exc:
                log.warning("docker events: %s", exc.message)
            broke = True
            stop.wait(RETRY_AFTER)


def on_health_change(*, events: EventLog, wakeups: Wakeups) -> Callable[[ProbeTarget, bool, str], None]:
    """The prober's callback: record the change and reconcile the replica's app."""

    def changed(target: ProbeTarget, healthy: bool, detail: str) -> None:
        state = "healthy" if healthy else "unhealthy"
        events.record(target.app, "health", target.replica, f"{state} ({detail})")
        wakeups.trigger(target.app)

    return changed
