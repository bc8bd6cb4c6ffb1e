"""Backups on the in-memory engine: verified before listed, loud when failing, scheduled without doubling.

Covers daemon/backups.py between the spec and the engine: a command's output becomes a
good backup only once written, non-empty, readable and checksummed; every failure leaves a
failed entry, an event, the metric and no archive; a volume is archived with its service
stopped and started again; a restore into a running service is refused unless stopped;
a schedule takes each due time once and keeps the newest ``keep``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.backups import Backups
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.events import EventLog
from flotilla.daemon.reconciler import Reconciler
from flotilla.daemon.runtime import RuntimeSpecs
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.store import Store
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import BackupError, ConflictError, NotFoundError
from flotilla.spec import AppSpec, parse_spec
from tests.support.memory_engine import FixedHealth, MemoryEngine

DUMP = ("pg_dump", "-Fc", "app")
VOLUME = "flotilla-shop-db-1-data"
NIGHTLY = 86_400 * 20_000 + 3 * 3600  # a day at 03:00 UTC


def db_spec(*, backup: str = "{command: [pg_dump, -Fc, app], restore_command: [pg_restore, -d, app]}") -> AppSpec:
    return parse_spec(f"""\
app: shop
services:
  db:
    image: flotilla/postgres:15
    port: 5432
    volumes: {{data: /var/lib/postgresql/data}}
    backup: {backup}
""", filename="flotilla.yaml", environ={})


class Clock:
    def __init__(self) -> None:
        self.now = NIGHTLY - 600.0

    def __call__(self) -> float:
        return self.now


class Parts:
    def __init__(self, root: Path) -> None:
        self.engine, self.clock = MemoryEngine(), Clock()
        self.store = Store(root / "state.db", clock=self.clock)
        self.apps = AppRepository(self.store)
        snapshots, states = Snapshots(engine=self.engine, prober=FixedHealth()), CacheStates()
        self.events = EventLog(self.store)
        self.reconciler = Reconciler(
            engine=self.engine, apps=self.apps, snapshots=snapshots, events=self.events,
            runtime=RuntimeSpecs(cache_states=states, snapshots=snapshots, cache_image="redis"),
            wakeups=Wakeups(clock=self.clock), crash_history=self.store, cache_states=states, clock=self.clock)
        self.root = root / "backups"
        self.backups = Backups(root=self.root, engine=self.engine, apps=self.apps, reconciler=self.reconciler,
                               events=self.events, clock=self.clock)

    def up(self, spec: AppSpec) -> None:
        self.apps.put(spec)
        for _ in range(5):
            self.reconciler.reconcile(spec.app)

    def files(self) -> list[str]:
        return sorted(p.name for p in (self.root / "shop").iterdir())

    def event_messages(self) -> list[str]:
        return [e.message for e in self.store.events("shop")]


@pytest.fixture
def parts(tmp_path) -> Parts:
    found = Parts(tmp_path)
    found.up(db_spec())
    return found


def tar_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_command_backup_is_listed_only_once_written_and_checksummed(parts):
    parts.engine.commands[DUMP] = (0, b"PGDMP...rows...", "")
    (entry,) = parts.backups.take("shop", "db")
    assert (entry.status, entry.kind, entry.size) == ("ok", "command", len(b"PGDMP...rows..."))
    assert entry.sha256 == hashlib.sha256(b"PGDMP...rows...").hexdigest()
    assert Path(entry.file).read_bytes() == b"PGDMP...rows..."
    assert parts.files() == sorted([f"{entry.id}.dump", f"{entry.id}.json"])  # no partial left
    assert [e.id for e in parts.backups.list("shop")] == [entry.id]
    assert any(f"backup {entry.id} ok" in m for m in parts.event_messages())


@pytest.mark.parametrize(("result", "why"), [
    ((3, b"half a dump", "pg_dump: error: connection failed"), "exited 3: pg_dump: error: connection failed"),
    ((0, b"", ""), "empty (0 bytes)"),
])
def test_a_failing_backup_is_loud_and_leaves_no_archive(parts, result, why):
    parts.engine.commands[DUMP] = result
    with pytest.raises(BackupError, match="failed") as raised:
        parts.backups.take("shop", "db")
    assert why in raised.value.message and raised.value.exit_code == 11
    (entry,) = parts.backups.list("shop")
    assert (entry.status, entry.file, entry.sha256) == ("failed", None, None) and why in entry.error
    assert parts.files() == [f"{entry.id}.json"]  # the half-written dump is gone, never listed as good
    assert any("FAILED" in m for m in parts.event_messages())
    assert 'flotilla_backups_failed_total{app="shop",service="db"} 1' in parts.backups.prometheus()


def test_a_volume_is_archived_with_its_service_stopped_then_started_again(parts):
    parts.up(db_spec(backup="{keep: 3}"))
    before = parts.engine.running("shop", "db")
    parts.engine.contents[VOLUME] = tar_of("PG_VERSION", b"15\n")
    (entry,) = parts.backups.take("shop", "db")
    assert (entry.status, entry.kind, entry.volume, entry.slot) == ("ok", "volume", "data", 1)
    assert ("archive", VOLUME, ()) in parts.engine.calls  # no replica ran while it was archived
    after = parts.engine.running("shop", "db")
    assert len(after) == 1 and after != before and entry.stopped_for is not None
    assert any("stopped for" in m for m in parts.event_messages())


def test_an_unreadable_archive_is_a_failed_backup(parts):
    parts.up(db_spec(backup="{keep: 3}"))
    parts.engine.contents[VOLUME] = b"not a tar at all" * 100
    with pytest.raises(BackupError, match="not a readable tar"):
        parts.backups.take("shop", "db")
    assert [e.status for e in parts.backups.list("shop")] == ["failed"]
    assert len(parts.engine.running("shop", "db")) == 1  # started again after the failure


def test_a_restore_into_a_running_service_is_refused_unless_stopped(parts, tmp_path):
    parts.up(db_spec(backup="{keep: 3}"))
    outside = tmp_path / "data.tar"
    outside.write_bytes(tar_of("PG_VERSION", b"15\n"))
    with pytest.raises(NotFoundError, match="neither a backup"):  # only files in the backups directory
        parts.backups.restore("shop", "db", source=str(outside), stop=True)
    archive = parts.root / "shop" / "imported" / "data.tar"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(outside.read_bytes())
    running = parts.engine.running("shop", "db")
    with pytest.raises(ConflictError, match="--stop"):
        parts.backups.restore("shop", "db", source=str(archive))
    assert parts.engine.running("shop", "db") == running and parts.engine.contents.get(VOLUME) is None
    parts.backups.restore("shop", "db", source=str(archive), stop=True)
    assert ("restore", VOLUME, ()) in parts.engine.calls and parts.engine.contents[VOLUME] == archive.read_bytes()
    assert len(parts.engine.running("shop", "db")) == 1


def test_a_command_restore_runs_live_only_when_asked(parts):
    parts.engine.commands[DUMP] = (0, b"PGDMP", "")
    parts.engine.commands[("pg_restore", "-d", "app")] = (0, b"", "")
    (entry,) = parts.backups.take("shop", "db")
    with pytest.raises(ConflictError, match="--live"):
        parts.backups.restore("shop", "db", source=entry.id)
    parts.backups.restore("shop", "db", source=entry.id, live=True)
    assert parts.engine.stdin_of[("pg_restore", "-d", "app")] == b"PGDMP"
    Path(entry.file).write_bytes(b"PGDMP tampered")
    with pytest.raises(BackupError, match="sha256"):
        parts.backups.restore("shop", "db", source=entry.id, live=True)


def test_a_schedule_takes_each_due_time_once_and_keeps_the_newest(parts):
    parts.up(db_spec(backup='{command: [pg_dump, -Fc, app], schedule: "0 3 * * *", keep: 2}'))
    parts.engine.commands[DUMP] = (0, b"PGDMP", "")
    assert parts.backups.run_due() == []  # first seen before 03:00: waits for it
    for day in range(3):
        parts.clock.now = NIGHTLY + day * 86_400 + 1
        assert len(parts.backups.run_due()) == 1
        assert parts.backups.run_due() == []  # the same time is not taken twice
    kept = parts.backups.list("shop")
    assert [e.due for e in kept] == [NIGHTLY + 86_400, NIGHTLY + 2 * 86_400]  # keep: 2


def test_down_keeps_a_spec_volume_unless_asked(parts):
    assert parts.engine.volumes["shop"] == {VOLUME}
    result = parts.reconciler.remove_app("shop")
    assert result["volumes"] == [] and result["kept_volumes"] == [VOLUME]
    parts.up(db_spec())
    assert parts.reconciler.remove_app("shop", volumes=True)["volumes"] == [VOLUME]
    assert parts.engine.volumes["shop"] == set()


def test_a_backup_cut_short_by_a_killed_daemon_is_failed_at_the_next_start(parts):
    def killed(sink) -> None:
        sink.write(b"half")
        raise SystemExit  # the daemon dies mid-write: no except clause of ours runs

    parts.engine.commands[DUMP] = (0, b"PGDMP", "")
    entry = parts.backups._new("shop", "db", kind="command", volume=None, slot=None, trigger="manual", due=None)
    with pytest.raises(SystemExit):
        parts.backups._write(entry, produce=killed, verify=lambda path: None, suffix=".dump")
    assert [e.status for e in parts.backups.list("shop")] == ["running"]  # listed, and never as good
    (recovered,) = parts.backups.recover()
    assert recovered.status == "failed" and "interrupted" in recovered.error
    assert parts.files() == [f"{entry.id}.json"]  # the partial dump is gone
    assert 'flotilla_backups_failed_total{app="shop",service="db"} 1' in parts.backups.prometheus()
    assert parts.backups.recover() == []
