"""Backups and restores of a service's data, taken by hand or on a schedule, never failing silently.

Peers' users lose data to backups that "succeeded" with nothing in them, so here a
backup is good only once proven: it is written under a hidden temporary name, then
checked (more than zero bytes, the archive readable to its end, a sha256 recorded),
and only then renamed to its listed name with an entry that says ``ok``. Anything
else leaves an entry that says ``failed`` and why, an event, a metric
(``flotilla_backups_failed_total``) and a non-zero exit; the partial file is deleted,
so no half-written archive is ever listed as good.

Two ways to take one (docs/volumes.md): a service's ``backup.command`` runs inside a
running replica and its standard output is the backup (``pg_dump``: consistent while
the service serves); otherwise each named volume of each slot is archived (tar) with
the service stopped, and the entry records how long it was stopped. Archives live in
``$FLOTILLA_HOME/backups/APP/``, each with its entry as a JSON file beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.events import EventLog
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.reconciler import Reconciler
from flotilla.errors import BackupError, BadRequestError, ConflictError, FlotillaError, NotFoundError
from flotilla.naming import volume_name
from flotilla.spec import AppSpec, ServiceSpec
from flotilla.spec.images import image_to_run
from flotilla.spec.schedules import last_fire

log = logging.getLogger(__name__)
STOP_TIMEOUT = 30.0  # seconds for a service's replicas to stop before a volume backup gives up
SCHEDULE_TICK = 1.0  # seconds between looks at the schedules
HASH_CHUNK = 1 << 20
Status = Literal["running", "ok", "failed"]


@dataclass(frozen=True)
class BackupEntry:
    """One backup, good or failed: what it holds, when, how big, its checksum, or why it failed."""

    id: str
    app: str
    service: str
    kind: Literal["command", "volume"]
    volume: str | None  # the spec's volume name (a volume backup)
    slot: int | None  # its replica slot
    trigger: Literal["manual", "schedule"]
    started: float
    status: Status = "failed"
    finished: float | None = None
    size: int = 0
    sha256: str | None = None
    file: str | None = None
    error: str | None = None
    stopped_for: float | None = None  # seconds the service had no replica (a volume backup)
    due: float | None = None  # the schedule's time it was taken for

    def to_dict(self) -> dict:
        return asdict(self)


class Backups:
    """Takes, verifies, lists, restores and schedules the backups of every app of one daemon."""

    def __init__(self, *, root: Path, engine: ReplicaEngine, apps: AppRepository, reconciler: Reconciler,
                 events: EventLog, clock: Callable[[], float] = time.time) -> None:
        self._root = root
        self._engine = engine
        self._apps = apps
        self._reconciler = reconciler
        self._events = events
        self._clock = clock
        self._lock = threading.Lock()  # one backup or restore at a time
        self._seen: dict[tuple[str, str], float] = {}  # (app, service) -> when its schedule was first seen

    # -- taking ---------------------------------------------------------------------

    def take(self, app: str, service: str, *, volume: str | None = None, trigger: str = "manual",
             due: float | None = None) -> list[BackupEntry]:
        """Back up ``service`` (its command's output, or ``volume``/every volume); raises BackupError on failure."""
        spec, svc = self._service(app, service)
        with self._lock:
            if svc.backup and svc.backup.command and volume is None:
                return [self._by_command(spec, service, svc, trigger=trigger, due=due)]
            return self._by_volumes(spec, service, svc, volumes=_volumes_of(service, svc, volume),
                                    trigger=trigger, due=due)

    def _by_command(self, spec: AppSpec, service: str, svc: ServiceSpec, *, trigger: str, due: float | None
                    ) -> BackupEntry:
        entry = self._new(spec.app, service, kind="command", volume=None, slot=None, trigger=trigger, due=due)
        command = svc.backup.command if svc.backup else ()

        def produce(sink: BinaryIO) -> None:
            replica = self._running_replica(spec.app, service)
            result = self._engine.exec_stream(replica, command, sink=sink)
            if result.exit_code != 0:
                raise BackupError(f"{' '.join(command)} exited {result.exit_code}: {_tail(result.stderr)}")

        return self._write(entry, produce=produce, verify=_readable, suffix=".dump")

    def _by_volumes(self, spec: AppSpec, service: str, svc: ServiceSpec, *, volumes: list[str], trigger: str,
                    due: float | None) -> list[BackupEntry]:
        slots = range(1, max(svc.replicas, 1) + 1)
        entries = [self._new(spec.app, service, kind="volume", volume=v, slot=s, trigger=trigger, due=due)
                   for s in slots for v in volumes]
        image = image_to_run(spec, svc)
        done: list[BackupEntry] = []
        stopped = self._clock()
        try:
            with self._stopped(spec, service):
                for entry in entries:
                    name = volume_name(app=spec.app, service=service, index=entry.slot or 1, volume=entry.volume or "")
                    done.append(self._write(entry, suffix=".tar", verify=_tar_readable, produce=lambda sink, n=name:
                                            self._archive(spec.app, volume=n, image=image, sink=sink)))
        finally:
            took = self._clock() - stopped
            done = [self._save(replace(e, stopped_for=round(took, 3))) for e in done]
        self._events.record(spec.app, "backup", service, f"{service} was stopped for {took:.1f}s for its backup")
        return done

    def _archive(self, app: str, *, volume: str, image: str, sink: BinaryIO) -> None:
        result = self._engine.archive_volume(app=app, volume=volume, image=image, sink=sink)
        if result.exit_code != 0:
            raise BackupError(f"tar of volume {volume} exited {result.exit_code}: {_tail(result.stderr)}")

    @contextlib.contextmanager
    def _stopped(self, spec: AppSpec, service: str) -> Iterator[None]:
        if spec.services[service].replicas == 0:
            yield
            return
        with self._reconciler.stopped(spec.app, service, timeout=STOP_TIMEOUT):
            yield

    def _write(self, entry: BackupEntry, *, produce: Callable[[BinaryIO], None], verify: Callable[[Path], None],
               suffix: str) -> BackupEntry:
        """Write under a hidden name, verify, rename: the entry is ``ok`` only for a proven archive."""
        folder = self._folder(entry.app)
        partial = folder / f".{entry.id}{suffix}.partial"
        self._save(replace(entry, status="running"))  # a daemon killed from here on leaves it to recover()
        try:
            with open(partial, "wb") as sink:
                produce(sink)
                sink.flush()
                os.fsync(sink.fileno())
            size = partial.stat().st_size
            if size == 0:
                raise BackupError("the backup is empty (0 bytes)")
            verify(partial)
            final = folder / f"{entry.id}{suffix}"
            os.replace(partial, final)
        except (FlotillaError, OSError) as exc:
            partial.unlink(missing_ok=True)
            return self._failed(entry, exc)
        good = replace(entry, status="ok", finished=self._clock(), size=size, sha256=file_sha256(final),
                       file=str(final))
        self._events.record(entry.app, "backup", entry.service,
                            f"backup {entry.id} ok: {size} bytes, sha256 {good.sha256[:12] if good.sha256 else ''}")
        return self._save(good)

    def _failed(self, entry: BackupEntry, exc: Exception) -> BackupEntry:
        message = exc.message if isinstance(exc, FlotillaError) else f"writing the archive failed: {exc}"
        self._save(replace(entry, status="failed", finished=self._clock(), error=message))
        self._events.record(entry.app, "backup-failed", entry.service, f"backup {entry.id} FAILED: {message}")
        raise BackupError(f"backup {entry.id} of {entry.app}/{entry.service} failed: {message} "
                          f"(`flotilla backups ls {entry.app}` lists it as failed)") from exc

    # -- restoring ------------------------------------------------------------------

    def restore(self, app: str, service: str, *, source: str, volume: str | None = None, stop: bool = False,
                live: bool = False) -> dict:
        """Restore ``source`` (a backup id, or a file the daemon can read) into ``service``."""
        spec, svc = self._service(app, service)
        entry, path = self._source(app, source)
        kind = entry.kind if entry else ("command" if svc.backup and svc.backup.command else "volume")
        with self._lock:
            if kind == "command":
                return self._restore_command(spec, service, svc, path=path, live=live)
            target = volume or (entry.volume if entry else None) or _only_volume(service, svc)
            _volumes_of(service, svc, target)
            return self._restore_volume(spec, service, svc, path=path, volume=target,
                                        slot=(entry.slot if entry else None) or 1, stop=stop)

    def _restore_command(self, spec: AppSpec, service: str, svc: ServiceSpec, *, path: Path, live: bool) -> dict:
        command = svc.backup.restore_command if svc.backup else None
        if not command:
            raise BadRequestError(f"{service} has backup.command but no backup.restore_command to read a backup "
                                  "back; add one (e.g. [pg_restore, --clean, -d, app]) and run `flotilla up`")
        if not live:
            raise ConflictError(f"{' '.join(command)} restores into the running {service}, whose clients see its "
                                "data change under them; give --live to mean it")
        replica = self._running_replica(spec.app, service)
        with open(path, "rb") as source:
            result = self._engine.exec_stream(replica, command, source=source)
        return self._restored(spec.app, service, path=path, result=result, what=" ".join(command))

    def _restore_volume(self, spec: AppSpec, service: str, svc: ServiceSpec, *, path: Path, volume: str,
                        slot: int, stop: bool) -> dict:
        _tar_readable(path)
        running = [r for r in self._engine.observe(spec.app).replicas if r.service == service]
        if running and not stop:
            raise ConflictError(f"{service} is running ({len(running)} replica(s)); a restore replaces its volume "
                                f"{volume}: give --stop to stop it for the restore (it starts again after)")
        name = volume_name(app=spec.app, service=service, index=slot, volume=volume)
        with self._stopped(spec, service), open(path, "rb") as source:
            result = self._engine.restore_volume(app=spec.app, volume=name, image=image_to_run(spec, svc),
                                                 source=source)
        return self._restored(spec.app, service, path=path, result=result, what=f"tar into volume {name}")

    def _restored(self, app: str, service: str, *, path: Path, result, what: str) -> dict:
        if result.exit_code != 0:
            message = f"restore of {path.name} into {service} failed: {what} exited {result.exit_code}: " \
                      f"{_tail(result.stderr)}"
            self._events.record(app, "restore-failed", service, message)
            raise BackupError(message)
        self._events.record(app, "restore", service, f"restored {path.name} into {service} ({what})")
        return {"app": app, "service": service, "restored": path.name, "sha256": file_sha256(path)}

    def _source(self, app: str, source: str) -> tuple[BackupEntry | None, Path]:
        """A backup id of ``app`` (checked against its recorded sha256), or a file under the backups directory
        (where `flotilla restore FILE` copies a file first): never any path the daemon could read, which would
        let an API client have a file of the daemon's user restored into a service it can read."""
        entry = next((e for e in self.list(app) if e.id == source), None)
        if entry is None:
            path = Path(source).resolve()
            if not path.is_relative_to(self._root.resolve()) or not path.is_file():
                raise NotFoundError(f"{source!r} is neither a backup of {app} (`flotilla backups ls {app}`) nor "
                                    f"a file in {self._root} (`flotilla restore APP SERVICE FILE` copies it there)")
            return None, path
        if entry.status != "ok" or not entry.file:
            raise ConflictError(f"backup {entry.id} failed ({entry.error}); restore a good one")
        path = Path(entry.file)
        if file_sha256(path) != entry.sha256:
            raise BackupError(f"backup {entry.id} no longer matches its recorded sha256: the file changed "
                              "or is corrupt; restore another")
        return entry, path

    # -- listing --------------------------------------------------------------------

    def list(self, app: str | None = None) -> list[BackupEntry]:
        """Every recorded backup (of ``app``), oldest first; failed ones too."""
        folders = [self._root / app] if app else sorted(p for p in self._root.glob("*") if p.is_dir())
        entries = [_load(p) for folder in folders for p in folder.glob("*.json")]
        return sorted((e for e in entries if e is not None), key=lambda e: (e.started, e.id))

    def open(self, backup_id: str) -> Path:
        """The file of a good backup, for ``flotilla backup --output``."""
        entry = next((e for e in self.list() if e.id == backup_id), None)
        if entry is None or entry.status != "ok" or not entry.file:
            raise NotFoundError(f"no good backup {backup_id!r}; `flotilla backups ls` lists them")
        return Path(entry.file)

    def prometheus(self) -> str:
        """Failed backups and the last good one's time, per service, in Prometheus' text format."""
        failed: dict[tuple[str, str], int] = {}
        last: dict[tuple[str, str], float] = {}
        for entry in self.list():
            key = (entry.app, entry.service)
            failed[key] = failed.get(key, 0) + (entry.status == "failed")
            if entry.status == "ok":
                last[key] = max(last.get(key, 0.0), entry.finished or entry.started)
        lines = ["# HELP flotilla_backups_failed_total Backups that failed, per service.",
                 "# TYPE flotilla_backups_failed_total counter"]
        lines += [f'flotilla_backups_failed_total{{app="{a}",service="{s}"}} {n}'
                  for (a, s), n in sorted(failed.items())]
        lines += ["# HELP flotilla_backup_last_success_timestamp_seconds When the last good backup finished.",
                  "# TYPE flotilla_backup_last_success_timestamp_seconds gauge"]
        lines += [f'flotilla_backup_last_success_timestamp_seconds{{app="{a}",service="{s}"}} {t:.3f}'
                  for (a, s), t in sorted(last.items())]
        return "\n".join(lines) + "\n"

    # -- schedules ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """The schedule loop: each service's backup at its cron time, then the retention; first, the
        backups a killed daemon left running are failed."""
        self.recover()
        while not stop.wait(SCHEDULE_TICK):
            self.run_due()

    def recover(self) -> list[BackupEntry]:
        """Backups still ``running`` when the daemon starts were cut short by its end: each becomes a
        failed entry (with an event, and the metric) and its partial file is deleted."""
        failed = []
        for entry in self.list():
            if entry.status == "running":
                for partial in self._folder(entry.app).glob(f".{entry.id}.*.partial"):
                    partial.unlink(missing_ok=True)
                message = "interrupted: the daemon stopped while it was being written"
                failed.append(self._save(replace(entry, status="failed", finished=self._clock(), error=message)))
                self._events.record(entry.app, "backup-failed", entry.service, f"backup {entry.id} FAILED: {message}")
        return failed

    def run_due(self) -> list[BackupEntry]:
        """Take every scheduled backup that is due. A time missed while the daemon was down is taken once at
        its start (however many were missed); a schedule first seen now waits for its next time."""
        taken: list[BackupEntry] = []
        now = self._clock()
        for spec in self._apps.active():
            for service, svc in spec.services.items():
                if svc.backup and svc.backup.schedule:
                    taken += self._if_due(spec.app, service, schedule=svc.backup.schedule, keep=svc.backup.keep,
                                          now=now)
        return taken

    def _if_due(self, app: str, service: str, *, schedule: str, keep: int, now: float) -> list[BackupEntry]:
        due = last_fire(schedule, at=now)
        previous = [e.due or e.started for e in self.list(app) if e.service == service and e.trigger == "schedule"]
        since = max(previous) if previous else self._seen.setdefault((app, service), now)
        if due <= since:
            return []
        try:
            taken = self.take(app, service, trigger="schedule", due=due)
        except FlotillaError as exc:  # recorded as a failed entry, an event and the metric
            log.warning("scheduled backup of %s/%s: %s", app, service, exc.message)
            return []
        self._prune(app, service, keep=keep)
        return taken

    def _prune(self, app: str, service: str, *, keep: int) -> None:
        """Keep the newest ``keep`` good scheduled backups of each volume slot (or of the command)."""
        groups: dict[tuple, list[BackupEntry]] = {}
        for entry in self.list(app):
            if entry.service == service and entry.trigger == "schedule" and entry.status == "ok":
                groups.setdefault((entry.volume, entry.slot), []).append(entry)
        for entries in groups.values():
            for old in entries[:-keep]:
                Path(old.file or "").unlink(missing_ok=True)
                (self._folder(app) / f"{old.id}.json").unlink(missing_ok=True)
                self._events.record(app, "backup", service, f"removed backup {old.id} (keep {keep})")

    # -- parts ------------------------------------------------------------------------

    def _service(self, app: str, service: str) -> tuple[AppSpec, ServiceSpec]:
        spec = self._apps.require(app)
        svc = spec.services.get(service)
        if svc is None or svc.addon:
            raise NotFoundError(f"app {app} has no service {service!r}; it has: "
                                f"{', '.join(sorted(n for n, s in spec.services.items() if not s.addon))}")
        return spec, svc

    def _running_replica(self, app: str, service: str) -> str:
        running = [r for r in self._engine.observe(app).replicas if r.service == service and r.running]
        if not running:
            raise BackupError(f"{service} has no running replica to run its backup command in; start it "
                              "(`flotilla up`, `flotilla scale`) and try again")
        return min(running, key=lambda r: r.index).container_id

    def _new(self, app: str, service: str, **fields) -> BackupEntry:
        now = self._clock()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        what = fields["volume"] or "dump"
        slot = f"-{fields['slot']}" if fields["slot"] else ""
        return BackupEntry(id=f"{stamp}-{service}-{what}{slot}-{secrets.token_hex(3)}", app=app, service=service,
                           started=now, **fields)

    def _folder(self, app: str) -> Path:
        folder = self._root / app
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def _save(self, entry: BackupEntry) -> BackupEntry:
        """The entry's JSON beside its archive, written whole (a temporary name, then a rename)."""
        folder = self._folder(entry.app)
        partial = folder / f".{entry.id}.json.partial"
        partial.write_text(json.dumps(entry.to_dict(), indent=1))
        os.replace(partial, folder / f"{entry.id}.json")
        return entry


def _volumes_of(service: str, svc: ServiceSpec, volume: str | None) -> list[str]:
    named = list(svc.named_volumes)
    if volume is not None and volume not in named:
        raise NotFoundError(f"{service} has no volume {volume!r} of its own; it has: {', '.join(named) or 'none'}")
    if not named:
        raise BadRequestError(f"{service} has no volume and no backup.command: there is nothing to back up")
    return [volume] if volume else named


def _only_volume(service: str, svc: ServiceSpec) -> str:
    named = list(svc.named_volumes)
    if len(named) != 1:
        raise BadRequestError(f"name the volume to restore into: {service} has {', '.join(named) or 'none'}")
    return named[0]


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output on standard error"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _readable(path: Path) -> None:
    """A command's output: readable to its end (the checksum reads it whole)."""
    file_sha256(path)


def _tar_readable(path: Path) -> None:
    """A tar archive whose every member header reads, to its end."""
    try:
        with tarfile.open(path, "r:") as archive:
            count = sum(1 for _ in archive)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"the archive {path.name} is not a readable tar ({exc})") from exc
    if count == 0:
        raise BackupError(f"the archive {path.name} holds no file")


def _load(path: Path) -> BackupEntry | None:
    try:
        return BackupEntry(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        log.warning("backup entry %s unreadable: %s", path, exc)
        return None
