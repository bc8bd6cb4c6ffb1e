"""Response-time percentiles per service and second, from the gateway's access log.

Why it exists: HAProxy's counters (the metrics window) give an average
response time only, and an average hides the slow tail operators care about.
The access log has every request's total time, so the dashboard follows it
(``Follower``: only new lines, once a second while a page is open) and keeps,
per (app, service), the p50 and p95 of each second, for the same window as
the metrics. Pure apart from what it is handed: entries in, numbers out.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable

from flotilla.gateway.metrics import WINDOW_SECONDS

SETTLE = 2.0  # seconds after its end that a second's requests are counted


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Percentiles:
    """Per (app, service), (second, p50 ms, p95 ms, requests) for the last ``seconds`` seconds."""

    def __init__(self, *, seconds: int = WINDOW_SECONDS) -> None:
        self._seconds = seconds
        self._points: dict[tuple[str, str], deque] = defaultdict(deque)
        self._pending: dict[tuple[str, str, int], list[float]] = defaultdict(list)  # seconds not over yet

    def add(self, entries: Iterable[dict], *, now: float) -> None:
        """Fold in access-log entries (each with ``app``, ``service``, ``time`` and ``ms.total``); a second
        becomes a point once it is ``SETTLE`` seconds over (lines reach the log a little late)."""
        for entry in entries:
            total = (entry.get("ms") or {}).get("total")
            if entry.get("app") and entry.get("service") and isinstance(total, int | float) and total >= 0:
                self._pending[(entry["app"], entry["service"], int(entry.get("time", now)))].append(float(total))
        settled = sorted((k for k in self._pending if k[2] < now - SETTLE), key=lambda k: k[2])
        for app, service, second in settled:
            values = self._pending.pop((app, service, second))
            points = self._points[(app, service)]
            if not points or points[-1][0] < second:  # a line later than its second's point is dropped
                points.append((second, percentile(values, 0.5), percentile(values, 0.95), len(values)))
        for points in self._points.values():
            while points and points[0][0] < now - self._seconds:
                points.popleft()

    def series(self, app: str, service: str) -> list[list]:
        """Columns for a chart: seconds, p50 ms, p95 ms."""
        points = self._points.get((app, service), ())
        return [[p[0] for p in points], [p[1] for p in points], [p[2] for p in points]]
