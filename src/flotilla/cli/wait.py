"""Waiting for an app to converge, with progress a person can follow.

Used by ``up`` and ``scale --wait``: it prints what Flotilla does as it
happens (replicas started, removed, crashed), a one-line summary whenever
readiness changes, and fails fast, with the reason, when a replica keeps
crashing instead of waiting out the whole timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flotilla.daemon.client import DaemonClient, app_path
from flotilla.errors import FlotillaError, WaitTimeoutError

POLL_INTERVAL = 0.2
CRASH_LOOP_FAILURES = 3
SHOWN_EVENTS = ("create", "remove", "crash", "error", "cache", "rollout", "health")
UNDONE = ("failed", "rolled back")


def last_event_id(client: DaemonClient, app: str) -> int:
    events = client.request("GET", app_path(app, "events"), query={"limit": 1})["events"]
    return events[-1]["id"] if events else 0


def wait_converged(
    client: DaemonClient,
    app: str,
    *,
    timeout: float,
    since: int,
    say: Callable[[str], None],
    revision: int = 0,
) -> dict:
    """Return the app's status once converged (and ``revision``, if given, rolled out); raise with the
    reason otherwise, a failed rollout included."""
    deadline = time.monotonic() + timeout
    shown_summary = ""
    while True:
        status = client.request("GET", app_path(app))
        since = _show_events(client, app, since, say)
        summary = readiness(status)
        if summary != shown_summary:
            say(summary)
            shown_summary = summary
        outcome = _check_revision(client, app, revision)
        if status["converged"] and outcome in ("", "rolled out"):
            return status
        _fail_on_crash_loop(client, app, status)
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:g}s waiting for {app}: {_pending(status)}")
        time.sleep(POLL_INTERVAL)


def _check_revision(client: DaemonClient, app: str, revision: int) -> str:
    """The revision's outcome ("" without one); a failed rollout raises, saying what runs now."""
    if not revision:
        return ""
    shown = client.request("GET", app_path(app, "history", str(revision)))
    if shown["outcome"] not in UNDONE:
        return shown["outcome"]
    history = client.request("GET", app_path(app, "history"))
    now = (f"revision {history['current']} is running again" if history["current"] != revision
           else f"revision {revision} is held as it is (deploy.on_failure: hold)")
    raise FlotillaError(f"the rollout of revision {revision} of {app} failed: {shown['reason']}. {now}; "
                        f"`flotilla history {app}` shows the revisions")


def readiness(status: dict) -> str:
    parts = [f"{s['name']} {s['ready']}/{s['desired']}" for s in status["services"] if not s.get("cache")]
    parts += [_cache_readiness(c) for c in status.get("caches", [])]
    return "ready: " + ", ".join(parts)


def _cache_readiness(cache: dict) -> str:
    nodes = [s for s in cache["nodes"] if s["reachable"]]
    return f"cache {cache['name']} " + ("ready" if cache["ready"] else f"forming ({len(nodes)} nodes up)")


def _show_events(client: DaemonClient, app: str, since: int, say: Callable[[str], None]) -> int:
    events = client.request("GET", app_path(app, "events"), query={"since": since})["events"]
    for event in events:
        if event["kind"] in SHOWN_EVENTS:
            say(f"  {event['subject']}: {event['message']}")
    return events[-1]["id"] if events else since


def _fail_on_crash_loop(client: DaemonClient, app: str, status: dict) -> None:
    looping = [f for f in status["failing"] if f["failures"] >= CRASH_LOOP_FAILURES]
    if not looping:
        return
    crashes = [
        e for e in client.request("GET", app_path(app, "events"), query={"limit": 200})["events"]
        if e["kind"] == "crash"
    ]
    last = crashes[-1]["message"] if crashes else "no output"
    names = ", ".join(f"{f['replica']} ({f['failures']} failures)" for f in looping)
    raise FlotillaError(
        f"{names} keep crashing and are being restarted with back-off; last crash: {last}. "
        f"Fix the image or its command, then run `flotilla up` again (`flotilla logs {app}` shows more)"
    )


def _pending(status: dict) -> str:
    waiting = [
        f"{s['name']} {s['ready']}/{s['desired']} ready" for s in status["services"] if s["ready"] != s["desired"]
    ]
    unhealthy = [
        f"{r['replica']}: {r['health'] or r['state']}" for r in status["replicas"] if not r["healthy"]
    ]
    stale = [r["replica"] for r in status["replicas"] if not r["current"]]
    caches = [f"cache {c['name']}: {c['reason']}" for c in status.get("caches", []) if not c["ready"]]
    text = ", ".join(waiting + caches) or "old replicas still being replaced"
    if unhealthy:
        text += "; not healthy: " + ", ".join(unhealthy)
    if stale:
        text += "; old config still running: " + ", ".join(stale)
    return text
