"""When the reconciler runs, and the daemon's threads: wake-ups and loops.

Anything may ask for an app to be reconciled (a new spec, a Docker event, a
health change, a back-off that ends); asks are merged into one set of dirty
apps that the reconcile loop takes in one batch. A back-off hold asks for a
wake-up at the moment it ends, and with nothing asked the loop resyncs every
app on a timer. ``Loops`` starts every background thread of the daemon and
stops them together; each loop is a function of one stop event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

RESYNC_INTERVAL = 5.0
# Docker sends ``die`` a moment before its container list shows the container as exited.
EVENT_RECHECKS = (0.05, 0.25)
Loop = Callable[[threading.Event], None]


class Wakeups:
    """The dirty set, the timed wake-ups, and the event the reconcile loop waits on."""

    def __init__(self, *, clock: Callable[[], float], resync_interval: float = RESYNC_INTERVAL) -> None:
        self._clock = clock
        self._resync = resync_interval
        self._dirty: set[str] = set()
        self._at: dict[str, float] = {}  # app -> when its earliest back-off hold ends
        self._lock = threading.Lock()
        self._event = threading.Event()

    def trigger(self, app: str) -> None:
        """Reconcile ``app`` as soon as the loop is free."""
        with self._lock:
            self._dirty.add(app)
        self._event.set()

    def trigger_all(self, apps: Iterable[str]) -> None:
        for app in apps:
            self.trigger(app)

    def trigger_soon(self, app: str) -> None:
        """Reconcile now and again shortly (see EVENT_RECHECKS)."""
        self.trigger(app)
        for delay in EVENT_RECHECKS:
            timer = threading.Timer(delay, self.trigger, args=(app,))
            timer.daemon = True
            timer.start()

    def wake_at(self, app: str, when: float | None) -> None:
        """Reconcile ``app`` at ``when`` (a clock reading); None cancels."""
        with self._lock:
            if when is None:
                self._at.pop(app, None)
            else:
                self._at[app] = when

    def interrupt(self) -> None:
        """Wake the loop at once (to see a stop)."""
        self._event.set()

    def wait(self) -> set[str] | None:
        """Block until something is asked or a wake-up is due; the dirty apps (None: a timed resync)."""
        self._event.wait(self._wait_time())
        self._event.clear()
        with self._lock:
            apps, self._dirty = self._dirty, set()
        return apps or None

    def _wait_time(self) -> float:
        now = self._clock()
        with self._lock:
            upcoming = [t - now for t in self._at.values() if t > now]  # past ones already woke a pass
        return min([self._resync, *upcoming])


class Loops:
    """The daemon's background threads, started together and stopped by one event."""

    def __init__(self, loops: Iterable[tuple[str, Loop]]) -> None:
        self._loops = list(loops)
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, loop in self._loops:
            thread = threading.Thread(target=loop, args=(self.stop_event,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
