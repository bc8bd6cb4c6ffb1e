"""What the cache keeper last saw of every cache, for the parts that read it.

The keeper writes here twice a second; ``ps`` and the runtime spec (which
cache nodes outside the shape must stay) read. Keeping this apart from the
keeper means readers depend on data, not on the loop that produces it, and
the keeper depends on them without a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from flotilla.addons.redis_cluster import ObservedNode


@dataclass(frozen=True)
class CacheState:
    """One cache as last observed: its own nodes (never strangers), whether it is ready, and why (not)."""

    nodes: tuple[ObservedNode, ...] = ()
    ready: bool = False
    reason: str = "not observed yet"
    pending: tuple[str, ...] = field(default=())  # the reasons of the steps planned last
    # Ids of nodes that answered the keeper at one of the cache's containers, and
    # of strangers found in the cluster (addons/redis_cluster/keep.py): both
    # carried from pass to pass for as long as the daemon runs.
    known_ids: frozenset[str] = frozenset()
    strangers: tuple[ObservedNode, ...] = ()  # in the cluster at the last look
    stranger_ids: frozenset[str] = frozenset()
    # When slots last moved off each shard, and the nodes that stay a while for it (keep.Steps.resting).
    moved_off: Mapping[int, float] = field(default_factory=dict)
    resting: frozenset[str] = frozenset()


class CacheStates:
    """Per (app, cache), the latest ``CacheState``; thread-safe."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], CacheState] = {}
        self._lock = threading.Lock()

    def get(self, app: str, cache: str) -> CacheState | None:
        """The latest state of ``cache``; None before the keeper first looked."""
        with self._lock:
            return self._states.get((app, cache))

    def put(self, app: str, cache: str, state: CacheState) -> CacheState:
        """Keep ``state``; returns the one it replaces (an empty state at first)."""
        with self._lock:
            before = self._states.get((app, cache), CacheState())
            self._states[(app, cache)] = state
        return before

    def forget_app(self, app: str) -> None:
        with self._lock:
            for key in [k for k in self._states if k[0] == app]:
                del self._states[key]
