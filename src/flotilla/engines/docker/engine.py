"""The single-host engine: the only module that talks to Docker Engine.

Everything Flotilla does on one host goes through ``DockerEngine``: observe
what carries an app's labels, create and remove replicas and networks, stream
events and logs. Docker SDK errors never leave this module; they are
translated into Flotilla's error tree with a sentence that says what to do.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import docker
import docker.errors
import requests.exceptions

from flotilla import labels
from flotilla.engines.docker import attach, volumes
from flotilla.engines.docker.attach import Attached
from flotilla.engines.docker.containers import (
    Overrides,
    TaskContainer,
    replica_container_config,
    task_container_config,
)
from flotilla.engines.docker.firewall import BRIDGE_OPTION, HostFirewall, bridge_name
from flotilla.errors import EngineError, EngineUnavailableError, NotFoundError
from flotilla.naming import cache_of_network, internal_network
from flotilla.plan.model import Observed, ObservedReplica
from flotilla.spec import AppSpec

log = logging.getLogger(__name__)
UNAVAILABLE_HINT = (
    "Docker Engine is not reachable{where}. Start it (run `scripts/setup.sh`, "
    "`systemctl start docker`, or `dockerd &` as root) and try again."
)
STOP_TIMEOUT = 10
_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")


@dataclass(frozen=True)
class EngineEvent:
    """A container of some app changed state (Docker's ``die``, ``start``...)."""

    app: str
    container_id: str
    action: str


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn Docker SDK errors raised while ``doing`` into Flotilla errors."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"while {doing}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise EngineError(f"Docker refused {doing}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise EngineUnavailableError(UNAVAILABLE_HINT.format(where=f" ({exc})")) from exc


class DockerEngine:
    """Observe and change one host's containers and networks, by label."""

    def __init__(
        self, *, home: str, home_path: str = "", base_url: str | None = None, timeout: int = 60,
        firewall: HostFirewall | None = None,
    ) -> None:
        self.home = home  # the owner label this engine stamps and filters by (labels.HOME)
        self._home_path = home_path
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._shells: dict[str, bool] = {}
        self._firewall = firewall or HostFirewall()

    @property
    def _api(self) -> docker.APIClient:
        with self._lock:
            if self._client is None:
                with translated("connecting to Docker Engine"):
                    if self._base_url:
                        self._client = docker.DockerClient(base_url=self._base_url, timeout=self._timeout)
                    else:
                        self._client = docker.from_env(timeout=self._timeout)
            return self._client.api

    def sdk(self) -> docker.APIClient:
        """The shared SDK client, for engines/docker/images.py (this package's other Docker SDK user)."""
        return self._api

    def fresh_sdk(self) -> docker.APIClient:
        """A new SDK client of the same Docker Engine, for a call whose state must not stay in the shared one."""
        with translated("connecting to Docker Engine"):
            if self._base_url:
                return docker.APIClient(base_url=self._base_url, timeout=self._timeout)
            return docker.from_env(timeout=self._timeout).api

    def ping(self) -> None:
        with translated("a ping"):
            self._api.ping()

    def remaps_users(self) -> bool:
        """Whether Docker runs containers in a user namespace of their own (``--userns-remap``).

        Without it a replica's uid is the same uid on the host, so a host user
        with that uid can read the replica's /proc/PID/environ and its files.
        """
        with translated("asking Docker Engine for its security options"):
            options = self._api.info().get("SecurityOptions") or []
        return any("name=userns" in option.split(",") for option in options)

    # -- observe -----------------------------------------------------------

    def observe(self, app: str) -> Observed:
        with translated(f"listing the containers of {app}"):
            containers = self._api.containers(all=True, filters={"label": self._mine(app)})
            networks = self._api.networks(filters={"label": self._mine(app)})
        replicas = tuple(
            _observed_replica(c) for c in containers if c["Labels"].get(labels.ROLE) == "replica"
        )
        return Observed(app=app, replicas=replicas, networks=frozenset(n["Name"] for n in networks))

    def apps(self) -> set[str]:
        """Every app that has a labelled container or network on this host."""
        with translated("listing Flotilla's objects"):
            containers, networks, volumes = self._labelled(self._mine())
        return {o["Labels"][labels.APP] for o in [*containers, *networks, *volumes]}

    def foreign_owner(self, app: str) -> str | None:
        """The home (its path, else its id) of another daemon that has objects of ``app`` here, if any."""
        with translated(f"listing the objects of {app}"):
            found = [o for kind in self._labelled([f"{labels.APP}={app}"]) for o in kind]
        others = [o["Labels"] for o in found if (o["Labels"] or {}).get(labels.HOME) != self.home]
        if not others:
            return None
        return others[0].get(labels.HOME_PATH) or others[0].get(labels.HOME) or "a Flotilla without home labels"

    def _labelled(self, label_filter: list[str]) -> tuple[list, list, list]:
        containers = self._api.containers(all=True, filters={"label": label_filter})
        networks = self._api.networks(filters={"label": label_filter})
        volumes = self._api.volumes(filters={"label": label_filter}).get("Volumes") or []
        return containers, networks, volumes

    def _mine(self, app: str | None = None) -> list[str]:
        """Docker label filters (ANDed) for this home's objects, of ``app`` or of every app."""
        return [f"{labels.APP}={app}" if app else labels.APP, f"{labels.HOME}={self.home}"]

    def _owned(self, app: str, *, role: str) -> dict[str, str]:
        return labels.owned(app, role=role, home=self.home, home_path=self._home_path)

    def missing_images(self, images: set[str]) -> list[str]:
        missing = []
        for image in sorted(images):
            try:
                with translated(f"inspecting image {image}"):
                    self._api.inspect_image(image)
            except NotFoundError:
                missing.append(image)
        return missing

    def image_id(self, image: str) -> str:
        """The image's ID (``sha256:...``), recorded in a revision until images are pinned by digest."""
        with translated(f"inspecting image {image}"):
            return str(self._api.inspect_image(image).get("Id") or "")

    def image_command(self, image: str) -> tuple[list[str], list[str]]:
        """The image's own (entrypoint, cmd), to run them behind a wrapper."""
        with translated(f"inspecting image {image}"):
            config = self._api.inspect_image(image).get("Config") or {}
        return list(config.get("Entrypoint") or []), list(config.get("Cmd") or [])

    def image_has_shell(self, image: str) -> bool:
        """Whether ``image`` has /bin/sh (looked at in a created, never started, container)."""
        with self._lock:
            cached = self._shells.get(image)
        if cached is not None:
            return cached
        api = self._api
        with translated(f"looking for /bin/sh in image {image}"):
            probe = api.create_container(image, command=["/bin/sh"], labels={labels.MANAGED_BY: "flotilla"})
            try:
                api.get_archive(probe["Id"], "/bin/sh")
                found = True
            except docker.errors.NotFound:
                found = False
            finally:
                api.remove_container(probe["Id"], force=True)
        with self._lock:
            self._shells[image] = found
        return found

    def cpu_seconds(self, container_id: str) -> float | None:
        """CPU time the container has used so far, in seconds (None if unknown).

        Read from the container's cgroup, which costs no Docker API call: the
        autoscaler asks for every replica every second.
        """
        for path in _cpu_accounting_paths(container_id):
            try:
                text = Path(path).read_text()
            except OSError:
                continue
            return _parse_cpu_usage(path, text)
        return None

    # -- change ------------------------------------------------------------

    def guard_host(self) -> None:
        """Keep replicas off the host's addresses (engines/docker/firewall.py), bridges of older networks too.

        The chain is made even when Docker is down; the older networks' bridges
        are then guarded at the next start.
        """
        self._firewall.guard()
        try:
            with translated("listing Flotilla's networks"):
                networks = self._api.networks(filters={"label": self._mine()})
        except EngineUnavailableError as exc:
            log.warning("bridges of existing networks not checked: %s", exc)
            return
        self._firewall.guard_bridges(_bridge_of(n) for n in networks)

    def ensure_network(self, *, app: str, name: str, internal: bool) -> None:
        self._firewall.guard()  # before the first replica can reach the bridge
        with translated(f"creating network {name}"):
            existing = self._api.networks(names=[name])
            for net in existing:
                if net["Name"] == name:
                    net_labels = net.get("Labels") or {}
                    if net_labels.get(labels.APP) != app or net_labels.get(labels.HOME) != self.home:
                        raise EngineError(
                            f"network {name} exists but was not created by this Flotilla for {app}; "
                            f"remove or rename it (docker network rm {name}), "
                            f"or deploy {app} from the home that owns it"
                        )
                    return
            self._api.create_network(
                name,
                driver="bridge",
                internal=internal,
                labels=self._owned(app, role="network"),
                options={BRIDGE_OPTION: bridge_name(name)},
                check_duplicate=True,
            )

    def create_replica(
        self, *, spec: AppSpec, service: str, index: int, config_hash: str, overrides: Overrides = Overrides()
    ) -> ObservedReplica:
        """Create and start one replica; returns it as observed right after its start.

        Creating a replica that already exists (same slot and config) returns
        the existing one, so a plan applied twice does no harm.
        """
        config = replica_container_config(
            spec=spec, service=service, index=index, config_hash=config_hash, overrides=overrides,
            owner=self._owned(spec.app, role="replica"),
        )
        api = self._api
        with translated(f"creating replica {service}-{index} of {spec.app}"):
            for volume in config.volumes:
                api.create_volume(volume.name, labels=volume.labels)
            try:
                created = api.create_container(
                    **config.create_kwargs(api), networking_config=config.networking(api)
                )
                container_id = created["Id"]
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                container_id = self._own_existing(config.name)
            for network in config.extra_networks:
                self._connect(container_id, network)
            api.start(container_id)
            started = api.inspect_container(container_id)
        return _inspected_replica(started)

    # -- tasks: one-off runs, job runs, before_deploy (daemon/tasks.py) -------

    def start_task(self, *, spec: AppSpec, service: str, name: str, task_labels: Mapping[str, str],
                   overrides: Overrides = Overrides(), tty: bool = False, stdin: bool = False,
                   start: bool = True) -> str:
        """Create and start (unless not ``start``) a task container; one of that name that is already ours
        is returned as it is (a job run is named after its schedule time, so a run is never started twice).
        ``stdin``: its standard input stays open for an attached client (``attach_task``), closed when that
        client closes it."""
        config = task_container_config(spec=spec, service=service, name=name, task_labels=task_labels,
                                       overrides=overrides, owner=self._owned(spec.app, role="task"))
        api = self._api
        with translated(f"starting task {name} of {spec.app}"):
            try:
                created = api.create_container(**config.create_kwargs(api), tty=tty,
                                               stdin_open=stdin, networking_config=config.networking(api))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                return self._own_existing(name)
            for network in config.extra_networks:
                self._connect(created["Id"], network)
            if start:
                api.start(created["Id"])
        return created["Id"]

    def start_created(self, container_id: str) -> None:
        """Start a task container created ahead of its time (``start_task(start=False)``)."""
        with translated(f"starting task {container_id[:12]}"):
            self._api.start(container_id)

    def tasks(self, app: str) -> list[TaskContainer]:
        """The app's task containers, running or exited."""
        with translated(f"listing the tasks of {app}"):
            found = self._api.containers(all=True, filters={"label": [*self._mine(app), f"{labels.ROLE}=task"]})
        return [TaskContainer(container_id=c["Id"], name=c["Names"][0].lstrip("/"), labels=c["Labels"] or {},
                              running=c.get("State") in ("running", "created", "restarting"),
                              exit_code=_exit_code(c), created=c.get("State") == "created") for c in found]

    def wait_task(self, container_id: str, *, timeout: float) -> int | None:
        """The task's exit code once it ends; None if it still runs after ``timeout`` seconds."""
        with translated(f"waiting for task {container_id[:12]}"):
            try:
                return int(self.fresh_sdk().wait(container_id, timeout=timeout)["StatusCode"])
            except requests.exceptions.ReadTimeout:
                return None

    def stop_task(self, container_id: str, *, grace: int) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds; the container stays, with its exit code and output."""
        with translated(f"stopping task {container_id[:12]}"):
            with contextlib.suppress(docker.errors.NotFound):
                self._api.stop(container_id, timeout=grace)

    def run_in(self, container_id: str, command: list[str], *, tty: bool = False) -> tuple[str, Iterator[bytes]]:
        """``flotilla exec``: start ``command`` in a running container; (exec id, its output as it comes)."""
        with translated(f"running a command in {container_id[:12]}"):
            created = self._api.exec_create(container_id, command, stdout=True, stderr=True, tty=tty)
            return created["Id"], self._api.exec_start(created["Id"], stream=True, tty=tty)

    def attach_task(self, container_id: str, *, tty: bool) -> Attached:
        """The standard streams of a task created with ``stdin`` and not yet started (``start_created``)."""
        with translated(f"attaching to task {container_id[:12]}"):
            return attach.attach_container(self._api, container_id, tty=tty)

    def exec_attached(self, container_id: str, command: list[str], *, tty: bool) -> tuple[str, Attached]:
        """``flotilla exec -i``: start ``command`` in a running container, its standard input open."""
        with translated(f"running a command in {container_id[:12]}"):
            return attach.exec_attached(self._api, container_id, command, tty=tty)

    def exec_exit_code(self, exec_id: str, *, wait: float = 0.0) -> int | None:
        """The exit code of an exec'd command; waits up to ``wait`` seconds for it to be known (a
        command whose output just closed may not have been reaped yet)."""
        deadline = time.monotonic() + wait
        with translated("reading a command's exit code"):
            while True:
                found = self._api.exec_inspect(exec_id)
                if not found.get("Running") or time.monotonic() >= deadline:
                    return found.get("ExitCode")
                time.sleep(0.05)

    def _connect(self, container_id: str, network: str) -> None:
        """Join ``network`` (a cache's, the egress one); already joined (a plan applied twice) is fine."""
        try:
            self._api.connect_container_to_network(container_id, network)
        except docker.errors.APIError as exc:
            if "already exists" not in str(exc.explanation or exc):
                raise

    def _own_existing(self, name: str) -> str:
        """The id of container ``name`` that already exists (a plan applied twice), if it is ours."""
        existing = self._api.inspect_container(name)
        if (existing["Config"]["Labels"] or {}).get(labels.HOME) != self.home:
            raise EngineError(
                f"container {name} exists but belongs to another Flotilla home or to no Flotilla; "
                f"remove it (docker rm -f {name}) or deploy from the home that owns it"
            )
        return existing["Id"]

    def remove_replica(self, container_id: str, *, graceful: bool, timeout: int = STOP_TIMEOUT) -> None:
        with translated(f"removing container {container_id[:12]}"):
            try:
                if graceful:
                    self._api.stop(container_id, timeout=timeout)
                self._api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                return

    def remove_networks(self, app: str) -> list[str]:
        with translated(f"removing the networks of {app}"):
            networks = self._api.networks(filters={"label": self._mine(app)})
            for net in networks:
                with contextlib.suppress(docker.errors.NotFound):
                    self._api.remove_network(net["Id"])
        return [n["Name"] for n in networks]

    def remove_volumes(self, app: str, *, keep: set[str] = frozenset(), retained: bool = False,
                       in_use_wait: float = 5.0) -> list[str]:
        """Remove the app's volumes but ``keep``, and but the retained ones (a spec's data) unless
        ``retained``; one a container still uses stays.

        Docker can report a volume in use for a moment after the container
        that used it was removed, so "in use" is retried for ``in_use_wait`` s.
        """
        removed = []
        with translated(f"removing the volumes of {app}"):
            for volume in volumes.listed(self._api, self._mine(app), sizes=False):
                if volume.name in keep or (volume.retained and not retained):
                    continue
                if self._remove_volume(volume.name, in_use_wait):
                    removed.append(volume.name)
        return removed

    def _remove_volume(self, name: str, in_use_wait: float) -> bool:
        deadline = time.monotonic() + in_use_wait
        while True:
            try:
                self._api.remove_volume(name)
                return True
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or time.monotonic() > deadline:  # 409: in use
                    log.warning("volume %s not removed: %s", name, exc.explanation or exc)
                    return False
            time.sleep(0.1)

    # -- data (engines/docker/volumes.py) ------------------------------------

    def list_volumes(self, app: str | None = None, *, sizes: bool = True) -> list[volumes.VolumeInfo]:
        """This home's volumes (of ``app``, or of every app), with Docker's size of each."""
        with translated("listing volumes"):
            return volumes.listed(self._api, self._mine(app), sizes=sizes)

    def archive_volume(self, *, app: str, volume: str, image: str, sink: BinaryIO) -> volumes.StreamResult:
        """The contents of ``volume`` as a tar stream into ``sink``, by a helper container of ``image``."""
        with translated(f"archiving volume {volume}"):
            return volumes.archive(self._api, volume=volume, image=image, sink=sink,
                                   owner=self._owned(app, role="helper"))

    def restore_volume(self, *, app: str, volume: str, image: str, source: BinaryIO) -> volumes.StreamResult:
        """Replace the contents of ``volume`` by the tar stream ``source`` (emptied first)."""
        with translated(f"restoring volume {volume}"):
            volumes.recreate(self._api, volume)
            return volumes.unarchive(self._api, volume=volume, image=image, source=source,
                                     owner=self._owned(app, role="helper"))

    def exec_stream(self, container_id: str, command: tuple[str, ...], *, source: BinaryIO | None = None,
                    sink: BinaryIO | None = None) -> volumes.StreamResult:
        """Run ``command`` in a running replica, streaming ``source`` in and its standard output to ``sink``."""
        with translated(f"running {command[0]} in container {container_id[:12]}"):
            return volumes.exec_stream(self._api, container_id, command, source=source, sink=sink)

    # -- streams -----------------------------------------------------------

    def events(self, stop: threading.Event) -> Iterator[EngineEvent]:
        """Container events of every Flotilla app until ``stop`` is set."""
        with translated("watching Docker events"):
            stream = self._api.events(
                decode=True, filters={"type": "container", "label": self._mine()}
            )
        closer = threading.Thread(target=_close_when, args=(stop, stream), daemon=True)
        closer.start()
        with translated("watching Docker events"):
            for event in stream:
                attrs = event.get("Actor", {}).get("Attributes", {})
                yield EngineEvent(
                    app=attrs.get(labels.APP, ""),
                    container_id=event.get("id", ""),
                    action=event.get("Action", ""),
                )

    def logs(self, container_id: str, *, follow: bool, tail: int | str = "all") -> Iterator[bytes]:
        with translated(f"reading the logs of {container_id[:12]}"):
            yield from self._api.logs(
                container_id, stream=True, follow=follow, tail=tail, stdout=True, stderr=True
            )

    def last_log_lines(self, container_id: str, *, lines: int = 5) -> list[str]:
        """The last lines a (possibly dead) container printed, for error reports."""
        try:
            with translated(f"reading the logs of {container_id[:12]}"):
                raw = self._api.logs(container_id, tail=lines, stdout=True, stderr=True)
        except NotFoundError:
            return []
        return raw.decode(errors="replace").splitlines()[-lines:]


def _bridge_of(network: Mapping) -> str:
    """The host interface of a bridge network: the name Flotilla gave it, else Docker's ``br-`` + id."""
    return (network.get("Options") or {}).get(BRIDGE_OPTION) or f"br-{network['Id'][:12]}"


def _cpu_accounting_paths(container_id: str) -> tuple[str, ...]:
    return (
        f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",  # v1, cgroupfs driver
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage",
        f"/sys/fs/cgroup/docker/{container_id}/cpu.stat",  # v2, cgroupfs driver
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",  # v2, systemd driver
    )


def _parse_cpu_usage(path: str, text: str) -> float | None:
    if path.endswith("cpuacct.usage"):
        return int(text.strip()) / 1e9
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


def _close_when(stop: threading.Event, stream) -> None:
    stop.wait()
    with contextlib.suppress(Exception):
        stream.close()


def _exit_code(container: Mapping) -> int | None:
    match = _EXIT_CODE.search(container.get("Status", ""))
    return int(match.group(1)) if match else None


def _observed_replica(container: Mapping) -> ObservedReplica:
    """From an entry of Docker's container list."""
    match = _EXIT_CODE.search(container.get("Status", ""))
    return _replica(
        container_id=container["Id"],
        name=container["Names"][0],
        container_labels=container["Labels"],
        state=container.get("State", "unknown"),
        networks=(container.get("NetworkSettings") or {}).get("Networks") or {},
        exit_code=int(match.group(1)) if match else None,
    )


def _inspected_replica(container: Mapping) -> ObservedReplica:
    """From ``docker inspect`` of one container."""
    state = container.get("State") or {}
    return _replica(
        container_id=container["Id"],
        name=container["Name"],
        container_labels=container["Config"]["Labels"],
        state=state.get("Status", "unknown"),
        networks=(container.get("NetworkSettings") or {}).get("Networks") or {},
        exit_code=state.get("ExitCode"),
    )


def _replica(
    *, container_id: str, name: str, container_labels: Mapping, state: str, networks: Mapping, exit_code: int | None
) -> ObservedReplica:
    return ObservedReplica(
        container_id=container_id,
        name=name.lstrip("/"),
        service=container_labels.get(labels.SERVICE, ""),
        index=int(container_labels.get(labels.REPLICA, "0") or 0),
        config_hash=container_labels.get(labels.CONFIG_HASH, ""),
        state=state,
        ip=_home_ip(container_labels[labels.APP], networks),
        exit_code=exit_code,
    )


def _home_ip(app: str, networks: Mapping) -> str | None:
    """The address the host reaches a replica at: on the app's network, or a cache node's on its cache's own."""
    home = networks.get(internal_network(app)) or next(
        (net for name, net in sorted(networks.items()) if cache_of_network(app, name)), None) or {}
    return home.get("IPAddress") or None
