"""Deploy history in SQLite: every revision of every app, the rollout in progress, restarts.

Kept in tables of their own (in the same ``state.db`` as the rest of the
store, through a connection of its own) so that the history of what was
deployed is apart from the applied spec, which ``scale`` and the autoscaler
change without making a revision. A revision is what ``up`` (or a rollback)
accepted: the spec, the image IDs and secret versions it ran with, when and
by which command, and how its rollout ended. The rollout in progress (which
revision, from which, since when, when it last made progress) is stored too,
so a daemon killed in the middle of one finishes or undoes it when it comes back.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from flotilla.daemon.store import TableStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    app TEXT NOT NULL,
    number INTEGER NOT NULL,
    spec TEXT NOT NULL,
    images TEXT NOT NULL DEFAULT '{}',
    secrets TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    command TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, number)
);
CREATE TABLE IF NOT EXISTS rollouts (
    app TEXT PRIMARY KEY,
    current INTEGER NOT NULL,
    previous INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    progress_at REAL NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS restarts (
    app TEXT NOT NULL,
    service TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (app, service)
);
"""
ROLLING_OUT = "rolling out"
ROLLED_OUT = "rolled out"
FAILED = "failed"
ROLLED_BACK = "rolled back"
# Rollout states: ``progressing`` until settled; ``settled``; ``held`` after a failure with on_failure: hold;
# ``undoing`` while returning to the previous revision after a failure.
PROGRESSING, SETTLED, HELD, UNDOING = "progressing", "settled", "held", "undoing"


@dataclass(frozen=True)
class Revision:
    app: str
    number: int
    spec: dict
    images: dict[str, str]
    secrets: dict[str, int]
    created: float
    command: str
    outcome: str
    reason: str = ""

    def to_dict(self, *, with_spec: bool = False) -> dict:
        data = {"app": self.app, "revision": self.number, "created": self.created, "command": self.command,
                "outcome": self.outcome, "reason": self.reason, "images": self.images, "secrets": self.secrets}
        return {**data, "spec": self.spec} if with_spec else data


@dataclass(frozen=True)
class Rollout:
    """The app's current revision and the state of its rollout."""

    app: str
    current: int
    previous: int  # 0: none (the first revision, or an undo, which is never undone again)
    state: str
    started: float
    progress_at: float  # when a new replica last turned healthy (or the rollout began)
    progress: int = 0  # new replicas healthy at that moment

    @property
    def active(self) -> bool:
        return self.state in (PROGRESSING, UNDOING)


class RevisionStore(TableStore):
    """Thread-safe access to the revision tables."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=SCHEMA, what="revision history")

    # -- revisions -----------------------------------------------------------

    def add(self, *, app: str, spec: dict, images: dict, secrets: dict, created: float, command: str,
            previous: int, outcome: str = ROLLING_OUT, current: bool = True) -> int:
        """A new revision, made current with its rollout started (unless not ``current``), in one
        transaction; its number."""
        with self._tx() as db:
            row = db.execute("SELECT COALESCE(MAX(number), 0) FROM revisions WHERE app=?", (app,)).fetchone()
            number = row[0] + 1
            db.execute("INSERT INTO revisions (app, number, spec, images, secrets, created, command, outcome) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (app, number, json.dumps(spec), json.dumps(images), json.dumps(secrets), created,
                        command, outcome))
            if current:
                _put_rollout(db, Rollout(app, number, previous, PROGRESSING, created, created))
        return number

    def get(self, app: str, number: int) -> Revision | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM revisions WHERE app=? AND number=?", (app, number)).fetchone()
        return _revision(row) if row else None

    def list(self, app: str) -> list[Revision]:
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM revisions WHERE app=? ORDER BY number", (app,)).fetchall()
        return [_revision(r) for r in rows]

    def set_outcome(self, app: str, number: int, outcome: str, reason: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE revisions SET outcome=?, reason=? WHERE app=? AND number=?",
                       (outcome, reason, app, number))

    # -- the rollout ---------------------------------------------------------

    def rollout(self, app: str) -> Rollout | None:
        with self._tx() as db:
            row = db.execute("SELECT app, current, previous, state, started, progress_at, progress FROM rollouts "
                             "WHERE app=?", (app,)).fetchone()
        return Rollout(*row) if row else None

    def put_rollout(self, rollout: Rollout) -> None:
        with self._tx() as db:
            _put_rollout(db, rollout)

    # -- restarts ------------------------------------------------------------

    def restarts(self, app: str) -> dict[str, int]:
        with self._tx() as db:
            rows = db.execute("SELECT service, generation FROM restarts WHERE app=?", (app,)).fetchall()
        return dict(rows)

    def bump_restarts(self, app: str, services: list[str]) -> dict[str, int]:
        with self._tx() as db:
            for service in services:
                db.execute("INSERT INTO restarts (app, service, generation) VALUES (?, ?, 1) "
                           "ON CONFLICT(app, service) DO UPDATE SET generation=generation+1", (app, service))
        return self.restarts(app)

    def forget(self, app: str) -> None:
        """``down``: the app's history goes with it."""
        with self._tx() as db:
            for table in ("revisions", "rollouts", "restarts"):
                db.execute(f"DELETE FROM {table} WHERE app=?", (app,))


_COLUMNS = "app, number, spec, images, secrets, created, command, outcome, reason"


def _revision(row: tuple) -> Revision:
    return Revision(app=row[0], number=row[1], spec=json.loads(row[2]), images=json.loads(row[3]),
                    secrets=json.loads(row[4]), created=row[5], command=row[6], outcome=row[7], reason=row[8])


def _put_rollout(db: sqlite3.Connection, r: Rollout) -> None:
    db.execute("INSERT INTO rollouts (app, current, previous, state, started, progress_at, progress) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(app) DO UPDATE SET current=excluded.current, "
               "previous=excluded.previous, state=excluded.state, started=excluded.started, "
               "progress_at=excluded.progress_at, progress=excluded.progress",
               (r.app, r.current, r.previous, r.state, r.started, r.progress_at, r.progress))
