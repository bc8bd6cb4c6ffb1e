"""Storing new replica counts: the one write ``flotilla scale`` and the autoscaler share.

A count change is kept in the stored spec (so a restarted daemon keeps it),
recorded as an event that says who changed it and why, and wakes the app's
reconcile.
"""

from __future__ import annotations

import copy

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.events import EventLog
from flotilla.daemon.wakeups import Wakeups
from flotilla.spec import spec_from_dict, spec_to_dict


class ReplicaCounts:
    def __init__(self, *, apps: AppRepository, events: EventLog, wakeups: Wakeups) -> None:
        self._apps = apps
        self._events = events
        self._wakeups = wakeups

    def store(self, app: str, counts: dict[str, int], *, kind: str, summary: str) -> dict:
        """Keep new replica counts in the stored spec, say why, and converge."""
        current = self._apps.require(app)
        data = copy.deepcopy(spec_to_dict(current))
        for service, count in counts.items():
            data["services"][service]["replicas"] = count
        scaled = spec_from_dict(data).model_copy(update={"images": current.images})  # the deploy's pins stay
        self._apps.put(scaled)
        self._events.record(app, kind, ",".join(counts), summary)
        self._wakeups.trigger(app)
        return {"app": app, "replicas": {s: scaled.services[s].replicas for s in scaled.services}}
