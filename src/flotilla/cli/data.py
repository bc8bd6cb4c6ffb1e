"""`flotilla volumes`, `flotilla backup`, `flotilla backups` and `flotilla restore`: an app's data.

A command module of its own (as ``deploys`` is) so that the verbs around what must
outlive containers sit together: the volumes Flotilla owns (with their size and
owner), taking a backup (to a directory or standard output), listing backups good
and failed, and reading one back (docs/volumes.md).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click

from flotilla.cli import render
from flotilla.daemon.client import DaemonClient, app_path
from flotilla.spec.units import format_memory

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
BACKUP_TIMEOUT = 3600.0  # seconds a backup or restore may take before the CLI stops waiting


def _say(message: str) -> None:
    click.echo(message, err=True)


def _size(value: int | None) -> str:
    return format_memory(value) if isinstance(value, int) else "?"


@click.group()
def volumes() -> None:
    """The volumes Flotilla owns: each replica slot's own, kept by `down` unless --volumes."""


@volumes.command("ls")
@click.argument("app", required=False)
@json_option
@click.pass_context
def volumes_ls(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """List volumes (of APP, or of every app) with their size, owner app, service, slot and name.

    KEPT says whether `down` keeps it (a spec's volume: yes; a cache node's: no).

    \b
    Example:
      flotilla volumes ls shop
      flotilla volumes ls --json | jq '.volumes[] | select(.service == "db")'
    """
    result = DaemonClient.connect(ctx.obj).request("GET", "/v1/volumes", query={"app": app} if app else None)
    if as_json:
        render.echo_json(result)
        return
    rows = [{**v, "size": _size(v["size"]), "kept": "yes" if v["retained"] else "no"} for v in result["volumes"]]
    click.echo(render.table(rows, [("NAME", "name"), ("APP", "app"), ("SERVICE", "service"), ("SLOT", "replica"),
                                   ("VOLUME", "volume"), ("SIZE", "size"), ("KEPT", "kept")]))


@click.command()
@click.argument("app")
@click.argument("service")
@click.argument("volume", required=False)
@click.option("--output", "-o", default=None, metavar="DIR|-",
              help="Also copy the archive to DIR, or write it to standard output with -.")
@json_option
@click.pass_context
def backup(ctx: click.Context, app: str, service: str, volume: str | None, output: str | None,
           as_json: bool) -> None:
    """Back up SERVICE of APP: its backup.command's output, or each volume (with it stopped).

    The archive is verified (non-empty, readable, sha256 recorded) before it is
    listed as good, and kept in $FLOTILLA_HOME/backups/APP/. A failure exits 11
    and is listed by `flotilla backups ls` as failed.

    \b
    Example:
      flotilla backup shop db                 # pg_dump via backup.command
      flotilla backup shop uploads files -o /srv/backups
      flotilla backup shop db -o - > db.dump
    """
    client = DaemonClient.connect(ctx.obj)
    client.timeout = BACKUP_TIMEOUT
    started = time.monotonic()
    if output != "-":
        _say(f"{app}: backing up {service}{' volume ' + volume if volume else ''}...")
    result = client.request("POST", app_path(app, "backups"), body={"service": service, "volume": volume})
    for entry in result["backups"]:
        _copy_out(client, entry, output)
    if as_json:
        render.echo_json(result)
    elif output != "-":
        for entry in result["backups"]:
            stopped = f", {service} stopped {entry['stopped_for']:.1f}s" if entry.get("stopped_for") else ""
            click.echo(f"{entry['id']}: ok, {_size(entry['size'])}, sha256 {entry['sha256'][:16]}{stopped} "
                       f"({time.monotonic() - started:.1f}s)")


def _copy_out(client: DaemonClient, entry: dict, output: str | None) -> None:
    if output is None:
        return
    chunks = client.stream(f"/v1/backups/{entry['id']}/data")
    if output == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    target = Path(output) / Path(entry["file"]).name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "wb") as sink:
        for chunk in chunks:
            sink.write(chunk)
    partial.replace(target)
    _say(f"copied to {target}")


@click.group()
def backups() -> None:
    """Backups taken by hand or on a schedule, good and failed."""


@backups.command("ls")
@click.argument("app", required=False)
@json_option
@click.pass_context
def backups_ls(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """List backups (of APP, or of every app), oldest first; a failed one says why. Exits 11 if the
    newest backup of any service failed.

    \b
    Example:
      flotilla backups ls shop
    """
    result = DaemonClient.connect(ctx.obj).request("GET", "/v1/backups", query={"app": app} if app else None)
    if as_json:
        render.echo_json(result)
    else:
        rows = [{**e, "size": _size(e["size"]) if e["status"] == "ok" else "-",
                 "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["started"])),
                 "what": e["volume"] or "command", "sha": (e["sha256"] or "")[:12] or None,
                 "status": f"FAILED: {e['error']}" if e["status"] == "failed" else e["status"]}
                for e in result["backups"]]
        click.echo(render.table(rows, [("ID", "id"), ("APP", "app"), ("SERVICE", "service"), ("WHAT", "what"),
                                       ("WHEN (UTC)", "when"), ("BY", "trigger"), ("SIZE", "size"),
                                       ("SHA256", "sha"), ("STATUS", "status")]))
    newest: dict[tuple, dict] = {}
    for entry in result["backups"]:
        newest[(entry["app"], entry["service"], entry["volume"], entry["slot"])] = entry
    if any(e["status"] == "failed" for e in newest.values()):
        sys.exit(11)


@click.command()
@click.argument("app")
@click.argument("service")
@click.argument("args", nargs=-1, required=True, metavar="[VOLUME] BACKUP")
@click.option("--stop", is_flag=True, help="Stop the service for a volume restore (it starts again after).")
@click.option("--live", is_flag=True, help="Run backup.restore_command in the running service.")
@json_option
@click.pass_context
def restore(ctx: click.Context, app: str, service: str, args: tuple[str, ...], stop: bool, live: bool,
            as_json: bool) -> None:
    """Read BACKUP (an id from `flotilla backups ls`, or a file) back into SERVICE of APP.

    A volume backup replaces the volume's contents and is refused while the
    service runs unless --stop. A backup.command backup is read by
    backup.restore_command inside a running replica, and needs --live.

    \b
    Example:
      flotilla restore shop db 20261203T061500Z-db-dump-1a2b3c --live
      flotilla restore shop files uploads /srv/backups/files.tar --stop
    """
    if len(args) > 2:
        raise click.UsageError("give at most VOLUME and BACKUP")
    volume, source = (None, args[0]) if len(args) == 1 else args
    if Path(source).is_file():
        source = str(_imported(ctx.obj.backups / app, Path(source)))
    client = DaemonClient.connect(ctx.obj)
    client.timeout = BACKUP_TIMEOUT
    _say(f"{app}: restoring {Path(source).name} into {service}...")
    result = client.request("POST", app_path(app, "restore"), body={
        "service": service, "volume": volume, "source": source, "stop": stop, "live": live})
    if as_json:
        render.echo_json(result)
    else:
        click.echo(f"{app}: restored {result['restored']} into {service} (sha256 {result['sha256'][:16]})")


def _imported(folder: Path, path: Path) -> Path:
    """``path`` where the daemon restores files from (its backups directory), copied there unless it is in it."""
    path = path.resolve()
    if path.is_relative_to(folder.resolve()):
        return path
    target = folder / "imported" / path.name
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(path, partial)
    partial.replace(target)
    return target


def register(cli_group: click.Group) -> None:
    """Add ``volumes``, ``backup``, ``backups`` and ``restore`` to the ``flotilla`` command group."""
    for command in (volumes, backup, backups, restore):
        cli_group.add_command(command)
