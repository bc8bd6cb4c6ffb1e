"""Running the daemon: one per home, in the foreground or spawned by the CLI.

A file lock makes a second daemon on the same home refuse to start (and say
which pid holds it); the API socket is created with mode 0600 so only its
owner can talk to the controller.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import threading
import time

from flotilla.daemon.api import Api, TcpApiServer, UnixApiServer
from flotilla.daemon.activator import Activator
from flotilla.addons.redis_cluster.client import ClusterClient
from flotilla.addons.redis_cluster.nodes import DEFAULT_IMAGE as DEFAULT_CACHE_IMAGE
from flotilla.addons.redis_cluster.nodes import IMAGE_SETTING as CACHE_IMAGE_SETTING
from flotilla.daemon.autoscaler import Autoscaler
from flotilla.daemon.caches import CacheKeeper
from flotilla.daemon.controller import Controller
from flotilla.daemon.injection import SecretInjector, open_vault
from flotilla.daemon.paths import Home
from flotilla.daemon.store import Store
from flotilla.daemon.traffic import Traffic
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.process import GatewayFiles
from flotilla.secrets.injection import SecretsRuntime
from flotilla.engines.docker import DockerEngine
from flotilla.errors import DaemonError

log = logging.getLogger(__name__)


def run_daemon(home: Home, *, docker_url: str | None = None, api_listen: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT; returns after a clean shutdown."""
    home.ensure()
    lock = _take_lock(home)
    try:
        home.pid_file.write_text(f"{os.getpid()}\n")
        store = Store(home.store, clock=time.time)
        engine = DockerEngine(base_url=docker_url)
        vault, keys = open_vault(home=home.root, store=home.store, environ=os.environ, clock=time.time)
        injector = SecretInjector(vault=vault, runtime=SecretsRuntime(home=home.root), engine=engine, keys=keys)
        traffic = Traffic(gateway=GatewayManager(files=GatewayFiles(home.root / "gateway")), clock=time.monotonic)
        controller = Controller(engine=engine, store=store, clock=time.time, traffic=traffic, injector=injector,
                                cache_image=os.environ.get(CACHE_IMAGE_SETTING) or DEFAULT_CACHE_IMAGE)
        caches = CacheKeeper(controller=controller, client=ClusterClient(), vault=vault, clock=time.monotonic)
        controller.add_loop("caches", caches.run)
        controller.caches = caches
        autoscaler = Autoscaler(controller=controller, clock=time.monotonic)
        controller.add_loop("autoscaler", autoscaler.run)
        controller.autoscaler = autoscaler
        activator = Activator(wake=autoscaler.wake, ready_replica=controller.ready_replica)
        activator.start()
        traffic.activator_port = activator.port
        api = Api(controller)
        server = _bind(home, api)
        tcp = _listen_tcp(home, api, api_listen) if api_listen else None
        _stop_on_signals(server, controller, tcp)
        controller.start()
        log.info("flotilla daemon %d serving on %s", os.getpid(), home.socket)
        server.serve_forever(poll_interval=0.2)
        server.server_close()
        store.close()
    finally:
        _cleanup(home)
        lock.close()


def _take_lock(home: Home):
    lock = open(home.lock_file, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock.close()
        raise DaemonError(
            f"another flotilla daemon (pid {home.daemon_pid()}) is already running for {home.root}"
        ) from exc
    return lock


def _bind(home: Home, api: Api) -> UnixApiServer:
    if home.socket.exists():
        home.socket.unlink()  # stale: we hold the lock, so no daemon serves it
    old_umask = os.umask(0o177)
    try:
        server = UnixApiServer(str(home.socket), api)
    finally:
        os.umask(old_umask)
    os.chmod(home.socket, 0o600)
    return server


def _listen_tcp(home: Home, api: Api, listen: str) -> TcpApiServer:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise DaemonError(f"--api-listen {listen!r}: write HOST:PORT, for example 127.0.0.1:7070")
    token = os.environ.get("FLOTILLA_API_TOKEN") or _token_file(home)
    try:
        server = TcpApiServer((host.strip("[]"), int(port)), api, token=token)
    except OSError as exc:
        raise DaemonError(f"cannot listen on {listen}: {exc.strerror}; choose another --api-listen") from exc
    threading.Thread(target=server.serve_forever, name="api-tcp", daemon=True).start()
    log.info("API also on http://%s (bearer token required)", listen)
    return server


def _token_file(home: Home) -> str:
    """The TCP listener's token: $FLOTILLA_HOME/api.token, made (0600) on first use."""
    path = home.root / "api.token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def _stop_on_signals(server: UnixApiServer, controller: Controller, tcp: TcpApiServer | None) -> None:
    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        log.info("signal %d: stopping", signum)
        controller.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()
        if tcp:
            threading.Thread(target=tcp.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _cleanup(home: Home) -> None:
    for path in (home.socket, home.pid_file):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
