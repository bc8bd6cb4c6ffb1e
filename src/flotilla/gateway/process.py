"""The HAProxy process: start it, reload it gracefully, find it again, stop it.

HAProxy runs in master-worker mode in a session of its own, so it keeps
serving while the Flotilla daemon is down or restarting; a restarted daemon
finds it by its pid file and adopts it rather than starting a second one.
A configuration is checked with ``haproxy -c`` before it is ever loaded, and
reloads are SIGUSR2 to the master, which hands the listening sockets to the
new worker (no connection refused) and lets the old one finish its requests.

HAProxy (and every ``haproxy -c``) starts with a clean environment, PATH and
nothing else: the daemon's own may hold FLOTILLA_MASTER_KEY or a token, and
HAProxy's workers face the network (``child_environment``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import GatewayError
from flotilla.gateway.accesslog import open_pipe

HAPROXY = os.environ.get("FLOTILLA_HAPROXY", "haproxy")
START_TIMEOUT = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What HAProxy's processes may see of ``environ``: PATH alone (the configuration uses no variable)."""
    return {"PATH": environ.get("PATH") or DEFAULT_PATH}


@dataclass(frozen=True)
class GatewayFiles:
    """Everything of the gateway's under one directory of the daemon's home."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def candidate(self) -> Path:
        return self.root / "haproxy.cfg.new"

    @property
    def pid_file(self) -> Path:
        return self.root / "haproxy.pid"

    @property
    def runtime_socket(self) -> Path:
        return self.root / "haproxy.sock"

    @property
    def master_socket(self) -> Path:
        return self.root / "haproxy-master.sock"

    @property
    def challenge_map(self) -> Path:
        """ACME HTTP-01 answers (token -> key authorization), public by design (gateway/challenges.py)."""
        return self.root / "acme-challenges.map"

    @property
    def log_file(self) -> Path:
        """HAProxy's own messages (its standard error): alerts, warnings, reloads."""
        return self.root / "haproxy.log"

    @property
    def access_log(self) -> Path:
        """One JSON line per request, drained by the daemon from ``access_pipe`` (accesslog.py)."""
        return self.root / "access.log"

    @property
    def access_pipe(self) -> Path:
        """HAProxy's standard output: a named pipe, so that the daemon can rotate the log it feeds."""
        return self.root / "access.fifo"


class HAProxyProcess:
    def __init__(self, files: GatewayFiles) -> None:
        self.files = files
        self._child: subprocess.Popen | None = None  # when this daemon started it (not adopted)

    def master_pid(self) -> int | None:
        """The running master's pid, or None when no gateway runs for this home."""
        try:
            pid = int(self.files.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _is_haproxy(pid) else None

    def running(self) -> bool:
        return self.master_pid() is not None

    def check(self, text: str) -> None:
        """Raise with HAProxy's own words if ``text`` is not a valid configuration."""
        self.files.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.files.candidate.write_text(text)
        result = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.files.candidate)], capture_output=True, text=True,
            env=child_environment(),
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise GatewayError(
                "the generated gateway configuration was rejected by haproxy -c: "
                + " | ".join(detail[-5:])
                + "; this is a Flotilla bug, please report it with the spec"
            )

    def start(self, text: str) -> int:
        self.check(text)
        self.files.candidate.replace(self.files.config)
        return self._launch()

    def _launch(self) -> int:
        for stale in (self.files.runtime_socket, self.files.master_socket):
            stale.unlink(missing_ok=True)
        # stdout: the access log's pipe; stderr: HAProxy's own messages. The workers inherit both
        # before they drop root.
        access = open_pipe(self.files.access_pipe)
        try:
            with open(self.files.log_file, "ab") as log:
                proc = subprocess.Popen(  # a fixed argv, no shell
                    [
                        HAPROXY, "-W", "-f", str(self.files.config), "-p", str(self.files.pid_file),
                        "-S", f"{self.files.master_socket},mode,600",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=access,
                    stderr=log,
                    env=child_environment(),
                    start_new_session=True,
                )
        finally:
            os.close(access)
        self._child = proc
        return self._wait_ready(proc)

    def reload(self, text: str) -> None:
        """Load ``text`` gracefully: new worker takes the sockets, old one drains."""
        self.check(text)
        self.files.candidate.replace(self.files.config)
        pid = self.master_pid()
        if pid is None:
            self._launch()
        else:
            os.kill(pid, signal.SIGUSR2)

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGUSR1)  # soft stop: finish what is in flight
        deadline = time.monotonic() + 10
        while _is_haproxy(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_haproxy(pid):
            os.kill(pid, signal.SIGKILL)
        if self._child is not None:
            self._child.poll()  # reap our own child: no zombie left behind
            self._child = None
        self.files.pid_file.unlink(missing_ok=True)

    def _wait_ready(self, proc: subprocess.Popen) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = self.master_pid()
            if pid and self.files.runtime_socket.exists():
                return pid
            if proc.poll() is not None:  # exited (and reaped): say why
                raise GatewayError(f"HAProxy exited at start: {self._last_alert()}")
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise GatewayError(
            f"HAProxy did not start within {START_TIMEOUT:.0f}s; see {self.files.log_file}"
        )

    def _last_alert(self) -> str:
        try:
            lines = self.files.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        alerts = [line for line in lines if "ALERT" in line]
        return (alerts or lines or ["no log"])[-1].strip()


def _is_haproxy(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return b"haproxy" in cmdline and "State:\tZ" not in status
