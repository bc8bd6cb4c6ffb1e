"""The record of what Flotilla did and why, as users read it in `flotilla events`.

Wraps the store so that repeated notes (the same hold reason, the same error
on every resync) are written once, not every few seconds.
"""

from __future__ import annotations

import logging
import threading

from flotilla.daemon.store import Event, Store

log = logging.getLogger("flotilla.events")


class EventLog:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_note: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def record(self, app: str, kind: str, subject: str, message: str) -> Event:
        log.info("%s %s %s: %s", app, kind, subject, message)
        return self._store.add_event(app=app, kind=kind, subject=subject, message=message)

    def note_hold(self, app: str, replica: str, reason: str) -> None:
        self._note(app, "hold", replica, reason)

    def note_error(self, app: str, message: str) -> None:
        self._note(app, "error", app, message)

    def _note(self, app: str, kind: str, subject: str, message: str) -> None:
        key = (app, kind, subject)
        # Hold reasons carry a countdown; compare them without digits.
        shape = "".join(c for c in message if not c.isdigit())
        with self._lock:
            if self._last_note.get(key) == shape:
                return
            self._last_note[key] = shape
        self.record(app, kind, subject, message)
