"""The record of what Flotilla did and why, as users read it in `flotilla events`.

Wraps the store so that repeated notes (the same hold reason, the same error
on every resync) are written once, not every few seconds. Every message is
scrubbed here, the one door into the events (and so into ``state.db``, the
daemon's log, ``flotilla events`` and ``up``): messages carry what replicas
printed, which may hold the app's secrets and terminal escape sequences.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from flotilla.daemon.store import Event, Store
from flotilla.secrets.scrub import scrub, strip_controls

log = logging.getLogger("flotilla.events")
WITHHELD = "(message withheld: the app's secrets could not be read to scrub it; the daemon log says why)"


def _no_secrets(app: str) -> Iterable[bytes]:
    return ()


class EventLog:
    def __init__(self, store: Store, *, secret_values: Callable[[str], Iterable[bytes]] = _no_secrets) -> None:
        self._store = store
        self._secret_values = secret_values
        self._last_note: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def record(self, app: str, kind: str, subject: str, message: str) -> Event:
        message, subject = self._scrubbed(app, message), strip_controls(subject)
        log.info("%s %s %s: %s", app, kind, subject, message)
        return self._store.add_event(app=app, kind=kind, subject=subject, message=message)

    def _scrubbed(self, app: str, message: str) -> str:
        try:
            return scrub(message, self._secret_values(app))
        except Exception as exc:  # noqa: BLE001 - never record what could not be scrubbed
            log.warning("cannot read the secrets of %s to scrub an event: %s", app, strip_controls(str(exc)))
            return WITHHELD

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
