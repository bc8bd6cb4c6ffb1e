"""Scheduled-job history in SQLite: every run (and skipped schedule time) and each job's cursor.

In the same ``state.db`` as the rest of the store, through a connection of
its own, as the deploy history is. A run is keyed by its job, the schedule
time it ran for and its trigger (``schedule`` or ``manual``), so recording the
same run twice (a restarted daemon adopting a container it had already
recorded) changes nothing. The cursor is the latest schedule time decided
(plan/jobs.py): storing it with the run it started, in one transaction, is what
keeps a restart from starting that time again. Output is kept as a bounded tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from flotilla.daemon.store import TableStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_runs (
    app TEXT NOT NULL,
    job TEXT NOT NULL,
    number INTEGER NOT NULL,
    due REAL NOT NULL,
    trigger TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    exit_code INTEGER,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    output TEXT NOT NULL DEFAULT '',
    container_id TEXT NOT NULL DEFAULT '',
    stop_reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, job, number),
    UNIQUE (app, job, due, trigger)
);
CREATE TABLE IF NOT EXISTS job_cursors (
    app TEXT NOT NULL,
    job TEXT NOT NULL,
    cursor REAL NOT NULL,
    PRIMARY KEY (app, job)
);
"""
RUNNING, SUCCEEDED, FAILED, SKIPPED = "running", "succeeded", "failed", "skipped"
OUTPUT_LIMIT = 16 * 1024  # characters of a run's output kept: its tail
RUNS_KEPT = 200  # runs kept per job; older ones are dropped as new ones finish


@dataclass(frozen=True)
class JobRun:
    app: str
    job: str
    number: int
    due: float
    trigger: str  # "schedule" or "manual"
    started: float
    ended: float | None
    exit_code: int | None
    state: str
    reason: str = ""
    output: str = ""
    container_id: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def to_dict(self, *, with_output: bool = False) -> dict:
        data = {k: v for k, v in asdict(self).items() if with_output or k != "output"}
        return {**data, "duration": self.duration}


class JobStore(TableStore):
    """Thread-safe access to the job tables."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=SCHEMA, what="job history")

    def cursors(self, app: str) -> dict[str, float]:
        with self._tx() as db:
            return dict(db.execute("SELECT job, cursor FROM job_cursors WHERE app=?", (app,)).fetchall())

    def start_cursor(self, app: str, job: str, at: float) -> None:
        """A new job's cursor: its first run is its first schedule time after ``at``."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO job_cursors (app, job, cursor) VALUES (?, ?, ?)", (app, job, at))

    def record(self, *, app: str, job: str, due: float, trigger: str, started: float, state: str,
               reason: str = "", container_id: str = "", exit_code: int | None = None) -> int:
        """A run (or a skipped time) and, for a scheduled one, the cursor moved to its time; its number.
        Recording a run already recorded returns its number and changes nothing."""
        with self._tx() as db:
            row = db.execute("SELECT number FROM job_runs WHERE app=? AND job=? AND due=? AND trigger=?",
                             (app, job, due, trigger)).fetchone()
            if row:
                return row[0]
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM job_runs WHERE app=? AND job=?",
                                (app, job)).fetchone()[0]
            ended = started if state in (SKIPPED, FAILED) else None
            db.execute("INSERT INTO job_runs (app, job, number, due, trigger, started, ended, exit_code, state, "
                       "reason, container_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (app, job, number, due, trigger, started, ended, exit_code, state, reason, container_id))
            if trigger == "schedule":
                db.execute("INSERT INTO job_cursors (app, job, cursor) VALUES (?, ?, ?) ON CONFLICT(app, job) "
                           "DO UPDATE SET cursor=MAX(cursor, excluded.cursor)", (app, job, due))
        return number

    def finish(self, *, app: str, container_id: str, ended: float, exit_code: int | None, output: str
               ) -> JobRun | None:
        """The run of ``container_id`` ended: succeeded with exit 0 unless it was stopped (``note``), else
        failed; None if it was already recorded as finished."""
        with self._tx() as db:
            db.execute("UPDATE job_runs SET ended=?, exit_code=?, output=?, "
                       "state=CASE WHEN ?=0 AND stop_reason='' THEN ? ELSE ? END, "
                       "reason=CASE WHEN stop_reason='' THEN reason ELSE stop_reason END "
                       "WHERE app=? AND container_id=? AND state=?",
                       (ended, exit_code, output[-OUTPUT_LIMIT:], exit_code, SUCCEEDED, FAILED, app, container_id,
                        RUNNING))
            changed = db.execute("SELECT changes()").fetchone()[0]
            row = db.execute(f"SELECT {_COLUMNS} FROM job_runs WHERE app=? AND container_id=?",
                             (app, container_id)).fetchone()
            if row:
                db.execute("DELETE FROM job_runs WHERE app=? AND job=? AND number<=?",
                           (app, row[1], row[2] - RUNS_KEPT))
        return JobRun(*row) if changed and row else None

    def note(self, *, app: str, container_id: str, reason: str) -> None:
        """Why a running run is being stopped (a timeout, a replacing run): kept as the run's reason."""
        with self._tx() as db:
            db.execute("UPDATE job_runs SET stop_reason=? WHERE app=? AND container_id=? AND state=?",
                       (reason, app, container_id, RUNNING))

    def runs(self, app: str, job: str | None = None, *, limit: int = 50) -> list[JobRun]:
        """The newest runs first (of one job, or of every job of the app)."""
        where, args = ("app=? AND job=?", (app, job)) if job else ("app=?", (app,))
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM job_runs WHERE {where} ORDER BY started DESC, number DESC "
                              f"LIMIT ?", (*args, limit)).fetchall()
        return [JobRun(*r) for r in rows]

    def run(self, app: str, job: str, number: int) -> JobRun | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM job_runs WHERE app=? AND job=? AND number=?",
                             (app, job, number)).fetchone()
        return JobRun(*row) if row else None

    def forget(self, app: str) -> None:
        with self._tx() as db:
            for table in ("job_runs", "job_cursors"):
                db.execute(f"DELETE FROM {table} WHERE app=?", (app,))


_COLUMNS = "app, job, number, due, trigger, started, ended, exit_code, state, reason, output, container_id"
