"""Per-service traffic metrics from HAProxy, kept in a short sliding window.

The daemon samples HAProxy's counters twice a second; this module turns those
samples into what users and the autoscaler ask for: request rate, requests
in flight, queued requests, 5xx responses, requests no replica took in time
(answered 503 by the gateway) and response time, per service, and the time a
replica takes per request (for the autoscaler's bound by Little's law).
Pure: stats rows, samples and times come in, numbers go out (the clock is the caller's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flotilla.gateway.runtime import StatRow

WINDOW_SECONDS = 120


@dataclass(frozen=True)
class Sample:
    """One reading of one backend's counters at time ``at``."""

    at: float
    requests_total: int
    in_flight: int
    queued: int
    http_5xx_total: int
    response_ms: float
    unserved_total: int = 0  # answered 503 by the gateway: queue timeouts, connections failed after retries
    service_ms: float | None = None  # mean response time of the replicas' slots; None: none served yet
    arrivals_total: int | None = None  # requests that entered the backend (stot), queued or not


@dataclass(frozen=True)
class ServiceMetrics:
    app: str
    service: str
    rps: float
    in_flight: int
    queued: int
    requests_total: int
    http_5xx_total: int
    response_ms: float
    unserved_total: int = 0
    service_ms: float | None = None
    arrival_rps: float = 0.0  # requests/s entering the backend, queued or not (rps counts them when done)

    def to_dict(self) -> dict:
        return {
            "app": self.app,
            "service": self.service,
            "rps": round(self.rps, 2),
            "in_flight": self.in_flight,
            "queued": self.queued,
            "requests_total": self.requests_total,
            "http_5xx_total": self.http_5xx_total,
            "response_ms": self.response_ms,
            "unserved_total": self.unserved_total,
            "service_ms": self.service_ms,
            "arrival_rps": round(self.arrival_rps, 2),
        }


class MetricsWindow:
    """The last ``WINDOW_SECONDS`` of samples for every (app, service)."""

    def __init__(self, *, seconds: float = WINDOW_SECONDS) -> None:
        self._seconds = seconds
        self._samples: dict[tuple[str, str], deque[Sample]] = {}

    def add(self, app: str, service: str, sample: Sample) -> None:
        samples = self._samples.setdefault((app, service), deque())
        samples.append(sample)
        while samples and samples[0].at < sample.at - self._seconds:
            samples.popleft()

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        """Drop the services not in ``keep`` (removed apps, unrouted services)."""
        kept = set(keep)
        for key in [k for k in self._samples if k not in kept]:
            del self._samples[key]

    def samples(self, app: str, service: str) -> tuple[Sample, ...]:
        return tuple(self._samples.get((app, service), ()))

    def current(self, app: str, service: str, *, over: float = 1.0) -> ServiceMetrics | None:
        """The latest values, with the request rate averaged over ``over`` seconds."""
        samples = self._samples.get((app, service))
        if not samples:
            return None
        last = samples[-1]
        return ServiceMetrics(
            app=app,
            service=service,
            rps=request_rate(samples, over=over),
            in_flight=last.in_flight,
            queued=last.queued,
            requests_total=last.requests_total,
            http_5xx_total=last.http_5xx_total,
            response_ms=last.response_ms,
            unserved_total=last.unserved_total,
            service_ms=last.service_ms,
            arrival_rps=request_rate(samples, over=over, field="arrivals_total"),
        )

    def all_current(self) -> list[ServiceMetrics]:
        found = (self.current(app, service) for app, service in sorted(self._samples))
        return [m for m in found if m is not None]


SLOT_PREFIX = "slot"  # the replicas' servers (gateway/config.py slot_name); the activator is not one
_SERVING = ("UP", "DRAIN", "no check")


def backend_sample(backend: StatRow, servers: Sequence[StatRow], *, at: float) -> Sample:
    """One backend's sample from its ``show stat`` row and its servers' rows.

    A backend's ``scur`` counts every request assigned to it, queued ones
    included (measured on 2.6: 96 with 84 queued on 3 servers of ``maxconn 4``),
    so in flight is ``scur - qcur``. Its ``req_tot`` counts a request once it
    is done (0 while 5 wait or run), its ``stot`` when it enters: the arrivals.
    ``econ`` of a backend counts the requests that left HAProxy's queue unserved
    (``timeout queue``) and those whose connection failed on every retry: each
    got the gateway's own 503. The service time is the mean ``rtime`` of the
    slots in rotation that served: the activator's, which includes a cold start,
    is left out, and so is the backend's, which averages the 503s in.
    """
    return Sample(
        at=at,
        requests_total=backend.req_tot or 0,
        in_flight=max(0, (backend.scur or 0) - (backend.qcur or 0)),  # a backend's scur counts its queue too
        queued=backend.qcur or 0,
        http_5xx_total=backend.hrsp_5xx or 0,
        response_ms=float(backend.rtime or 0),
        unserved_total=_number(backend.raw.get("econ")),
        service_ms=_service_ms(servers),
        arrivals_total=backend.stot or 0,
    )


def _service_ms(servers: Sequence[StatRow]) -> float | None:
    times = [s.rtime for s in servers
             if s.svname.startswith(SLOT_PREFIX) and s.status in _SERVING and s.stot > 0 and s.rtime > 0]
    return sum(times) / len(times) if times else None


def _number(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def request_rate(samples: Iterable[Sample], *, over: float, field: str = "requests_total") -> float:
    """Requests per second between the newest sample and the one ``over`` seconds before it.

    ``field`` is the counter: ``requests_total`` (done) or ``arrivals_total`` (entered; 0 where unknown)."""
    ordered = list(samples)
    if len(ordered) < 2:
        return 0.0
    last = ordered[-1]
    first = next((s for s in reversed(ordered[:-1]) if s.at <= last.at - over), ordered[0])
    elapsed = last.at - first.at
    if elapsed <= 0:
        return 0.0
    return max(0, (getattr(last, field) or 0) - (getattr(first, field) or 0)) / elapsed


PROMETHEUS_METRICS = (
    ("flotilla_service_requests_total", "counter", "HTTP requests the gateway sent to the service", "requests_total"),
    ("flotilla_service_requests_per_second", "gauge", "request rate over the last second", "rps"),
    ("flotilla_service_in_flight_requests", "gauge", "requests being served now", "in_flight"),
    ("flotilla_service_queued_requests", "gauge", "requests waiting for a free replica", "queued"),
    ("flotilla_service_http_5xx_total", "counter", "5xx responses", "http_5xx_total"),
    ("flotilla_service_unserved_total", "counter",
     "requests no replica took in time (queue timeout): 503 from the gateway", "unserved_total"),
    ("flotilla_service_response_time_ms", "gauge", "average response time of recent requests", "response_ms"),
)


def prometheus_text(metrics: Iterable[ServiceMetrics], *, replicas: Mapping[tuple[str, str], int]) -> str:
    """Prometheus' text exposition format (version 0.0.4)."""
    rows = list(metrics)
    lines: list[str] = []
    for name, kind, help_text, field in PROMETHEUS_METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{_labels(m.app, m.service)} {getattr(m, field)}" for m in rows]
    lines += [
        "# HELP flotilla_service_ready_replicas replicas receiving traffic",
        "# TYPE flotilla_service_ready_replicas gauge",
    ]
    lines += [f"flotilla_service_ready_replicas{_labels(app, svc)} {n}" for (app, svc), n in sorted(replicas.items())]
    return "\n".join(lines) + "\n"


def _labels(app: str, service: str) -> str:
    return f'{{app="{app}",service="{service}"}}'
