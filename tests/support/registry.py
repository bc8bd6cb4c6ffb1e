"""A real container registry for tests: Debian's docker-registry (the CNCF distribution) with htpasswd.

Started on 127.0.0.1 at a free port, its storage and config in the test's
temporary folder, and stopped by its pid; Docker treats 127.0.0.0/8
registries as insecure-allowed, so no TLS is needed. ``stop`` and ``start``
again keep the same port and storage (the "registry went away" case), and
``set_password`` rotates the one user's password (the "stored login is now
wrong" case). Images are pushed with the SDK's ``auth_config``, so no test
writes a login to ~/.docker/config.json.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import free_port

BINARY = "docker-registry"
CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: flotilla-test
    path: {htpasswd}
"""


def why_unavailable() -> str | None:
    missing = [tool for tool in (BINARY, "htpasswd") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup.sh installs docker-registry and apache2-utils)"
    return None


class Registry:
    def __init__(self, folder: Path, *, user: str, password: str) -> None:
        self.folder = folder
        self.user = user
        self.password = password
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self._htpasswd = folder / "htpasswd"
        self._config = folder / "config.yml"
        self._config.write_text(CONFIG.format(root=folder / "data", port=self.port, htpasswd=self._htpasswd))
        self.set_password(password)

    def set_password(self, password: str) -> None:
        """Write the user's bcrypt hash (the password goes to htpasswd on stdin, not its arguments)."""
        self.password = password
        made = subprocess.run(["htpasswd", "-iBn", self.user], input=password, capture_output=True, text=True,
                              check=True, timeout=30)
        self._htpasswd.write_text(made.stdout)

    def start(self) -> None:
        log = open(self.folder / "registry.log", "ab")  # noqa: SIM115 - the child's output, closed with it
        self._proc = subprocess.Popen([BINARY, "serve", str(self._config)], stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.folder / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 20 s")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def _answers(self) -> bool:
        try:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://{self.host}/v2/", timeout=1)
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for credentials
        except OSError:
            return False
        return False

    def auth(self) -> dict:
        return {"username": self.user, "password": self.password}

    def push(self, docker_client, ref: str) -> None:
        """Push ``ref`` with the SDK's auth_config; raise with Docker's words on any error."""
        repository, _, tag = ref.rpartition(":")
        for event in docker_client.api.push(repository, tag=tag, auth_config=self.auth(), stream=True,
                                            decode=True):
            if "error" in event:
                raise RuntimeError(f"push of {ref} failed: {event['error']}")
