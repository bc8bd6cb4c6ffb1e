"""The daemon's ports: what its parts ask of the engine, the prober and the gateway.

The reconciler, the secret injector, the autoscaler and the API need a small
set of calls on the host's containers; ``ReplicaEngine`` names exactly those. The real
implementation is ``engines.docker.DockerEngine``; ``tests/support/
memory_engine.py`` is an in-memory one for unit tests of the reconciler (a
fake of Flotilla's own port, not a mock of Docker, as httpx's MockTransport
is of its BaseTransport). Integration tests always use the real engine.
``HealthSource`` and ``GatewayRoutes`` name what the snapshots and the
reconciler need of the prober and of the gateway, for the same reason.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol

from flotilla.daemon.health import ProbeTarget
from flotilla.engines.docker import EngineEvent
from flotilla.engines.docker.containers import Overrides
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import AppSpec


class ReplicaEngine(Protocol):
    """Observe and change one host's labelled containers, networks and volumes."""

    def observe(self, app: str) -> Observed: ...

    def apps(self) -> set[str]: ...

    def foreign_owner(self, app: str) -> str | None: ...

    def missing_images(self, images: set[str]) -> list[str]: ...

    def image_id(self, image: str) -> str: ...

    def image_command(self, image: str) -> tuple[list[str], list[str]]: ...

    def image_has_shell(self, image: str) -> bool: ...

    def cpu_seconds(self, container_id: str) -> float | None: ...

    def ensure_network(self, *, app: str, name: str, internal: bool) -> None: ...

    def create_replica(
        self, *, spec: AppSpec, service: str, index: int, config_hash: str, overrides: Overrides = ...
    ) -> ObservedReplica: ...

    def remove_replica(self, container_id: str, *, graceful: bool) -> None: ...

    def remove_networks(self, app: str) -> list[str]: ...

    def remove_volumes(self, app: str, *, keep: set[str] = ...) -> list[str]: ...

    def events(self, stop: threading.Event) -> Iterator[EngineEvent]: ...

    def logs(self, container_id: str, *, follow: bool, tail: int | str = ...) -> Iterator[bytes]: ...

    def last_log_lines(self, container_id: str, *, lines: int = ...) -> list[str]: ...


class HealthSource(Protocol):
    """Who knows each replica's health (``daemon/health.py``'s prober)."""

    def set_targets(self, app: str, targets: list[ProbeTarget]) -> None: ...

    def add_target(self, target: ProbeTarget) -> None: ...

    def healthy(self, container_id: str) -> bool | None: ...

    def detail(self, container_id: str) -> str: ...

    def failing(self, container_id: str) -> tuple[float, float | None] | None: ...


class GatewayRoutes(Protocol):
    """What the reconciler tells the gateway (``daemon/traffic.py``): who serves each app."""

    def prime(self, spec: AppSpec, observed: Observed) -> None: ...

    def sync(self, spec: AppSpec, observed: Observed) -> None: ...

    def drain(self, app: str, replica: ObservedReplica) -> None: ...

    def forget(self, app: str) -> None: ...
