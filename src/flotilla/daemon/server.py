"""Running the daemon: one per home, in the foreground or spawned by the CLI.

A file lock makes a second daemon on the same home refuse to start (and say
which pid holds it); the API socket is created with mode 0600 so only its
owner can talk to the controller.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time

from flotilla.daemon.api import Api, UnixApiServer
from flotilla.daemon.controller import Controller
from flotilla.daemon.paths import Home
from flotilla.daemon.store import Store
from flotilla.daemon.traffic import Traffic
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.process import GatewayFiles
from flotilla.engines.docker import DockerEngine
from flotilla.errors import DaemonError

log = logging.getLogger(__name__)


def run_daemon(home: Home, *, docker_url: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT; returns after a clean shutdown."""
    home.ensure()
    lock = _take_lock(home)
    try:
        home.pid_file.write_text(f"{os.getpid()}\n")
        store = Store(home.store, clock=time.time)
        traffic = Traffic(gateway=GatewayManager(files=GatewayFiles(home.root / "gateway")), clock=time.monotonic)
        controller = Controller(
            engine=DockerEngine(base_url=docker_url), store=store, clock=time.time, traffic=traffic
        )
        server = _bind(home, Api(controller))
        _stop_on_signals(server, controller)
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


def _stop_on_signals(server: UnixApiServer, controller: Controller) -> None:
    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        log.info("signal %d: stopping", signum)
        controller.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _cleanup(home: Home) -> None:
    for path in (home.socket, home.pid_file):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
