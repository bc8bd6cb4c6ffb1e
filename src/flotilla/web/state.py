"""What the dashboard shows, read once a second from the daemon's parts and shared by every open tab.

Why it exists: the page is pushed, not polled, so one reader builds the
picture (apps, replicas, caches, routes, events, the gateway's metrics
window and a short history of replica counts) and every tab's stream sends
the parts that changed. Reading takes the daemon's read side only
(StatusViews, the event store, MetricsWindow); nothing here writes. No
secret is read: specs contribute names, images, counts and routes, never
environment values.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.status import StatusViews
from flotilla.daemon.store import Store
from flotilla.errors import FlotillaError
from flotilla.gateway.accesslog import AccessLog, Follower
from flotilla.gateway.metrics import WINDOW_SECONDS, MetricsWindow, Sample
from flotilla.spec import AppSpec
from flotilla.web.latency import Percentiles

HISTORY_SECONDS = WINDOW_SECONDS  # replica counts kept per service, one point a second: what the charts show
EVENTS_SHOWN = 40  # the newest events, of every app
SCALE_KINDS = ("autoscale", "scale", "dashboard")  # events drawn on the replica chart
EVENTS_BACKLOG = 1000  # events read of an app the first time: enough to know when its replicas started
FOLLOW_GAP = 10.0  # seconds unread after which the access log is followed from its end again


@dataclass(frozen=True)
class Picture:
    """One reading of everything the page shows, as plain data."""

    at: float
    apps: list[dict]
    events: list[dict]
    charts: dict  # "app/service" -> series for the charts


class Reader:
    """Builds a ``Picture`` at most once per ``interval`` however many tabs ask; thread-safe."""

    def __init__(self, *, apps: AppRepository, status: StatusViews, history: Store, metrics: MetricsWindow,
                 access_log: AccessLog | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, interval: float = 1.0) -> None:
        self._apps = apps
        self._status = status
        self._history = history
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._interval = interval
        self._access_log = access_log
        self._follower: Follower | None = None
        self._percentiles = Percentiles()
        self._counts: dict[str, deque] = {}
        self._feed = EventFeed(history)
        self._latest: Picture | None = None
        self._lock = threading.Lock()

    def picture(self) -> Picture:
        with self._lock:
            if self._latest is None or self._clock() - self._latest.at >= self._interval:
                self._latest = self._read()
            return self._latest

    def _read(self) -> Picture:
        now = self._clock()
        self._read_access_log(now)
        apps, events, charts = [], [], {}
        active = self._apps.active()
        self._feed.keep({spec.app for spec in active})
        for spec in active:
            app_events = self._feed.read(spec.app)
            app = self._app(spec)
            apps.append(app)
            events += app_events
            for service in app["services"]:
                key = f"{spec.app}/{service['name']}"
                charts[key] = self._chart(spec.app, service, app_events, now=now)
        events.sort(key=lambda e: (e["time"], e["id"]), reverse=True)
        return Picture(at=now, apps=apps, events=events[:EVENTS_SHOWN], charts=charts)

    def _read_access_log(self, now: float) -> None:
        """New access-log lines into the percentiles; after a long gap (no page open), only lines from now on."""
        if self._access_log is None:
            return
        if self._follower is None or (self._latest and now - self._latest.at > FOLLOW_GAP):
            self._follower = self._access_log.follower()
        self._percentiles.add(self._follower.read(), now=now)

    def _app(self, spec: AppSpec) -> dict:
        try:
            status = self._status.app_status(spec.app)
        except FlotillaError as exc:  # removed between the listing and now, or its runtime spec failed
            return {"app": spec.app, "services": [], "replicas": [], "caches": [], "routes": [],
                    "converged": False, "error": exc.message}
        for service in status["services"]:
            svc = spec.services.get(service["name"])
            # the status's own image is tag@sha256:short once the deploy pinned a digest
            service["image"] = service.get("image") or (svc.image if svc else "")
            service["public"] = bool(svc and svc.routes)
        for replica in status["replicas"]:
            replica["started"] = self._feed.started(spec.app, replica["replica"])
        status["routes"] = _routes(spec)
        return status

    def _chart(self, app: str, service: dict, events: list[dict], *, now: float) -> dict:
        counts = self._counts.setdefault(f"{app}/{service['name']}", deque(maxlen=HISTORY_SECONDS))
        counts.append((now, service["desired"], service["ready"]))
        offset = now - self._monotonic()  # the metrics window keeps monotonic times
        return {
            "public": service["public"],  # an internal service has no gateway traffic to chart
            "traffic": traffic_series(self._metrics.samples(app, service["name"]), offset=offset),
            "latency": self._percentiles.series(app, service["name"]),
            "replicas": [list(c) for c in zip(*counts)],
            "decisions": [
                {"time": e["time"], "kind": e["kind"], "message": e["message"]}
                for e in events if e["kind"] in SCALE_KINDS and service["name"] in e["subject"].split(",")
            ],
        }


class EventFeed:
    """Each app's newest events, and when each of its replicas was last started (its latest ``create``
    event), read incrementally: after the first read, only events with a newer id."""

    def __init__(self, history: Store) -> None:
        self._history = history
        self._last_id: dict[str, int] = {}
        self._recent: dict[str, deque] = {}
        self._started: dict[tuple[str, str], float] = {}

    def read(self, app: str) -> list[dict]:
        """The app's newest events (at most ``EVENTS_SHOWN``), oldest first."""
        since = self._last_id.get(app, 0)
        recent = self._recent.setdefault(app, deque(maxlen=EVENTS_SHOWN))
        for event in self._history.events(app, since=since, limit=EVENTS_BACKLOG):
            recent.append(event.to_dict())
            if event.kind == "create":
                self._started[(app, event.subject)] = event.ts
            self._last_id[app] = event.id
        return list(recent)

    def started(self, app: str, replica: str) -> float | None:
        return self._started.get((app, replica))

    def keep(self, apps: set[str]) -> None:
        """Forget the apps that are gone."""
        for table in (self._last_id, self._recent):
            for app in [a for a in table if a not in apps]:
                del table[app]
        for key in [k for k in self._started if k[0] not in apps]:
            del self._started[key]


def traffic_series(samples: tuple[Sample, ...], *, offset: float) -> list[list]:
    """Columns for the charts: time, requests/s, in flight, queued, 5xx/s (one point per sample after the
    first; a counter that went back, a reloaded HAProxy, counts as zero)."""
    columns: list[list] = [[], [], [], [], []]
    for before, sample in zip(samples, samples[1:]):
        span = sample.at - before.at
        if span <= 0:
            continue
        point = (
            round(sample.at + offset, 3),
            round(max(0, sample.requests_total - before.requests_total) / span, 2),
            sample.in_flight,
            sample.queued,
            round(max(0, sample.http_5xx_total - before.http_5xx_total) / span, 2),
        )
        for column, value in zip(columns, point):
            column.append(value)
    return columns


def _routes(spec: AppSpec) -> list[dict]:
    """Every service, public (with its routes through the gateway) or internal."""
    rows = []
    for name, svc in spec.services.items():
        if not svc.routes:
            rows.append({"service": name, "public": False, "listen": "", "host": "", "path": ""})
        rows += [{"service": name, "public": True, "listen": spec.gateway.listen, "host": r.host, "path": r.path}
                 for r in svc.routes]
    return rows
