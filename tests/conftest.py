"""Shared fixtures: a real Docker Engine, a real daemon per test, and the CLI.

Integration tests talk to the Docker Engine on this host and to a Flotilla
daemon started for the test in its own FLOTILLA_HOME; each daemon is stopped
by its pid afterwards, and every app a test makes is removed (by label) even
when the test fails. A test that needs Docker and finds none is skipped with
the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHOP_IMAGES = ("shop-web:1", "shop-catalog:1", "shop-cart:1")
REDIS_IMAGE = os.environ.get("FLOTILLA_REDIS_IMAGE", "flotilla/redis:bookworm")
BASE_IMAGE = os.environ.get("FLOTILLA_PYTHON_IMAGE", "flotilla/python:bookworm")


def _docker_problem() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no Docker here"
        return f"Docker Engine is not reachable ({exc}); run scripts/test.sh, which starts it"
    missing = [i for i in (*SHOP_IMAGES, BASE_IMAGE, REDIS_IMAGE) if not client.images.list(name=i)]
    if missing:
        return f"images {missing} are missing; scripts/build-images.sh builds them"
    return None


@pytest.fixture(scope="session")
def docker_client():
    problem = _docker_problem()
    if problem:
        pytest.skip(problem)
    import docker

    return docker.from_env(timeout=60)


class Flotilla:
    """A daemon in its own home, and the CLI pointed at it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "FLOTILLA_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
        self.apps: set[str] = set()

    def command_prefix(self) -> list[str]:
        return [sys.executable, "-m", "flotilla"]

    def run(self, *args: str, check: bool = True, timeout: float = 180, env: dict | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*self.command_prefix(), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"flotilla {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json").stdout)

    def client(self):
        from flotilla.daemon.client import DaemonClient
        from flotilla.daemon.paths import Home

        return DaemonClient.connect(Home(self.home))

    def daemon_pid(self) -> int | None:
        try:
            return int((self.home / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def kill_daemon(self, sig: int = signal.SIGKILL) -> None:
        pid = self.daemon_pid()
        if pid and _alive(pid):
            os.kill(pid, sig)
            _wait_gone(pid)

    def kill_gateway(self) -> None:
        """Stop this home's HAProxy, if a test left one running (``down`` normally does)."""
        try:
            pid = int((self.home / "gateway" / "haproxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if _alive(pid) and b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def remove_secrets_runtime(self) -> None:
        """The RAM directory of this home's secrets (emptied by ``down``, removed here)."""
        import shutil

        from flotilla.secrets.injection import SecretsRuntime

        shutil.rmtree(SecretsRuntime(home=self.home).root, ignore_errors=True)

    def remove_activator_socket(self) -> None:
        """The activator's socket directory, which a daemon killed with SIGKILL leaves behind."""
        import shutil

        from flotilla.daemon.activator import socket_path
        from flotilla.naming import home_identity

        shutil.rmtree(socket_path(home=self.home, identity=home_identity(self.home)).parent, ignore_errors=True)

    def write_spec(self, tmp_path: Path, text: str, name: str = "flotilla.yaml") -> Path:
        """``text`` as a spec file; a routed spec must not put its gateway on the demo's port."""
        from tests.support.specs import check_gateway_port

        check_gateway_port(text)
        path = tmp_path / name
        path.write_text(text)
        return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def flotilla(tmp_path_factory, docker_client):
    fl = Flotilla(tmp_path_factory.mktemp("home"))
    yield fl
    tear_down(fl, docker_client)


@pytest.fixture
def second_flotilla(tmp_path_factory, docker_client):
    """Another daemon home on the same Docker host (for tests of what one home may touch)."""
    fl = Flotilla(tmp_path_factory.mktemp("home2"))
    yield fl
    tear_down(fl, docker_client)


def tear_down(fl: Flotilla, docker_client) -> None:
    """Remove the home's apps (and, as a last resort, all labelled for them), stop its daemon and gateway."""
    for app in fl.apps:
        if fl.daemon_pid() and _alive(fl.daemon_pid()):
            fl.run("down", app, check=False, timeout=120)
        remove_labelled(docker_client, app)
    fl.kill_daemon(signal.SIGTERM)
    fl.kill_daemon(signal.SIGKILL)
    fl.kill_gateway()
    fl.remove_secrets_runtime()
    fl.remove_activator_socket()


def remove_labelled(client, app: str) -> None:
    """Last-resort cleanup of everything labelled for ``app``."""
    for container in client.containers.list(all=True, filters={"label": f"io.flotilla.app={app}"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"io.flotilla.app={app}"}):
        network.remove()
    for volume in client.volumes.list(filters={"label": f"io.flotilla.app={app}"}):
        volume.remove(force=True)


@pytest.fixture
def app_name(flotilla) -> str:
    name = f"t{uuid.uuid4().hex[:8]}"
    flotilla.apps.add(name)
    return name
