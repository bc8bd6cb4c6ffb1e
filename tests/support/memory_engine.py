"""An in-memory implementation of Flotilla's own ports, for unit tests of the reconciler.

``MemoryEngine`` implements ``daemon.ports.ReplicaEngine`` with dicts: it
creates, lists and removes "containers" that carry the same fields the Docker
engine reads from labels, and lets a test do what the world does to a host
(a replica exits, a container is removed behind Flotilla's back). It is a fake
of Flotilla's port, not a mock of Docker: integration tests use the real
Docker Engine. ``FixedHealth`` and ``RecordingRoutes`` stand in for the prober
and the gateway. All three write to one shared ``calls`` list, so a test can
check the order in which a plan was applied.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from flotilla import labels
from flotilla.engines.docker import EngineEvent
from flotilla.engines.docker.containers import Overrides, replica_container_config
from flotilla.engines.docker.volumes import StreamResult, VolumeInfo
from flotilla.naming import container_name
from flotilla.plan import Observed, ObservedReplica
from flotilla.spec import AppSpec


@dataclass
class MemoryEngine:
    """Containers, networks and volumes of every app, in memory."""

    calls: list[tuple] = field(default_factory=list)
    containers: dict[str, tuple[str, ObservedReplica]] = field(default_factory=dict)  # id -> (app, replica)
    networks: dict[str, set[str]] = field(default_factory=dict)
    volumes: dict[str, set[str]] = field(default_factory=dict)
    logs_of: dict[str, list[str]] = field(default_factory=dict)
    foreign: dict[str, str] = field(default_factory=dict)  # app -> the other home that has objects of it
    failing: dict[str, Exception] = field(default_factory=dict)  # app -> what observing it raises (a bug)
    retained: dict[str, set[str]] = field(default_factory=dict)  # app -> volumes `down` keeps
    contents: dict[str, bytes] = field(default_factory=dict)  # volume -> what an archive of it holds
    commands: dict[tuple, tuple[int, bytes, str]] = field(default_factory=dict)  # exec command -> its result
    stdin_of: dict[tuple, bytes] = field(default_factory=dict)  # exec command -> what it was fed
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- what the world does to the host -----------------------------------------------

    def exit(self, container_id: str, *, code: int = 1, output: str = "") -> None:
        """The replica's process exits with ``code`` (it stays listed, as Docker lists it)."""
        app, replica = self.containers[container_id]
        self.containers[container_id] = (app, replace(replica, state="exited", exit_code=code))
        if output:
            self.logs_of[container_id] = output.splitlines()

    def vanish(self, container_id: str) -> None:
        """Someone runs ``docker rm -f`` on the container."""
        del self.containers[container_id]

    def replicas(self, app: str) -> list[ObservedReplica]:
        return sorted((r for a, r in self.containers.values() if a == app), key=lambda r: (r.service, r.index))

    def running(self, app: str, service: str) -> list[ObservedReplica]:
        return [r for r in self.replicas(app) if r.service == service and r.running]

    # -- ReplicaEngine -------------------------------------------------------------------

    def observe(self, app: str) -> Observed:
        if app in self.failing:
            raise self.failing[app]
        return Observed(app=app, replicas=tuple(self.replicas(app)), networks=frozenset(self.networks.get(app, ())))

    def apps(self) -> set[str]:
        return {a for a, _ in self.containers.values()} | set(self.networks) | set(self.volumes)

    def foreign_owner(self, app: str) -> str | None:
        return self.foreign.get(app)

    def missing_images(self, images: set[str]) -> list[str]:
        return []

    def image_id(self, image: str) -> str:
        return f"sha256:{image}"

    def image_command(self, image: str) -> tuple[list[str], list[str]]:
        return [], ["serve"]

    def image_has_shell(self, image: str) -> bool:
        return True

    def cpu_seconds(self, container_id: str) -> float | None:
        return None

    def ensure_network(self, *, app: str, name: str, internal: bool) -> None:
        self.calls.append(("ensure_network", name))
        self.networks.setdefault(app, set()).add(name)

    def create_replica(
        self, *, spec: AppSpec, service: str, index: int, config_hash: str, overrides: Overrides = Overrides()
    ) -> ObservedReplica:
        number = next(self._ids)
        replica = ObservedReplica(
            container_id=f"c{number}", service=service, index=index, config_hash=config_hash, state="running",
            name=container_name(app=spec.app, service=service, index=index, config_hash=config_hash),
            ip=f"10.0.0.{number}",
        )
        self.containers[replica.container_id] = (spec.app, replica)
        self.calls.append(("create", replica.replica, replica.container_id))
        config = replica_container_config(spec=spec, service=service, index=index, config_hash=config_hash)
        for volume in config.volumes:
            self.volumes.setdefault(spec.app, set()).add(volume.name)
            if volume.labels.get(labels.RETAIN) == "true":
                self.retained.setdefault(spec.app, set()).add(volume.name)
        return replica

    def remove_replica(self, container_id: str, *, graceful: bool) -> None:
        found = self.containers.pop(container_id, None)
        self.calls.append(("stop" if graceful else "remove_dead", found[1].replica if found else "?", container_id))

    def remove_networks(self, app: str) -> list[str]:
        return sorted(self.networks.pop(app, set()))

    def remove_volumes(self, app: str, *, keep: set[str] = frozenset(), retained: bool = False) -> list[str]:
        spared = set(keep) | (set() if retained else self.retained.get(app, set()))
        gone = sorted(self.volumes.get(app, set()) - spared)
        self.volumes[app] = spared & self.volumes.get(app, set())
        self.retained[app] = self.retained.get(app, set()) & self.volumes[app]
        return gone

    def list_volumes(self, app: str | None = None, *, sizes: bool = True) -> list[VolumeInfo]:
        return [VolumeInfo(name=name, app=a, service="", replica="", volume="", created="",
                           retained=name in self.retained.get(a, ()), size=len(self.contents.get(name, b"")))
                for a, names in sorted(self.volumes.items()) if app in (None, a) for name in sorted(names)]

    def archive_volume(self, *, app: str, volume: str, image: str, sink: BinaryIO) -> StreamResult:
        self.calls.append(("archive", volume, tuple(r.replica for r in self.replicas(app))))
        sink.write(self.contents.get(volume, b""))
        return StreamResult(exit_code=0, stderr="")

    def restore_volume(self, *, app: str, volume: str, image: str, source: BinaryIO) -> StreamResult:
        self.calls.append(("restore", volume, tuple(r.replica for r in self.replicas(app))))
        self.contents[volume] = source.read()
        return StreamResult(exit_code=0, stderr="")

    def exec_stream(self, container_id: str, command: tuple[str, ...], *, source: BinaryIO | None = None,
                    sink: BinaryIO | None = None) -> StreamResult:
        """Runs ``command`` as a test scripted it in ``commands``: (exit code, stdout, stderr)."""
        self.calls.append(("exec", container_id, command))
        code, out, err = self.commands.get(command, (127, b"", f"{command[0]}: not found"))
        if source is not None:
            self.stdin_of[command] = source.read()
        if sink is not None:
            sink.write(out)
        return StreamResult(exit_code=code, stderr=err)

    def events(self, stop: threading.Event) -> Iterator[EngineEvent]:
        stop.wait()
        return iter(())

    def logs(self, container_id: str, *, follow: bool, tail: int | str = "all") -> Iterator[bytes]:
        return iter([f"{line}\n".encode() for line in self.logs_of.get(container_id, [])])

    def last_log_lines(self, container_id: str, *, lines: int = 5) -> list[str]:
        return self.logs_of.get(container_id, [])[-lines:]


@dataclass
class FixedHealth:
    """A health source where every replica is healthy unless a test says otherwise."""

    unhealthy: set[str] = field(default_factory=set)
    targets: dict[str, object] = field(default_factory=dict)  # container id -> its ProbeTarget
    failing_since: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # id -> (seen, since)

    def set_targets(self, app: str, targets: list) -> None:
        self.targets = {cid: t for cid, t in self.targets.items() if t.app != app}
        self.targets.update({t.container_id: t for t in targets})

    def add_target(self, target) -> None:
        self.targets[target.container_id] = target

    def healthy(self, container_id: str) -> bool | None:
        return container_id not in self.unhealthy

    def detail(self, container_id: str) -> str:
        return "unhealthy" if container_id in self.unhealthy else "ok"

    def failing(self, container_id: str) -> tuple[float, float | None] | None:
        return self.failing_since.get(container_id)


@dataclass
class RecordingRoutes:
    """A gateway that remembers what it was told, into the engine's ``calls``."""

    calls: list[tuple]
    served: dict[str, tuple[str, ...]] = field(default_factory=dict)  # app -> its routed servers' names

    def prime(self, spec: AppSpec, observed: Observed) -> None:
        self.served[spec.app] = _healthy_names(observed)

    def sync(self, spec: AppSpec, observed: Observed) -> None:
        self.served[spec.app] = _healthy_names(observed)

    def drain(self, app: str, replica: ObservedReplica) -> None:
        self.calls.append(("drain", replica.replica, replica.container_id))

    def forget(self, app: str) -> None:
        self.served.pop(app, None)


def _healthy_names(observed: Observed) -> tuple[str, ...]:
    return tuple(r.name for r in observed.replicas if r.running and r.healthy)
