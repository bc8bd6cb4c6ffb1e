"""Where the daemon keeps its socket, store, pid file and log.

``$FLOTILLA_HOME`` wins; otherwise ``/var/lib/flotilla`` for root and
``~/.local/share/flotilla`` for everyone else. The directory is private
(mode 0700): it holds the API socket and the state store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flotilla.errors import DaemonError
from flotilla.naming import home_identity


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "flotilla.sock"

    @property
    def store(self) -> Path:
        return self.root / "state.db"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def lock_file(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "daemon.log"

    @property
    def backups(self) -> Path:
        """Where backups are written, each archive with its entry (daemon/backups.py)."""
        return self.root / "backups"

    @property
    def identity(self) -> str:
        """This home's id on a shared Docker host: the owner label of everything its daemon makes.

        Derived from the resolved path, as the secrets directory in RAM is, so
        two homes never share an id and a restarted daemon finds its objects.
        """
        return home_identity(self.root)

    def ensure(self) -> Home:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise DaemonError(
                f"cannot create {self.root}: {exc.strerror}; set FLOTILLA_HOME to a directory you own"
            ) from exc
        return self

    def daemon_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


def default_home(environ: dict[str, str] | None = None) -> Home:
    env = os.environ if environ is None else environ
    if env.get("FLOTILLA_HOME"):
        return Home(Path(env["FLOTILLA_HOME"]))
    if os.geteuid() == 0:
        return Home(Path("/var/lib/flotilla"))
    return Home(Path.home() / ".local" / "share" / "flotilla")
