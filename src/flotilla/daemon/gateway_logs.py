"""The gateway's access log over the API: the lines of one app (or service), its tail, then new ones.

``flotilla logs --gateway`` reads this. The daemon owns the file (the
gateway's ``access.log``, rotated by ``AccessLog.run`` in the daemon's loops);
this streams its entries as JSON lines, each with the ``app`` and ``service``
its backend names. Reading blocks on the disk, so it runs in a worker
thread; a following client waits on the event loop between looks, so it
costs a socket, not a thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio

from flotilla.gateway.accesslog import AccessLog, Entry

POLL = 0.2  # seconds between looks for new lines when following


def entry_filter(app: str | None, service: str | None) -> Callable[[Entry], bool]:
    """Entries of ``app`` (every entry with None), and of its ``service`` when one is named."""
    def keep(entry: Entry) -> bool:
        return (app is None or entry["app"] == app) and (service is None or entry["service"] == service)
    return keep


async def stream_access_log(access_log: AccessLog, *, keep: Callable[[Entry], bool], tail: int | None,
                            follow: bool) -> AsyncIterator[bytes]:
    """The last ``tail`` entries (every one kept with None), then, with ``follow``, each new one."""
    follower = access_log.follower()
    recent = await anyio.to_thread.run_sync(lambda: access_log.tail(tail, keep=keep, end=follower.offset))
    if recent:
        yield _json_lines(recent)
    while follow:
        await anyio.sleep(POLL)
        new = [e for e in await anyio.to_thread.run_sync(follower.read) if keep(e)]
        if new:
            yield _json_lines(new)


def _json_lines(entries: list[Entry]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries)
