"""Long requests (``up`` with pulls and builds, ``build``) answered as a stream of progress lines.

A pull or a build takes seconds to minutes, and a person wants to see each
layer and each build step as it happens, so the API answers these requests
as NDJSON: ``{"progress": {...}}`` per step, then one ``{"result": {...}}`` or
``{"error": {...}}`` (the error as every other API answer carries it). The
work runs in a thread of its own and finishes even if the client leaves: a
deploy is done or not done, never half done because a terminal closed.
Byte counters of one layer are sent at most every ``THROTTLE`` seconds.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

import anyio

from flotilla.engines.docker.images import Progress, ProgressSink
from flotilla.errors import FlotillaError

log = logging.getLogger(__name__)
THROTTLE = 0.5
POLL = 0.05
_DONE = object()


class _Throttled:
    """Forward a step when its words change, and its byte counts at most every THROTTLE seconds."""

    def __init__(self, lines: queue.Queue) -> None:
        self._lines = lines
        self._last: dict[tuple[str, str], tuple[str, float]] = {}

    def __call__(self, step: Progress) -> None:
        key, now = (step.image, step.layer), time.monotonic()
        last = self._last.get(key)
        if last and last[0] == step.status and now - last[1] < THROTTLE:
            return
        self._last[key] = (step.status, now)
        self._lines.put(json.dumps({"progress": step.to_dict()}) + "\n")


def run_with_progress(work: Callable[[ProgressSink], dict], *, name: str) -> AsyncIterator[bytes]:
    """Start ``work`` in a thread; the returned generator yields its progress, then its outcome."""
    lines: queue.Queue = queue.Queue()
    thread = threading.Thread(target=_run, args=(work, lines), name=name, daemon=True)
    thread.start()
    return _drain(lines)


def _run(work: Callable[[ProgressSink], dict], lines: queue.Queue) -> None:
    try:
        outcome = {"result": work(_Throttled(lines))}
    except FlotillaError as exc:
        outcome = {"error": exc.to_dict()}
    except Exception as exc:  # a bug: answered, logged, never a dead stream
        log.exception("streamed request failed")
        outcome = {"error": {"error": "internal", "message": f"internal error ({type(exc).__name__}); "
                                                            "the daemon's log has the details"}}
    lines.put(json.dumps(outcome) + "\n")
    lines.put(_DONE)


async def _drain(lines: queue.Queue) -> AsyncIterator[bytes]:
    while True:
        batch, finished = [], False
        while not lines.empty():
            item = lines.get_nowait()
            if item is _DONE:
                finished = True
                break
            batch.append(item)
        if batch:
            yield "".join(batch).encode()
        if finished:
            return
        await anyio.sleep(POLL)
