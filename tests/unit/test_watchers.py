"""The Docker event watcher: a broken stream (dockerd restarted) wakes every app once it is back.

Containers that stopped while the stream was down sent their ``die`` to no one, so
without this a replica killed by a dockerd restart would wait for some other wake-up.
"""

from __future__ import annotations

import threading

from flotilla.daemon.watchers import EngineWatcher
from flotilla.engines.docker import EngineEvent
from tests.support.memory_engine import MemoryEngine


class Recorder:
    def __init__(self) -> None:
        self.woken: list[str] = []

    def trigger_all(self, apps) -> None:
        self.woken += sorted(apps)

    def trigger_soon(self, app: str) -> None:
        self.woken.append(f"event:{app}")


class BreakingEngine(MemoryEngine):
    """Its first event stream yields one event and ends (the daemon went away); the second lasts."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    def events(self, stop: threading.Event):
        self.streams += 1
        if self.streams == 1:
            return iter([EngineEvent(app="shop", container_id="c1", action="die")])
        stop.set()
        return iter(())


def test_every_app_is_woken_after_the_stream_broke():
    engine, wakeups = BreakingEngine(), Recorder()
    engine.networks["shop"] = {"flotilla-shop-internal"}
    stop = threading.Event()
    EngineWatcher(engine=engine, wakeups=wakeups).run(stop)
    assert wakeups.woken == ["event:shop", "shop"] and engine.streams == 2
