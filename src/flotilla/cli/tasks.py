"""`flotilla run`, `flotilla exec` and `flotilla jobs`: one-off commands and scheduled jobs.

``run`` and ``exec`` print the command's output as the daemon streams it
(daemon/tasks.py) and exit with the command's own exit code, so a script can
use them as it would the command itself. The daemon holds the container; when
this process ends first (Ctrl-C, killed), the connection closes and the daemon
removes the container.

With ``-i`` (the default when standard input is a terminal) they open an
interactive session instead (daemon/attach.py): this process's standard input
goes to the command's, as frames (daemon/frames.py) on the same connection the
output comes back on. With a terminal on both ends, the local one is put in raw
mode (every key, Ctrl-C too, goes to the command; restored however this ends)
and its size is sent at the start and on every SIGWINCH.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
import time
import tty as termmode
from collections.abc import Iterator

import click

from flotilla.cli import render
from flotilla.daemon import frames
from flotilla.daemon.client import DaemonClient, Session, app_path
from flotilla.errors import DaemonError, error_from_dict

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
tty_option = click.option("-t/-T", "--tty/--no-tty", default=None,
                          help="Give the command a terminal (default: when standard input is one).")
interactive_option = click.option("-i/-I", "--interactive/--no-interactive", default=None,
                                  help="Forward standard input to the command (default: when it is a terminal); "
                                       "pipe into it with -i.")


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient.connect(ctx.obj)


def _stream(ctx: click.Context, path: str, body: dict) -> int:
    """POST ``body``; print the output as it comes; the command's exit code."""
    out = sys.stdout

    def show(step: dict) -> None:
        out.write(step.get("output", ""))
        out.flush()

    result = _client(ctx).with_progress("POST", path, body=body, on_progress=show)
    code = result.get("exit_code")
    if code is None:
        raise DaemonError("the command's exit code is unknown (it was still running when its output ended)")
    return int(code)


def _tty(tty: bool | None) -> bool:
    return sys.stdin.isatty() if tty is None else tty


def _start(ctx: click.Context, path: str, body: dict, *, interactive: bool | None) -> int:
    """The NDJSON stream (scripts, no input), or with ``interactive`` a session that forwards standard input."""
    if not (sys.stdin.isatty() if interactive is None else interactive):
        return _stream(ctx, path, body)
    stdin = sys.stdin.fileno()
    raw = body["tty"] and os.isatty(stdin)
    if raw:
        body = {**body, "size": _size(stdin)}
    session = _client(ctx).session(path, body)
    try:
        with _raw_mode(stdin) if raw else contextlib.nullcontext(), _resizes(session, stdin, watch=raw):
            threading.Thread(target=_forward, args=(stdin, session), daemon=True, name="stdin").start()
            return _show(session)
    finally:
        session.close()


def _show(session: Session) -> int:
    """Print the command's output as it comes; its exit code at the end."""
    outputs = {frames.STDOUT: sys.stdout.buffer, frames.STDERR: sys.stderr.buffer}
    for frame in session.received():
        if frame.kind in outputs:
            outputs[frame.kind].write(frame.payload)
            outputs[frame.kind].flush()
        elif frame.kind == frames.ERROR:
            raise error_from_dict(frame.json())
        elif frame.kind == frames.EXIT:
            code = frame.json().get("exit_code")
            if code is None:
                raise DaemonError("the command's exit code is unknown (Docker did not report it)")
            return int(code)
    raise DaemonError("the flotilla daemon ended the session without the command's exit code; see its log")


def _forward(stdin: int, session: Session) -> None:
    """Standard input to the session until its end (then the command's input is closed too)."""
    try:
        while data := os.read(stdin, 1 << 16):
            if not session.send(frames.encode(frames.STDIN, data)):
                return
    except OSError:
        pass
    session.send(frames.encode(frames.STDIN_END))


@contextlib.contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    """The terminal in raw mode (keys go through unprocessed), restored on the way out, whatever the way."""
    saved = termios.tcgetattr(fd)
    termmode.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _resizes(session: Session, fd: int, *, watch: bool) -> Iterator[None]:
    """With ``watch``, the terminal's new size sent on each SIGWINCH while the session lasts."""
    if not watch:
        yield
        return
    previous = signal.signal(signal.SIGWINCH, lambda *_: session.send(frames.resize(*_size(fd))))
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _size(fd: int) -> list[int]:
    size = os.get_terminal_size(fd)
    return [size.lines, size.columns]


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("app")
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@tty_option
@interactive_option
@click.pass_context
def run(ctx: click.Context, app: str, service: str, command: tuple[str, ...], tty: bool | None,
        interactive: bool | None) -> int:
    """Run COMMAND once in a new container of SERVICE; exit with its exit code.

    The container has the service's deployed image, env, secrets (as its
    replicas get them) and networks, and is removed when the command ends, or
    when this command is interrupted. Output is streamed; standard input is
    forwarded with -i (the default in a terminal, so a shell just works).

    \b
    Examples:
      flotilla run shop web -- python3 -m shop.migrate --check
      flotilla run shop web -- sh -c 'exit 3'; echo $?   # 3
      flotilla run shop db -- psql                       # interactive, in a terminal
      echo 'select 1' | flotilla run -i shop db -- psql  # piped input
    """
    return _start(ctx, app_path(app, "run"), {"service": service, "command": list(command), "tty": _tty(tty)},
                  interactive=interactive)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("app")
@click.argument("replica")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@tty_option
@interactive_option
@click.pass_context
def exec_(ctx: click.Context, app: str, replica: str, command: tuple[str, ...], tty: bool | None,
          interactive: bool | None) -> int:
    """Run COMMAND inside the running REPLICA (as `flotilla ps` names it); exit with its exit code.

    Standard input is forwarded with -i (the default in a terminal).

    \b
    Examples:
      flotilla exec shop web-0 -- cat /etc/hostname
      flotilla exec shop web-0 -- sh                     # a shell, in a terminal
      flotilla exec -i shop web-0 -- wc -l < data.csv     # piped input
    """
    return _start(ctx, app_path(app, "exec"), {"replica": replica, "command": list(command), "tty": _tty(tty)},
                  interactive=interactive)


@click.group()
def jobs() -> None:
    """Scheduled jobs (the spec's jobs:): their runs, output, and a run now.

    \b
    Examples:
      flotilla jobs ls shop
      flotilla jobs logs shop report --run 3
      flotilla jobs run shop report
    """


@jobs.command("ls")
@click.argument("app")
@json_option
@click.pass_context
def jobs_ls(ctx: click.Context, app: str, as_json: bool) -> None:
    """Each job: its schedule, status of its last run, when it runs next.

    \b
    Example:
      flotilla jobs ls shop
    """
    data = _client(ctx).request("GET", app_path(app, "jobs"))
    if as_json:
        render.echo_json(data)
        return
    rows = [{"job": j["job"], "schedule": j["schedule"], "status": j["status"].upper() if j["status"] == "failed"
             else j["status"], "last": _last(j["last"]), "next": _when(j["next"])} for j in data["jobs"]]
    columns = [("JOB", "job"), ("SCHEDULE", "schedule"), ("STATUS", "status"), ("LAST RUN", "last"),
               ("NEXT RUN", "next")]
    click.echo(render.table(rows, columns) if rows else f"app {app} has no jobs")
    if any(j["status"] == "failed" for j in data["jobs"]):
        ctx.exit(1)


@jobs.command("logs")
@click.argument("app")
@click.argument("job")
@click.option("--run", "number", type=int, default=None, help="Which run (its number); default: the latest.")
@json_option
@click.pass_context
def jobs_logs(ctx: click.Context, app: str, job: str, number: int | None, as_json: bool) -> None:
    """The output (its tail) of a job's latest run, or of run N.

    \b
    Example:
      flotilla jobs logs shop report --run 3
    """
    data = _client(ctx).request("GET", app_path(app, "jobs", job, "logs"),
                                query={"run": number} if number is not None else None)
    if as_json:
        render.echo_json(data)
        return
    click.echo(f"run {data['number']} of {job}: {_last(data)}", err=True)
    click.echo(data["output"], nl=not data["output"].endswith("\n"))


@jobs.command("run")
@click.argument("app")
@click.argument("job")
@json_option
@click.pass_context
def jobs_run(ctx: click.Context, app: str, job: str, as_json: bool) -> None:
    """Start a run of JOB now, whatever its schedule (its output: `flotilla jobs logs`).

    \b
    Example:
      flotilla jobs run shop report
    """
    data = _client(ctx).request("POST", app_path(app, "jobs", job, "run"))
    if as_json:
        render.echo_json(data)
    else:
        click.echo(f"run {data['number']} of {job}: {data['state']}" + (f" ({data['reason']})" if data["reason"]
                                                                         else ""))


def _last(run: dict | None) -> str:
    if not run:
        return "-"
    took = f" in {run['duration']:.1f}s" if run.get("duration") is not None else ""
    code = f" exit {run['exit_code']}" if run.get("exit_code") is not None else ""
    return f"#{run['number']} {run['state']}{code}{took} at {_when(run['started'])}"


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def register(cli_group: click.Group) -> None:
    """Add ``run``, ``exec`` and ``jobs`` to the ``flotilla`` command group."""
    for command in (run, exec_, jobs):
        cli_group.add_command(command)
