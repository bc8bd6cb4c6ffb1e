"""The scheduled-job loop: observe the job containers, plan (plan/jobs.py), start, stop, record.

Every tick (at most ``TICK`` seconds apart, sooner when a schedule time comes
first) it reads each app's job containers back from Docker: a container it has
not recorded (a daemon killed between starting it and writing it down) is
recorded from its labels, one that ended is recorded with its exit code,
duration and the tail of its output, then removed. Then the planner decides,
from the stored cursors and the runs in flight, and this part applies it. A
failed run is loud: an event, ``failed`` in ``flotilla jobs ls``, and
``flotilla_job_runs_total{outcome="failed"}`` in the daemon's metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flotilla import labels
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.events import EventLog
from flotilla.daemon.job_store import FAILED, RUNNING, SKIPPED, JobRun, JobStore
from flotilla.daemon.tasks import JOB, Started, Tasks, now_suffix
from flotilla.engines.docker import DockerEngine
from flotilla.engines.docker.containers import TaskContainer
from flotilla.errors import FlotillaError, NotFoundError
from flotilla.plan.jobs import JobAction, RunInFlight, plan_jobs
from flotilla.spec import AppSpec
from flotilla.spec.schedules import next_fire
from flotilla.spec.tasks import job_spec

log = logging.getLogger(__name__)
TICK = 1.0
# A run's container is created this long before its schedule time and only started at it: Docker's
# create (and the secrets' files) then cost nothing at the time itself.
PREPARE = 2.0
TRIGGER = "io.flotilla.trigger"  # "schedule" or "manual"
STOP_GRACE = 5


class Jobs:
    """Scheduled jobs of every app: the loop, ``jobs ls``, ``jobs logs``, ``jobs run``."""

    def __init__(self, *, apps: AppRepository, store: JobStore, tasks: Tasks, engine: DockerEngine,
                 events: EventLog, clock: Callable[[], float]) -> None:
        self._apps = apps
        self._store = store
        self._tasks = tasks
        self._engine = engine
        self._events = events
        self._clock = clock
        self._stopping: set[str] = set()
        self._prepared: dict[tuple[str, float], TaskContainer] = {}  # this tick's created, unstarted runs
        self._reaped: set[str] = set()
        self._born = clock()  # tasks of kind run started before this belong to a previous daemon
        self.outcomes: dict[tuple[str, str, str], int] = {}  # (app, job, outcome) -> runs, for the metrics

    # -- the loop ------------------------------------------------------------

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            specs = [s for s in self._apps.active() if s.jobs or s.app not in self._reaped]
            for spec in specs:
                try:
                    self.tick(spec)
                except FlotillaError as exc:
                    log.warning("jobs of %s: %s", spec.app, exc)
                except Exception:
                    log.exception("jobs of %s failed", spec.app)
            stop.wait(self._sleep(specs))

    def _sleep(self, specs: list[AppSpec]) -> float:
        now = self._clock()
        soonest = min((next_fire(j.schedule, after=now) for s in specs for j in s.jobs.values()), default=now + TICK)
        return max(0.0, min(TICK, soonest - now))

    def tick(self, spec: AppSpec) -> tuple[JobAction, ...]:
        """One pass for one app: observe, plan, apply; the actions taken."""
        if spec.app not in self._reaped:
            self._tasks.reap(spec.app, before=self._born)  # a previous daemon's one-off runs: their clients are gone
            self._reaped.add(spec.app)
        containers = [t for t in self._engine.tasks(spec.app) if t.labels.get(labels.TASK) == JOB]
        self._prepared = {(t.labels.get(labels.JOB, ""), float(t.labels.get(labels.DUE, "0"))): t
                          for t in containers if t.created and t.labels.get(TRIGGER) == "schedule"}
        running = self._observe(spec, [t for t in containers if t not in self._prepared.values()])
        now = self._clock()
        for job in spec.jobs:
            self._store.start_cursor(spec.app, job, now)
        actions = plan_jobs(jobs=spec.jobs, cursors=self._store.cursors(spec.app), running=running, now=now)
        for action in actions:
            self._apply(spec, action, running)
        self._prepare(spec, now=self._clock())
        return actions

    def _prepare(self, spec: AppSpec, *, now: float) -> None:
        """Create each run due within PREPARE seconds; remove prepared runs whose time was decided without them."""
        cursors = self._store.cursors(spec.app)
        for (job, due), task in self._prepared.items():
            if job not in spec.jobs or due <= cursors.get(job, 0.0):
                self._tasks.remove(Started(spec.app, task.name, task.container_id))
        for name, job in spec.jobs.items():
            due = next_fire(job.schedule, after=now)
            if due - now <= PREPARE and (name, due) not in self._prepared:
                try:
                    self._create(spec, name, due=due, trigger="schedule", start=False)
                except FlotillaError as exc:  # the run itself will try again, and record why
                    log.info("job %s of %s not prepared: %s", name, spec.app, exc)

    def _observe(self, spec: AppSpec, containers: list[TaskContainer]) -> list[RunInFlight]:
        running = []
        for task in containers:
            job, due = task.labels.get(labels.JOB, ""), float(task.labels.get(labels.DUE, "0"))
            trigger = task.labels.get(TRIGGER, "schedule")
            started = float(task.labels.get(labels.STARTED, "0"))  # its creation; prepared: before its time
            started = max(started, due) if trigger == "schedule" else started
            self._store.record(app=spec.app, job=job, due=due, trigger=trigger, started=started, state=RUNNING,
                               container_id=task.container_id)
            if task.running:
                running.append(RunInFlight(job, due, started, task.container_id,
                                           stopping=task.container_id in self._stopping))
            else:
                self._finish(spec.app, task)
        return running

    def _finish(self, app: str, task: TaskContainer) -> None:
        output = self._tasks.output(task.container_id)
        run = self._store.finish(app=app, container_id=task.container_id, ended=self._clock(),
                                 exit_code=task.exit_code, output=output)
        self._tasks.remove(Started(app, task.name, task.container_id))
        self._stopping.discard(task.container_id)
        if run is not None:
            self._announce(run)

    def _announce(self, run: JobRun) -> None:
        key = (run.app, run.job, run.state)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        took = f" after {run.duration:.1f}s" if run.duration is not None else ""
        if run.state == FAILED:
            tail = run.output.strip().splitlines()[-3:]
            why = f" ({run.reason})" if run.reason else ""
            self._events.record(run.app, "job", run.job, f"job {run.job} run {run.number} FAILED with exit code "
                                f"{run.exit_code}{took}{why}" + (f"; last output: {' | '.join(tail)}" if tail else ""))
        else:
            self._events.record(run.app, "job", run.job, f"job {run.job} run {run.number} succeeded{took}")

    def _apply(self, spec: AppSpec, action: JobAction, running: list[RunInFlight]) -> None:
        if action.kind == "skip":
            self._store.record(app=spec.app, job=action.job, due=action.due, trigger="schedule",
                               started=self._clock(), state=SKIPPED, reason=action.reason)
            self._events.record(spec.app, "job", action.job, f"job {action.job} skipped a run: {action.reason}")
            self.outcomes[(spec.app, action.job, SKIPPED)] = self.outcomes.get((spec.app, action.job, SKIPPED), 0) + 1
        elif action.kind == "stop":
            self._stop(spec.app, action, running)
        else:
            self.start(spec, action.job, due=action.due, trigger="schedule", reason=action.reason)

    def _stop(self, app: str, action: JobAction, running: list[RunInFlight]) -> None:
        self._stopping.add(action.container_id)
        self._store.note(app=app, container_id=action.container_id, reason=action.reason)
        self._events.record(app, "job", action.job, f"job {action.job}: stopping the run due at {action.due:.0f}: "
                            f"{action.reason}")
        name = next((r.container_id for r in running if r.container_id == action.container_id), "")
        started = Started(app, name, action.container_id)
        threading.Thread(target=self._tasks.stop, args=(started,), kwargs={"grace": STOP_GRACE}, daemon=True,
                         name=f"stop-{action.container_id[:12]}").start()

    def start(self, spec: AppSpec, job: str, *, due: float, trigger: str, reason: str) -> int:
        """Start a run of ``job`` (its prepared container, if any); recorded with its container, or as failed
        when it cannot start."""
        started_at = self._clock()
        try:
            prepared = self._prepared.pop((job, due), None) if trigger == "schedule" else None
            if prepared:
                started = Started(spec.app, prepared.name, prepared.container_id)
                self._tasks.start_created(started)
            else:
                started = self._create(spec, job, due=due, trigger=trigger, start=True)
        except FlotillaError as exc:
            number = self._store.record(app=spec.app, job=job, due=due, trigger=trigger, started=started_at,
                                        state=FAILED, reason=f"could not start: {exc.message}")
            self._announce(self._store.run(spec.app, job, number))
            return number
        number = self._store.record(app=spec.app, job=job, due=due, trigger=trigger, started=started_at,
                                    state=RUNNING, reason=reason, container_id=started.container_id)
        self._events.record(spec.app, "job", job, f"job {job} run {number} started: {reason}")
        return number

    def _create(self, spec: AppSpec, job: str, *, due: float, trigger: str, start: bool) -> Started:
        suffix = f"{due:.0f}" if trigger == "schedule" else f"manual-{now_suffix(self._clock)}"
        task_app, service = job_spec(spec, job)
        return self._tasks.start(task_app, service=service, kind=JOB, subject=job, suffix=suffix, start=start,
                                 extra={labels.JOB: job, labels.DUE: repr(due), TRIGGER: trigger})

    # -- the API -------------------------------------------------------------

    def run_now(self, app: str, job: str) -> dict:
        """``flotilla jobs run APP JOB``: a run now, whatever the schedule (the cursor does not move)."""
        spec = self._require(app, job)
        number = self.start(spec, job, due=self._clock(), trigger="manual", reason="started by hand")
        return self._store.run(app, job, number).to_dict()

    def list(self, app: str) -> dict:
        spec = self._apps.require(app)
        now = self._clock()
        rows = []
        for name, job in sorted(spec.jobs.items()):
            runs = self._store.runs(app, name, limit=20)
            last = next((r for r in runs if r.state != SKIPPED), None)
            rows.append({"job": name, "schedule": job.schedule, "next": next_fire(job.schedule, after=now),
                         "status": last.state if last else "never run", "last": last.to_dict() if last else None,
                         "running": sum(1 for r in runs if r.state == RUNNING)})
        return {"app": app, "jobs": rows}

    def logs(self, app: str, job: str, *, number: int | None) -> dict:
        self._require(app, job)
        runs = [r for r in self._store.runs(app, job, limit=200) if r.state != SKIPPED]
        if number is not None:
            runs = [r for r in runs if r.number == number]
        if not runs:
            raise NotFoundError(f"job {job} of {app} has no run{f' {number}' if number else ''} yet; "
                                f"`flotilla jobs ls {app}` shows its runs, `flotilla jobs run {app} {job}` starts one")
        run = runs[0]
        if run.state == RUNNING and run.container_id:
            run = JobRun(**{**run.__dict__, "output": self._tasks.output(run.container_id)})
        return run.to_dict(with_output=True)

    def history(self, app: str, job: str) -> dict:
        self._require(app, job)
        return {"app": app, "job": job, "runs": [r.to_dict() for r in self._store.runs(app, job)]}

    def _require(self, app: str, job: str) -> AppSpec:
        spec = self._apps.require(app)
        if job not in spec.jobs:
            raise NotFoundError(f"app {app} has no job {job!r}; it has: {', '.join(sorted(spec.jobs)) or 'none'}")
        return spec

    def forget(self, app: str) -> None:
        self._store.forget(app)

    def metrics(self) -> list[str]:
        """Prometheus lines: runs per app, job and outcome since the daemon started."""
        lines = ["# HELP flotilla_job_runs_total Scheduled-job runs finished (or skipped) since the daemon started.",
                 "# TYPE flotilla_job_runs_total counter"]
        for (app, job, outcome), count in sorted(self.outcomes.items()):
            lines.append(f'flotilla_job_runs_total{{app="{app}",job="{job}",outcome="{outcome}"}} {count}')
        return lines
