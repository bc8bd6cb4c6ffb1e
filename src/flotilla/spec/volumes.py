"""The rules for a service's data: ``volumes``, ``allow_host_paths`` and ``backup``.

A volume is where a service keeps what must outlive its containers, so its rules are
about never losing or sharing data by accident (docs/volumes.md): each replica slot has
its own named volume, so two replicas never write one; a host directory (``bind``) is
shared by every replica and escapes Flotilla's ownership, so it needs an explicit
``allow_host_paths: true`` and, when writable, a single replica; and autoscale, which
would make and abandon volumes with the load, is refused on a service with volumes.
"""

from __future__ import annotations

from flotilla.spec import checks as c
from flotilla.spec import schedules
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import BackupSpec, VolumeSpec
from flotilla.spec.service_parts import ServiceContext, clean_file_path, file_target_problem

SERVICE_KEYS = ("volumes", "allow_host_paths", "backup")
MAX_VOLUMES = 8
MAX_KEEP = 1000
_PATH_HINT = "use an absolute path without ':', ',', whitespace or '..', e.g. /var/lib/postgresql/data"
_SHORT_HINT = "give the mount path (data: /var/lib/app), or {path: /var/lib/app, read_only: true}"


def volumes(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> dict | None:
    """``volumes: {NAME: PATH}`` or ``{NAME: {path, read_only, bind}}``."""
    items = c.string_map(rep, path, value, hint=f"give a mapping of volume names to mounts: {_SHORT_HINT}")
    if items is None:
        return None
    if len(items) > MAX_VOLUMES:
        rep.add(path, f"{len(items)} volumes; a service may have at most {MAX_VOLUMES}",
                "keep a service's data in fewer volumes")
        return None
    clean = {key: _volume(rep, path + (key,), key, item) for key, item in items.items()}
    if None in clean.values() or not _distinct_paths(rep, path, clean):
        return None
    return clean


def _volume(rep: Reporter, path: Path, name: str, value: object) -> VolumeSpec | None:
    ok = c.name(rep, path, name, what="volume", at_key=True) is not None
    if isinstance(value, str):
        mount = _mount_path(rep, path, value)
        return VolumeSpec(path=mount) if ok and mount else None
    known = c.mapping(rep, path, value, allowed=("path", "read_only", "bind"),
                      required={"path": "add path: where the volume is mounted in the container"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"path": _mount_path, "read_only": c.boolean, "bind": _host_path})
    return VolumeSpec(**clean) if ok and len(clean) == len(known) and "path" in clean else None


def _mount_path(rep: Reporter, path: Path, value: object) -> str | None:
    text = c.text(rep, path, value, hint=_SHORT_HINT)
    if text is None:
        return None
    problem = "it is not absolute" if not text.startswith("/") else file_target_problem(text)
    if problem:
        rep.add(path, f"invalid mount path {c.clip(text)}: {problem}", _PATH_HINT)
        return None
    return clean_file_path(text)


def _host_path(rep: Reporter, path: Path, value: object) -> str | None:
    text = c.text(rep, path, value, hint="give an absolute host directory, e.g. /srv/uploads")
    if text is None:
        return None
    if not text.startswith("/") or ".." in text.split("/") or ":" in text or "," in text:
        rep.add(path, f"invalid host path {c.clip(text)}", "give an absolute host directory without "
                "':', ',' or '..', e.g. /srv/uploads")
        return None
    clean = clean_file_path(text)
    if clean == "/" or any(clean == d or clean.startswith(d + "/") for d in ("/proc", "/sys", "/dev", "/run",
                                                                          "/var/run", "/var/lib/docker")):
        rep.add(path, f"host path {clean} would give the service the host itself",
                "bind a directory of its own, e.g. /srv/APP/uploads")
        return None
    return clean


def _distinct_paths(rep: Reporter, path: Path, clean: dict[str, VolumeSpec]) -> bool:
    seen: dict[str, str] = {}
    for name, volume in clean.items():
        if volume.path in seen:
            rep.add(path + (name, "path"), f"{volume.path} is also the path of volume {seen[volume.path]}",
                    "mount each volume at its own path")
            return False
        seen[volume.path] = name
    return True


def allow_host_paths(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> bool | None:
    return c.boolean(rep, path, value)


def backup(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> BackupSpec | None:
    """``backup: {command, restore_command, schedule, keep}``."""
    known = c.mapping(rep, path, value, allowed=("command", "restore_command", "schedule", "keep"))
    if known is None:
        return None
    empty = "remove it to archive the volumes with the service stopped"
    clean = c.fields(rep, path, known, {
        "command": lambda r, p, v: c.command(r, p, v, empty_hint=empty),
        "restore_command": lambda r, p, v: c.command(r, p, v, empty_hint=empty),
        "schedule": _schedule,
        "keep": lambda r, p, v: c.integer(r, p, v, low=1, high=MAX_KEEP),
    })
    if "restore_command" in known and "command" not in known:
        rep.add(path + ("restore_command",), "restore_command restores what command wrote, and there is no command",
                "add command (e.g. [pg_dump, -Fc, app]), or remove restore_command", key=True)
        return None
    return BackupSpec(**clean) if len(clean) == len(known) else None


def _schedule(rep: Reporter, path: Path, value: object) -> str | None:
    problem = schedules.schedule_problem(value)
    if problem:
        rep.add(path, problem, schedules.SCHEDULE_HINT)
        return None
    return str(value)


def check_fits(rep: Reporter, path: Path, *, known: dict, clean: dict) -> None:
    """Rules between the volumes and the other keys; they run on the parts that are valid."""
    found = clean.get("volumes") or {}
    binds = {name: v for name, v in found.items() if v.bind}
    if binds and not clean.get("allow_host_paths"):
        name = next(iter(binds))
        rep.add(path + ("volumes", name, "bind"), f"volume {name} mounts host path {binds[name].bind}, which "
                "Flotilla does not own: it is not in backups, `down --volumes` leaves it, and another app may use it",
                "add allow_host_paths: true to the service to mean it, or remove bind: for a volume Flotilla owns")
    _check_one_writer(rep, path, binds=binds, known=known, clean=clean)
    if "autoscale" in known and found:
        rep.add(path + ("autoscale",), "a service with volumes cannot autoscale: each replica slot has its "
                "own volume, which the load would create and abandon",
                "remove autoscale and set replicas, or keep the data in another service", key=True)
    chosen = clean.get("backup")
    if chosen is not None and not chosen.command and not _named(found) and clean.get("volumes", {}) is not None:
        rep.add(path + ("backup",), "without command, a backup archives the service's volumes, and it has none",
                "add a named volume, or give backup a command whose output is the backup", key=True)


def _check_one_writer(rep: Reporter, path: Path, *, binds: dict, known: dict, clean: dict) -> None:
    writable = [name for name, v in binds.items() if not v.read_only]
    replicas = clean.get("replicas", 1)
    if writable and isinstance(replicas, int) and replicas > 1:
        rep.add(path + ("replicas",), f"{replicas} replicas would all write host path "
                f"{binds[writable[0]].bind} (volume {writable[0]})",
                "set replicas: 1, make the volume read_only: true, or use a named volume (one per replica)")


def _named(found: dict) -> bool:
    return any(v.bind is None for v in found.values())
