"""A service's per-replica concurrency limit and its gateway queue: ``concurrency`` and ``queue_timeout``.

Why it exists: without a limit the gateway hands every request to a replica at
once, so a load step queues *inside* the one busy replica, where the replicas
that join cannot take it. ``concurrency`` (Knative's ``containerConcurrency``)
is the most requests one replica is given at once; the rest wait in the
gateway's queue for any replica that frees a slot or joins, at most
``queue_timeout``, then get a 503 with ``Retry-After``. Both keys belong to
the gateway, so only a routed service may have them; kept out of
``service_parts.py`` so the rules read in one place.
"""

from __future__ import annotations

from flotilla.spec import checks as c
from flotilla.spec.locate import Path, Reporter

MAX_CONCURRENCY = 10_000
MAX_QUEUE_TIMEOUT = 60.0  # seconds; HAProxy's own default for the queue is its connect timeout
DEFAULT_QUEUE_TIMEOUT = 10.0  # what every backend had before the setting existed
_ROUTED_HINT = "add routes, or remove {key}: the gateway enforces it"


def concurrency(rep: Reporter, path: Path, value: object, ctx: object) -> int | None:
    """At most this many requests on one replica at once (HAProxy ``maxconn`` on each server)."""
    return c.integer(rep, path, value, low=1, high=MAX_CONCURRENCY,
                     hint="the most requests one replica serves at once, e.g. 4")


def queue_timeout(rep: Reporter, path: Path, value: object, ctx: object) -> float | None:
    """How long a request may wait in the gateway's queue for a free replica."""
    seconds = c.duration(rep, path, value)
    if seconds is not None and seconds > MAX_QUEUE_TIMEOUT:
        rep.add(path, f"must be at most {MAX_QUEUE_TIMEOUT:g}s, got {seconds:g}s",
                "a client waits this long for a replica; give a few seconds, e.g. 5s")
        return None
    return seconds


def check_fits(rep: Reporter, path: Path, *, known: dict, routed: bool) -> None:
    """Rules across keys: routed only; queue_timeout needs concurrency; a target the limit allows."""
    for key in ("concurrency", "queue_timeout"):
        if key in known and not routed:
            rep.add(path + (key,), f"{key} is applied by the gateway, and this service has no routes",
                    _ROUTED_HINT.format(key=key), key=True)
    if "queue_timeout" in known and "concurrency" not in known:
        rep.add(path + ("queue_timeout",), "queue_timeout needs concurrency: without a limit nothing queues",
                "add concurrency (the most requests one replica serves at once), or remove queue_timeout",
                key=True)
    limit, target = known.get("concurrency"), _target_concurrency(known)
    if _number(limit) and _number(target) and target > limit:
        rep.add(path + ("autoscale", "target", "concurrency"),
                f"target concurrency {c.show_number(target)} is above the limit of {limit} per replica, "
                "so it can never be reached", f"lower the target to at most {limit} (e.g. 70% of it)")


def _target_concurrency(known: dict) -> object:
    scale = known.get("autoscale")
    target = scale.get("target") if isinstance(scale, dict) else None
    return target.get("concurrency") if isinstance(target, dict) else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
