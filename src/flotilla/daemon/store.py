"""The daemon's memory across restarts: applied specs and events, in SQLite.

What is running is always read back from Docker's labels; the store keeps
only what labels cannot say: the spec each app should match (with any
``flotilla scale`` applied to it) and the image digests its deploy pinned, whether an app is being removed, each
replica slot's crash history (so a daemon restarted during a crash loop keeps
its back-off), the images Flotilla itself pulled or built (what ``flotilla
images prune`` may remove), and the history of what Flotilla did and why.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.errors import DaemonError
from flotilla.plan.model import CrashRecord


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock, *, failure: str) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db`` (under ``lock``): committed, or rolled back and a DaemonError."""
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise DaemonError(f"{failure}: {exc}") from exc

class TableStore:
    """Tables of their own in ``state.db``, through a connection of their own (deploy history, job runs):
    opened with ``schema``, written one transaction at a time."""

    def __init__(self, path: Path, *, schema: str, what: str) -> None:
        self._lock = threading.Lock()
        self._what = what
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.executescript(schema)
        except sqlite3.Error as exc:
            raise DaemonError(f"cannot open the {what} in {path}: {exc}") from exc

    def _tx(self):
        return transaction(self._db, self._lock, failure=f"{self._what} error")

    def close(self) -> None:
        with self._lock:
            self._db.close()


SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_app ON events (app, id);
CREATE TABLE IF NOT EXISTS crashes (
    app TEXT NOT NULL,
    service TEXT NOT NULL,
    idx INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    container_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, service, idx)
);
CREATE TABLE IF NOT EXISTS images (
    ref TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (ref, id)
);
"""
# Columns added after a store was first made (ALTER TABLE at open when missing).
MIGRATIONS = {
    ("apps", "images"): "ALTER TABLE apps ADD COLUMN images TEXT NOT NULL DEFAULT '{}'",
}
EVENTS_KEPT_PER_APP = 10_000
ACTIVE = "active"
DELETING = "deleting"


@dataclass(frozen=True)
class StoredApp:
    name: str
    spec: dict
    status: str
    updated: float
    images: dict = field(default_factory=dict)  # image reference -> its pin (spec.models.ImagePin)


@dataclass(frozen=True)
class Event:
    id: int
    app: str
    ts: float
    kind: str
    subject: str
    message: str

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "app": self.app,
            "time": self.ts,
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
        }


class Store:
    """A small thread-safe SQLite store; one file under ``$FLOTILLA_HOME``."""

    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise DaemonError(f"cannot open the state store {path}: {exc}") from exc

    def _tx(self):
        return transaction(self._db, self._lock, failure="state store error")

    def _migrate(self) -> None:
        for (table, column), statement in MIGRATIONS.items():
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- apps ----------------------------------------------------------------

    def put_app(self, name: str, spec: dict, *, images: dict | None = None) -> None:
        """The app's spec and the image pins of its deploy, in one write."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO apps (name, spec, status, updated, images) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, status=excluded.status, "
                "updated=excluded.updated, images=excluded.images",
                (name, json.dumps(spec), ACTIVE, self._clock(), json.dumps(images or {}, sort_keys=True)),
            )

    def mark_deleting(self, name: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE apps SET status=?, updated=? WHERE name=?", (DELETING, self._clock(), name))

    def delete_app(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM apps WHERE name=?", (name,))

    def get_app(self, name: str) -> StoredApp | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE name=?", (name,)).fetchone()
        return _stored_app(row) if row else None

    def apps(self) -> list[StoredApp]:
        with self._tx() as db:
            rows = db.execute(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY name").fetchall()
        return [_stored_app(r) for r in rows]

    # -- crash history -------------------------------------------------------

    def crash_history(self, app: str) -> dict[tuple[str, int], CrashRecord]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT service, idx, count, last_failure, container_id FROM crashes WHERE app=?", (app,)
            ).fetchall()
        return {(r[0], r[1]): CrashRecord(count=r[2], last_failure=r[3], container_id=r[4]) for r in rows}

    def put_crash(self, app: str, slot: tuple[str, int], record: CrashRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO crashes (app, service, idx, count, last_failure, container_id) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(app, service, idx) DO UPDATE SET "
                "count=excluded.count, last_failure=excluded.last_failure, container_id=excluded.container_id",
                (app, slot[0], slot[1], record.count, record.last_failure, record.container_id),
            )

    def forget_crashes(self, app: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM crashes WHERE app=?", (app,))

    # -- images Flotilla pulled or built ---------------------------------------

    def record_image(self, ref: str, image_id: str, *, kind: str) -> None:
        """``ref`` was pulled or built (``kind``) by Flotilla as ``image_id``."""
        with self._tx() as db:
            db.execute("INSERT INTO images (ref, id, kind, ts) VALUES (?, ?, ?, ?) ON CONFLICT(ref, id) "
                       "DO UPDATE SET ts=excluded.ts", (ref, image_id, kind, self._clock()))

    def recorded_images(self) -> list[tuple[str, str, str]]:
        """``(ref, id, kind)`` of every image Flotilla pulled or built and has not removed."""
        with self._tx() as db:
            return [tuple(r) for r in db.execute("SELECT ref, id, kind FROM images ORDER BY ref, ts").fetchall()]

    def forget_image(self, ref: str, image_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE ref=? AND id=?", (ref, image_id))

    # -- events --------------------------------------------------------------

    def add_event(self, *, app: str, kind: str, subject: str, message: str) -> Event:
        ts = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (app, ts, kind, subject, message) VALUES (?, ?, ?, ?, ?)",
                (app, ts, kind, subject, message),
            )
            event_id = cur.lastrowid
            if event_id % 1000 == 0:
                db.execute(
                    "DELETE FROM events WHERE app=? AND id <= ?", (app, event_id - EVENTS_KEPT_PER_APP)
                )
        return Event(event_id, app, ts, kind, subject, message)

    def events(self, app: str, *, since: int = 0, limit: int = 1000) -> list[Event]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, app, ts, kind, subject, message FROM events "
                "WHERE app=? AND id>? ORDER BY id DESC LIMIT ?",
                (app, since, limit),
            ).fetchall()
        return [Event(*r) for r in reversed(rows)]


_APP_COLUMNS = "name, spec, status, updated, images"


def _stored_app(row: tuple) -> StoredApp:
    return StoredApp(name=row[0], spec=json.loads(row[1]), status=row[2], updated=row[3],
                     images=json.loads(row[4] or "{}"))
