"""The gateway's control plane: keep HAProxy matching the apps and their replicas.

The daemon calls ``apply`` on every reconcile with every app's spec and the
replicas it wants behind each routed service. Only FlotillaErrors leave this
module: an error from building, rendering or loading the configuration is
translated into a GatewayError here, at the boundary. Route changes (anything but
servers) re-render the configuration and reload HAProxy gracefully; replicas
coming and going are Runtime API changes, no reload, and so is the activator of
a service held at zero (enabled while no replica serves it). ``drain`` takes one
replica out of rotation and waits for its in-flight requests before its
container is stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import replace

from flotilla.errors import FlotillaError, GatewayError, NoFreeSlotError
from flotilla.gateway.certificates import GatewayCertificates
from flotilla.gateway.challenge_map import ensure_challenge_map
from flotilla.gateway.config import (
    ACTIVATOR_SERVER,
    FREE_ADDRESS,
    FREE_PORT,
    build_gateway_config,
    gateway_threads,
    render_config,
)
from flotilla.gateway.model import Backend, GatewayConfig, Server
from flotilla.gateway.process import GatewayFiles, HAProxyProcess
from flotilla.gateway.runtime import RuntimeApi
from flotilla.gateway.sync import (
    DesiredServer,
    ServerChange,
    activator_changes,
    enabled_for_config,
    is_free,
    server_changes,
    slot_of,
)
from flotilla.gateway.workers import DEFAULT_USER, worker_account
from flotilla.spec import AppSpec

log = logging.getLogger(__name__)
DRAIN_TIMEOUT = 10.0
ServiceKey = tuple[str, str]  # (app, service)


class GatewayManager:
    def __init__(
        self,
        *,
        files: GatewayFiles,
        worker_user: str = DEFAULT_USER,
        activator_socket: str | None = None,
        certificates: GatewayCertificates | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.files = files
        self.process = HAProxyProcess(files)
        self.runtime = RuntimeApi(files.runtime_socket)
        self._worker_user = worker_user  # who HAProxy's workers run as (gateway/workers.py)
        self._activator = activator_socket  # None: no scale-from-zero holding
        self._certificates = certificates  # None: no HTTPS listener (gateway/certificates.py)
        self._tls_files = False  # whether certificate files of this gateway may be on the tmpfs
        self._drain_timeout = drain_timeout
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._draining: set[str] = set()  # addresses of replicas being drained
        self._admin: dict[tuple[str, str], str] = {}  # (backend, address) -> admin state
        self._slots: dict[tuple[str, str], str] = {}  # (backend, address) -> slot
        self._backends: dict[ServiceKey, str] = {}

    # -- the whole picture -------------------------------------------------------

    def apply(
        self, apps: Mapping[str, AppSpec], desired: Mapping[ServiceKey, Sequence[DesiredServer]],
        held: Set[ServiceKey] = frozenset(), certificates: Mapping[tuple[str, str], bytes] | None = None,
    ) -> list[ServerChange]:
        """Bring HAProxy in line; returns the server changes made at run time.

        ``held`` names the services whose requests the activator holds (none of
        their replicas serves): their activator server is enabled. ``certificates``
        maps ``(app, certificate name)`` to the PEM bundle (chain and key) the
        app's TLS routes serve: loaded at run time, never by a reload.

        Raises only FlotillaErrors: whatever else building, rendering or loading
        the configuration raises becomes a GatewayError, so a caller that syncs
        one app at a time can make it that app's error and carry on.
        """
        with self._lock, _as_gateway_error("the gateway could not take the routes"):
            return self._apply(apps, desired, held, certificates or {})

    def _apply(
        self, apps: Mapping[str, AppSpec], desired: Mapping[ServiceKey, Sequence[DesiredServer]],
        held: Set[ServiceKey], certificates: Mapping[tuple[str, str], bytes],
    ) -> list[ServerChange]:
        current = self._current_servers()
        config = build_gateway_config(apps, _servers_for_config(desired, current, self._backend_names(apps)),
                                      activator=self._activator, held=held, tls=self._tls_paths(apps))
        self._backends = {(b.app, b.service): b.name for b in config.backends}
        if not config.frontends:
            self.process.stop()
            self._save_structure("")
            self._write_certificates(config, {})
            return []
        wanted = self._write_certificates(config, certificates)  # before HAProxy may read them
        text = self._render(config)
        structure = self._render(_without_servers(config))
        if not self.process.running():
            self.process.start(text)
            self._save_structure(structure)
            return []
        if structure != self._load_structure():
            self.process.reload(text)
            self._save_structure(structure)
            return []
        if config.tls is not None and self._certificates is not None:
            for change in self._certificates.sync(self.runtime, wanted):
                log.info("gateway certificate %s %s: %s", change.op, change.path, change.reason)
        return self._sync(config, desired, current)

    def _tls_paths(self, apps: Mapping[str, AppSpec]):
        if self._certificates is None or not any(spec.gateway.https_port for spec in apps.values()):
            return None
        return self._certificates.paths()

    def _write_certificates(self, config: GatewayConfig, certificates: Mapping[tuple[str, str], bytes]
                            ) -> dict[str, bytes]:
        """The files HAProxy reads at its next (re)start; none left once no listener serves HTTPS."""
        if self._certificates is None:
            return {}
        if config.tls is None:
            if self._tls_files:
                self._certificates.write({})
                self._tls_files = False
            return {}
        wanted = {self._certificates.file_for(app, name): bundle for (app, name), bundle in certificates.items()}
        self._certificates.write(wanted)
        self._tls_files = True
        return wanted

    def backend_of(self, app: str, service: str) -> str | None:
        """The backend serving ``service`` of ``app``, if the service is routed."""
        with self._lock:
            return self._backends.get((app, service))

    def services_by_backend(self) -> dict[str, ServiceKey]:
        with self._lock:
            return {name: key for key, name in self._backends.items()}

    def admin_state(self, backend: str, address: str) -> str | None:
        """``ready``, ``drain`` or ``maint`` for the replica at ``address``, None when not in the gateway."""
        with self._lock:
            return self._admin.get((backend, address))

    def stop(self) -> None:
        with self._lock, _as_gateway_error("the gateway could not stop"):
            self.process.stop()
            self._save_structure("")

    # -- one replica at a time ---------------------------------------------------

    def drain(self, backend: str, address: str) -> None:
        """Stop new requests to the replica at ``address``, wait (bounded) for its
        in-flight ones, then free its slot."""
        with self._lock:
            slot = self._slots.get((backend, address))
            if slot is None:
                return
            self._draining.add(address)
        try:
            self.runtime.set_state(backend, slot, "drain")
            self._wait_idle(backend, slot)
            self.runtime.set_state(backend, slot, "maint")
            self.runtime.set_address(backend, slot, FREE_ADDRESS, FREE_PORT)
        except GatewayError as exc:
            log.warning("draining %s/%s (%s): %s", backend, slot, address, exc.message)
        finally:
            with self._lock:
                self._draining.discard(address)
                self._slots.pop((backend, address), None)
                self._admin.pop((backend, address), None)

    def _wait_idle(self, backend: str, slot: str) -> None:
        deadline = self._clock() + self._drain_timeout
        while self.runtime.sessions(backend, slot) > 0 and self._clock() < deadline:
            self._sleep(0.02)

    # -- internals ---------------------------------------------------------------

    def _current_servers(self) -> dict[str, dict]:
        if not self.process.running():
            return {}
        current = {}
        for backend in set(self._backends.values()) | _backends_in_stats(self.runtime):
            try:
                current[backend] = self.runtime.servers(backend)
            except GatewayError:
                current[backend] = {}
        self._remember(current)
        return current

    def _remember(self, current: Mapping[str, Mapping]) -> None:
        occupied = [(b, slot, s) for b, slots in current.items() for slot, s in slots.items()
                    if not is_free(s) and slot != ACTIVATOR_SERVER]
        self._admin = {(b, s.address): s.admin for b, _, s in occupied}
        self._slots = {(b, s.address): slot for b, slot, s in occupied}

    def _backend_names(self, apps: Mapping[str, AppSpec]) -> dict[ServiceKey, str]:
        config = build_gateway_config(apps, {})
        return {(b.app, b.service): b.name for b in config.backends}

    def _sync(
        self, config: GatewayConfig, desired: Mapping[ServiceKey, Sequence[DesiredServer]], current: dict
    ) -> list[ServerChange]:
        changes: list[ServerChange] = []
        after: list[ServerChange] = []  # the activator leaves rotation only once the replicas are in it
        for backend in config.backends:
            wanted = desired.get((backend.app, backend.service), ())
            slots = current.get(backend.name, {})
            enable, disable = activator_changes(backend.name, held=backend.held, current=slots.get(ACTIVATOR_SERVER))
            changes, after = enable + changes, after + disable
            try:
                changes += server_changes(backend.name, wanted, slots, draining=self._draining)
            except NoFreeSlotError as exc:
                log.warning("%s", exc)
        changes += after
        for change in changes:
            self._execute(change)
        self._remember(self._current_servers_of(config))
        return changes

    def _current_servers_of(self, config: GatewayConfig) -> dict[str, dict]:
        current = {}
        for backend in config.backends:
            try:
                current[backend.name] = self.runtime.servers(backend.name)
            except GatewayError:
                current[backend.name] = {}
        return current

    def _execute(self, change: ServerChange) -> None:
        try:
            if change.op in ("assign", "release"):
                self.runtime.set_address(change.backend, change.slot, change.address, change.port)
            else:
                self.runtime.set_state(change.backend, change.slot, change.op)
        except GatewayError as exc:
            log.warning("gateway %s %s/%s (%s): %s", change.op, change.backend, change.slot, change.reason, exc.message)

    def _render(self, config: GatewayConfig) -> str:
        ensure_challenge_map(self.files.challenge_map)
        return render_config(config, runtime_socket=str(self.files.runtime_socket),
                             workers=worker_account(self._worker_user),
                             challenge_map=str(self.files.challenge_map),
                             threads=gateway_threads(len(os.sched_getaffinity(0))))

    def _load_structure(self) -> str:
        try:
            return (self.files.root / "structure.cfg").read_text()
        except OSError:
            return ""

    def _save_structure(self, structure: str) -> None:
        self.files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.files.root / "structure.cfg").write_text(structure)


@contextmanager
def _as_gateway_error(doing: str) -> Iterator[None]:
    """The boundary: a FlotillaError passes as it is, any other error becomes a GatewayError."""
    try:
        yield
    except FlotillaError:
        raise
    except Exception as exc:
        raise GatewayError(f"{doing}: {type(exc).__name__}: {exc}") from exc


def _servers_for_config(
    desired: Mapping[ServiceKey, Sequence[DesiredServer]],
    current: Mapping[str, Mapping],
    backends: Mapping[ServiceKey, str],
) -> dict[ServiceKey, list[Server]]:
    servers = {}
    for key, wanted in desired.items():
        slots = current.get(backends.get(key, ""), {})
        servers[key] = [
            Server(
                name=d.name,
                address=d.address,
                port=d.port,
                enabled=enabled_for_config(d, slots.get(slot_of(slots, d.address, d.port) or "")),
            )
            for d in wanted
        ]
    return servers


def _without_servers(config: GatewayConfig) -> GatewayConfig:
    backends: tuple[Backend, ...] = tuple(replace(b, servers=(), held=False) for b in config.backends)
    return replace(config, backends=backends)


def _backends_in_stats(runtime: RuntimeApi) -> set[str]:
    try:
        return {row.pxname for row in runtime.stats() if row.svname == "BACKEND"}
    except GatewayError:
        return set()
