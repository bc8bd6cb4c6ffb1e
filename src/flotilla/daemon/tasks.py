"""Task containers: `flotilla run`, scheduled job runs and `before_deploy` commands.

A task is a container of a service as its replicas are (the deployed, pinned
image, the env, the secrets through the same RAM-backed injection, the
networks, the limits and the hardening), but with its own command, no DNS
alias and its own name (``APP_task_KIND-SUBJECT-SUFFIX``), labelled role
``task``. The reconciler never sees it (it observes role ``replica``), and a
restarted daemon finds it again by its labels: a job run is adopted, an
orphaned one-off run (its CLI and its daemon gone) is removed (``reap``).

Output reaches ``flotilla run`` as the container's log stream, relayed by the
API as NDJSON lines (``{"progress": {"output": ...}}`` then ``{"result":
{"exit_code": N}}``): the same framing as ``up``'s progress, so the client
reads it with the code it has, and it survives a terminal: the daemon holds the
container, the CLI only reads. Closing the stream (Ctrl-C, a killed CLI) removes
the container. With ``-i`` the task is instead created with its standard input
open, attached before it starts (``Tasks.attach``) and pumped both ways by
daemon/attach.py; it is removed at the session's end all the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import anyio

from flotilla import labels
from flotilla.daemon.attach import Session
from flotilla.daemon.injection import SecretInjector
from flotilla.engines.docker import DockerEngine
from flotilla.engines.docker.attach import Attached
from flotilla.engines.docker.containers import Overrides
from flotilla.errors import FlotillaError
from flotilla.naming import cache_network, egress_network, internal_network, task_name
from flotilla.spec import AppSpec, config_hash
from flotilla.spec.tasks import task_spec

log = logging.getLogger(__name__)
TAIL_LINES = 40  # lines of output kept for a job's history or a failed before_deploy's message
RUN = "run"
JOB = "job"
BEFORE_DEPLOY = "before-deploy"
ALL_KINDS = (RUN, JOB, BEFORE_DEPLOY)
POLL = 0.05


@dataclass(frozen=True)
class Started:
    app: str
    name: str
    container_id: str


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: stopped at its timeout
    output: str  # the last TAIL_LINES lines
    seconds: float


def before_deploy_due(spec: AppSpec, before: AppSpec | None) -> list[str]:
    """The services whose ``before_deploy`` this ``up`` runs: those whose containers change (config hash)."""
    return [name for name, svc in sorted(spec.services.items()) if svc.before_deploy is not None and (
        before is None or name not in before.services
        or config_hash(before, name) != config_hash(spec, name))]


def run_before_deploy(tasks: Tasks, runtime: AppSpec, *, service: str) -> Outcome:
    """The service's ``before_deploy`` in the new revision's image (``runtime``), to its end or timeout."""
    step = runtime.services[service].before_deploy
    started = tasks.start(task_spec(runtime, service=service, command=step.command), service=service,
                          kind=BEFORE_DEPLOY, subject=service, suffix=now_suffix())
    return tasks.run_to_end(started, timeout=step.timeout)


class Tasks:
    """Start, watch and remove task containers."""

    def __init__(self, *, engine: DockerEngine, injector: SecretInjector | None, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._injector = injector
        self._clock = clock

    def start(self, spec: AppSpec, *, service: str, kind: str, subject: str, suffix: str,
              extra: Mapping[str, str] | None = None, tty: bool = False, stdin: bool = False,
              start: bool = True) -> Started:
        """Start ``service`` of ``spec`` (spec/tasks.py) as a task container; with ``start=False`` only
        create it, to be started by ``start_created`` (the costly part done ahead of time)."""
        name = task_name(app=spec.app, kind=kind, subject=subject, suffix=suffix)
        svc = spec.services[service]
        self._engine.ensure_network(app=spec.app, name=internal_network(spec.app), internal=True)
        if svc.egress:
            self._engine.ensure_network(app=spec.app, name=egress_network(spec.app), internal=False)
        for cache in svc.caches:  # a first deploy's migration runs before the reconciler made them
            self._engine.ensure_network(app=spec.app, name=cache_network(spec.app, cache), internal=True)
        overrides = self._injector.prepare_named(spec, service=service, replica=name) if self._injector \
            else Overrides()
        task_labels = {labels.TASK: kind, labels.STARTED: repr(self._clock()), **(extra or {})}
        try:
            container_id = self._engine.start_task(spec=spec, service=service, name=name, task_labels=task_labels,
                                                   overrides=overrides, tty=tty, stdin=stdin, start=start)
        except BaseException:
            self._forget_secrets(spec.app, name)
            raise
        return Started(spec.app, name, container_id)

    def start_created(self, started: Started) -> None:
        self._engine.start_created(started.container_id)

    def attach(self, started: Started, *, tty: bool, size: tuple[int, int] | None) -> Session:
        """Attach to a task created with ``stdin`` (and ``start=False``), start it, give its terminal
        ``size``: the session ``flotilla run -i`` talks to (daemon/attach.py), which removes it at its end."""
        try:
            attached = self._engine.attach_task(started.container_id, tty=tty)
            try:
                self.start_created(started)
                _resize(attached, size)
            except BaseException:
                attached.close()
                raise
        except BaseException:
            self.remove(started)
            raise
        return Session(attached, exit_code=lambda: self._engine.wait_task(started.container_id, timeout=30),
                       end=lambda: self.remove(started))

    def output(self, container_id: str) -> str:
        return "\n".join(self._engine.last_log_lines(container_id, lines=TAIL_LINES))

    def remove(self, started: Started) -> None:
        """The container (killed if it still runs) and its secrets."""
        try:
            self._engine.remove_replica(started.container_id, graceful=False)
        finally:
            self._forget_secrets(started.app, started.name)

    def stop(self, started: Started, *, grace: int = 5) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the container stays for its exit code and output."""
        with contextlib.suppress(FlotillaError):
            self._engine.stop_task(started.container_id, grace=grace)

    def run_to_end(self, started: Started, *, timeout: float) -> Outcome:
        """Wait for the task (at most ``timeout``), keep its output's tail, remove it."""
        begun = self._clock()
        try:
            code = self._engine.wait_task(started.container_id, timeout=timeout)
            output = self.output(started.container_id)
        finally:
            self.remove(started)
        return Outcome(exit_code=code, output=output, seconds=self._clock() - begun)

    def reap(self, app: str, *, kinds: tuple[str, ...] = (RUN, BEFORE_DEPLOY), before: float | None = None
             ) -> list[str]:
        """Remove the app's tasks of ``kinds`` (started before ``before``, when given): the one-off runs a
        previous daemon left, whose clients are gone, or every task at ``down``."""
        removed = []
        for task in self._engine.tasks(app):
            born = float(task.labels.get(labels.STARTED, "0") or 0)
            if task.labels.get(labels.TASK) in kinds and (before is None or born < before):
                self.remove(Started(app, task.name, task.container_id))
                removed.append(task.name)
        return removed

    def _forget_secrets(self, app: str, name: str) -> None:
        if self._injector:
            self._injector.forget(app, name)


async def stream_task(tasks: Tasks, engine: DockerEngine, started: Started) -> AsyncIterator[bytes]:
    """NDJSON: the task's output as it comes, then its exit code; the task is removed when this ends,
    also when the client goes away first (Starlette then closes the generator)."""
    try:
        async for line in _output_lines(engine.logs(started.container_id, follow=True), name=started.name):
            yield line
        code = await anyio.to_thread.run_sync(lambda: engine.wait_task(started.container_id, timeout=30))
        yield (json.dumps({"result": {"exit_code": code, "task": started.name}}) + "\n").encode()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(tasks.remove, started)


def exec_session(engine: DockerEngine, container_id: str, command: list[str], *, tty: bool,
                 size: tuple[int, int] | None) -> Session:
    """``flotilla exec -i``: ``command`` started in a running container, its streams for daemon/attach.py."""
    exec_id, attached = engine.exec_attached(container_id, command, tty=tty)
    _resize(attached, size)
    return Session(attached, exit_code=lambda: engine.exec_exit_code(exec_id, wait=5.0))


def _resize(attached: Attached, size: tuple[int, int] | None) -> None:
    """The terminal's first size, before any input is forwarded (so a command reading it sees it)."""
    if size is not None:
        try:
            attached.resize(*size)
        except FlotillaError as exc:
            log.info("could not give a terminal its size: %s", exc)


async def stream_exec(engine: DockerEngine, exec_id: str, output) -> AsyncIterator[bytes]:
    """As stream_task, for a command run inside a replica (``flotilla exec``)."""
    async for line in _output_lines(output, name=f"exec-{exec_id[:12]}"):
        yield line
    code = await anyio.to_thread.run_sync(engine.exec_exit_code, exec_id)
    yield (json.dumps({"result": {"exit_code": code}}) + "\n").encode()


async def _output_lines(stream, *, name: str) -> AsyncIterator[bytes]:
    """``{"progress": {"output": ...}}`` lines of a blocking byte stream, read by a thread of its own."""
    chunks: queue.Queue = queue.Queue(maxsize=1000)
    reader = threading.Thread(target=_relay, args=(stream, chunks), daemon=True, name=name)
    reader.start()
    while reader.is_alive() or not chunks.empty():
        batch = _drain(chunks)
        if batch:
            yield (json.dumps({"progress": {"output": batch}}) + "\n").encode()
        else:
            await anyio.sleep(POLL)


def _relay(stream, chunks: queue.Queue) -> None:
    try:
        for chunk in stream:
            chunks.put(chunk.decode(errors="replace"))
    except FlotillaError as exc:
        log.info("task output stream ended: %s", exc)
    except Exception:  # a closed socket after the task was removed
        log.debug("task output stream closed", exc_info=True)


def _drain(chunks: queue.Queue) -> str:
    batch = []
    with contextlib.suppress(queue.Empty):
        while len(batch) < 1000:
            batch.append(chunks.get_nowait())
    return "".join(batch)


def now_suffix(clock: Callable[[], float] = time.time) -> str:
    """A suffix unique enough for a one-off task's name: the time in milliseconds."""
    return str(int(clock() * 1000))
