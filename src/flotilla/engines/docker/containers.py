"""What a replica's container looks like, computed from the spec.

Separated from the engine's I/O so that the mapping from spec to container
(labels, environment, limits, networks and their DNS aliases, no published
ports, the hardened defaults) can be read and tested on its own. A cache node is on its cache's own
network and nowhere else; a service listing the cache joins that network as
well as the app's, so no other replica can open a connection to a node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from flotilla import labels
from flotilla.naming import (
    cache_network,
    cache_of_addon,
    container_name,
    egress_network,
    internal_network,
    replica_name,
    volume_name,
)
from flotilla.spec import AppSpec, ServiceSpec
from flotilla.spec.images import image_to_run
from flotilla.spec.models import VolumeSpec

LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"
# On an internal network Docker's DNS has nowhere to forward a name it does not
# know and never answers, so the resolver waits 2 x 5 s: a client looking up a
# replica that is being replaced (a Redis node mid-failover) would stall for
# 10 s. One try of one second bounds that; egress services keep the defaults.
INTERNAL_DNS_OPTIONS = ("timeout:1", "attempts:1")
# A read-only root's scratch space: writable by any user (mode 1777, Docker's
# default), never a place for setuid binaries or device files.
TMP_OPTIONS = "rw,nosuid,nodev,size=64m"


@dataclass(frozen=True)
class MountSpec:
    """One mount of a replica, given to Docker as a ``Mount`` object.

    Never as a ``src:dst:mode`` string: in that syntax a ``:`` in a path the
    spec names would inject a mode, or split the path.
    """

    kind: str  # "bind" (a host file or directory) or "volume" (a named volume)
    source: str
    target: str
    read_only: bool

    @classmethod
    def bind(cls, source: str, target: str) -> MountSpec:
        """A host path, read-only: how secrets reach a replica."""
        return cls(kind="bind", source=source, target=target, read_only=True)

    @classmethod
    def volume(cls, name: str, target: str, *, read_only: bool = False) -> MountSpec:
        return cls(kind="volume", source=name, target=target, read_only=read_only)

    @classmethod
    def of(cls, name: str, spec: VolumeSpec) -> MountSpec:
        """A spec volume's mount: the slot's named volume ``name``, or the host path it binds."""
        if spec.bind:
            return cls(kind="bind", source=spec.bind, target=spec.path, read_only=spec.read_only)
        return cls.volume(name, spec.path, read_only=spec.read_only)

    def to_docker(self) -> dict:
        """Docker API's ``Mount`` (what ``docker.types.Mount`` builds): fields, not a string to parse."""
        return {"Type": self.kind, "Source": self.source, "Target": self.target, "ReadOnly": self.read_only}


@dataclass(frozen=True)
class SlotVolume:
    """A named volume of one replica slot, created (with these labels) before its container."""

    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class Hardening:
    """How little a replica's process may do: Flotilla's defaults and the spec's exceptions.

    Every replica drops every capability (giving back only ``cap_add``), runs
    with ``no-new-privileges`` (no setuid binary or file capability raises it),
    under a pids limit, and with core dumps off (a crash must not write the
    process's memory, secrets included, to Docker's data root).
    """

    user: str | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    pids_limit: int | None = None

    @classmethod
    def of(cls, svc: ServiceSpec) -> Hardening:
        return cls(user=svc.user, read_only=svc.read_only, cap_add=svc.cap_add, pids_limit=svc.pids_limit)

    def host_options(self) -> dict:
        """The fields of Docker's HostConfig (``create_host_config`` keywords)."""
        return {
            "cap_drop": ["ALL"],
            "cap_add": list(self.cap_add) or None,
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.pids_limit,
            "ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}],
            "read_only": self.read_only,
            "tmpfs": {"/tmp": TMP_OPTIONS} if self.read_only else None,
        }


@dataclass(frozen=True)
class ReplicaContainerConfig:
    name: str
    hostname: str
    image: str
    command: tuple[str, ...] | None
    environment: dict[str, str]
    labels: dict[str, str]
    nano_cpus: int | None
    mem_limit: int | None
    network: str
    aliases: tuple[str, ...]
    extra_networks: tuple[str, ...]
    mounts: tuple[MountSpec, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    volumes: tuple[SlotVolume, ...] = ()  # the slot's own named volumes, created before the container
    dns_options: tuple[str, ...] = ()
    hardening: Hardening = Hardening()

    def create_kwargs(self, api) -> dict:
        host_config = api.create_host_config(
            init=True,
            nano_cpus=self.nano_cpus,
            mem_limit=self.mem_limit,
            network_mode=self.network,
            log_config={"type": "json-file", "config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES}},
            restart_policy={"Name": "no"},
            mounts=[m.to_docker() for m in self.mounts] or None,
            dns_opt=list(self.dns_options) or None,
            **self.hardening.host_options(),
        )
        return {
            "image": self.image,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "command": list(self.command) if self.command else None,
            "name": self.name,
            "hostname": self.hostname,
            "environment": self.environment,
            "labels": self.labels,
            "user": self.hardening.user,
            "host_config": host_config,
        }

    def networking(self, api) -> dict:
        return api.create_networking_config(
            {self.network: api.create_endpoint_config(aliases=list(self.aliases))}
        )


@dataclass(frozen=True)
class Overrides:
    """What the daemon adds to a replica beyond its spec: mounts, a wrapped command."""

    mounts: tuple[MountSpec, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None


def replica_container_config(
    *,
    spec: AppSpec,
    service: str,
    index: int,
    config_hash: str,
    overrides: Overrides = Overrides(),
    owner: Mapping[str, str] | None = None,
) -> ReplicaContainerConfig:
    """The container of one replica; ``owner`` is the owning home's labels (default: ``labels.owned``)."""
    svc = spec.services[service]
    replica = replica_name(service, index)
    environment = {
        **svc.env,
        "FLOTILLA_APP": spec.app,
        "FLOTILLA_SERVICE": service,
        "FLOTILLA_REPLICA": replica,
    }
    owner = owner or labels.owned(spec.app, role="replica")
    names = {volume: volume_name(app=spec.app, service=service, index=index, volume=volume) for volume in svc.volumes}
    return ReplicaContainerConfig(
        name=container_name(app=spec.app, service=service, index=index, config_hash=config_hash),
        hostname=replica,
        image=image_to_run(spec, svc),  # the id the deploy pinned: every replica runs the same bytes
        command=overrides.command or svc.command,
        entrypoint=overrides.entrypoint,
        mounts=(*overrides.mounts, *(MountSpec.of(names[volume], v) for volume, v in svc.volumes.items())),
        volumes=tuple(SlotVolume(names[volume], volume_labels(owner, service=service, index=index, volume=volume,
                                                              retain=svc.addon is None))
                      for volume in svc.named_volumes),
        environment=environment,
        labels={
            **owner,
            labels.SERVICE: service,
            labels.REPLICA: str(index),
            labels.CONFIG_HASH: config_hash,
        },
        nano_cpus=int(svc.resources.cpus * 1e9) if svc.resources.cpus else None,
        mem_limit=svc.resources.memory,
        network=home_network(spec.app, svc),
        aliases=(service, replica),
        extra_networks=extra_networks(spec.app, svc),
        dns_options=() if svc.egress else INTERNAL_DNS_OPTIONS,
        hardening=Hardening.of(svc),
    )


def volume_labels(owner: Mapping[str, str], *, service: str, index: int, volume: str, retain: bool
                  ) -> dict[str, str]:
    """A slot volume's labels: the owner's (as a volume), its service, slot and name; ``retain`` for a spec's."""
    return {**owner, labels.ROLE: "volume", labels.SERVICE: service, labels.REPLICA: str(index),
            labels.VOLUME: volume, **({labels.RETAIN: "true"} if retain else {})}


def task_container_config(
    *, spec: AppSpec, service: str, name: str, task_labels: Mapping[str, str], overrides: Overrides,
    owner: Mapping[str, str],
) -> ReplicaContainerConfig:
    """A one-off container (daemon/tasks.py) of ``service`` as ``spec`` has it: the replica's image, env,
    limits, networks and hardening, under its own name, with no DNS alias (nobody calls a task) and no volume."""
    base = replica_container_config(spec=spec, service=service, index=0, config_hash="task", overrides=overrides,
                                    owner=owner)
    return replace(base, name=name, hostname=name.replace("_", "-")[:63], aliases=(), mounts=overrides.mounts,
                   volumes=(),
                   labels={**owner, labels.SERVICE: service, **task_labels},
                   environment={k: v for k, v in base.environment.items() if k != "FLOTILLA_REPLICA"})


@dataclass(frozen=True)
class TaskContainer:
    """A task container as observed: its labels say what it runs for."""

    container_id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None
    created: bool = False  # created and never started (a job run prepared ahead of its time)


def home_network(app: str, svc: ServiceSpec) -> str:
    """Where a replica lives and is found by name: a cache node on its cache's own network only, else the app's."""
    cache = cache_of_addon(svc.addon)
    return cache_network(app, cache) if cache else internal_network(app)


def extra_networks(app: str, svc: ServiceSpec) -> tuple[str, ...]:
    """The networks a replica joins besides its own: each cache it lists, and the way out if it has egress."""
    return (*(cache_network(app, c) for c in svc.caches), *((egress_network(app),) if svc.egress else ()))
