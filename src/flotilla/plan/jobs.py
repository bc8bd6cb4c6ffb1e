"""Scheduled jobs, pure: which runs to start, skip and stop, each with a reason.

The daemon's job loop (daemon/jobs.py) observes the runs in flight (their
containers carry the job and the schedule time they run for) and keeps, per
job, a *cursor*: the latest schedule time already handled (started or
skipped). Given the jobs, the cursors, the runs in flight and ``now``, this
module decides, so the rules can be read and property-tested without Docker:

* at most one decision per schedule time: a time at or before the cursor is
  never started again, which is what keeps a run from being doubled, across
  ticks and across daemon restarts (the cursor is stored, the runs in flight
  are read back from their labels);
* a run due while another of the job is still going follows ``concurrency``:
  ``forbid`` skips it, ``allow`` starts it too, ``replace`` stops the old one;
* a schedule time that was not handled within ``ON_TIME`` seconds was missed
  (the daemon was down or stalled): ``missed: run_once`` starts one run for
  the latest of them, however many were missed, ``missed: skip`` only skips;
* a run older than its job's ``timeout`` is stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from flotilla.spec.models import JobSpec
from flotilla.spec.schedules import ON_TIME, last_fire, next_fire

# ON_TIME (spec/schedules.py): the loop ticks at least every second, so only a daemon that was down
# (or stalled) handles a schedule time that late.
# How many missed schedule times a reason counts before it says "more than".
COUNT_LIMIT = 1000


@dataclass(frozen=True)
class RunInFlight:
    """A run whose container exists and has not been recorded as finished."""

    job: str
    due: float  # the schedule time it runs for (the request time of a run by hand)
    started: float
    container_id: str
    stopping: bool = False  # a stop was already asked for


@dataclass(frozen=True)
class JobAction:
    kind: Literal["start", "skip", "stop"]
    job: str
    due: float  # start and skip: the schedule time decided; stop: the stopped run's
    reason: str
    container_id: str = ""  # stop: the run to stop


def plan_jobs(*, jobs: Mapping[str, JobSpec], cursors: Mapping[str, float], running: Sequence[RunInFlight],
              now: float) -> tuple[JobAction, ...]:
    """What to do this tick. A job without a cursor is new: its first run is its next schedule time."""
    actions: list[JobAction] = []
    for name, job in sorted(jobs.items()):
        mine = [r for r in running if r.job == name]
        stops = _timeouts(name, job, mine, now=now)
        actions += stops
        live = [r for r in mine if not r.stopping and r.container_id not in {s.container_id for s in stops}]
        if name in cursors:
            actions += _due(name, job, cursor=cursors[name], live=live, now=now)
    return tuple(actions)


def _timeouts(name: str, job: JobSpec, runs: Sequence[RunInFlight], *, now: float) -> list[JobAction]:
    return [JobAction("stop", name, r.due, f"timed out: running for {now - r.started:.0f}s, "
                      f"longer than its timeout of {job.timeout:g}s", r.container_id)
            for r in runs if not r.stopping and now - r.started >= job.timeout]


def _due(name: str, job: JobSpec, *, cursor: float, live: Sequence[RunInFlight], now: float) -> list[JobAction]:
    latest = last_fire(job.schedule, at=now)
    if latest <= cursor:
        return []
    missed = now - next_fire(job.schedule, after=cursor) > ON_TIME  # the first unhandled time is long past
    late = now - latest > ON_TIME
    if late and job.missed == "skip":
        return [JobAction("skip", name, latest, f"{_missed(job.schedule, cursor=cursor, latest=latest)} "
                          f"while the daemon was down; missed: skip waits for the next schedule time")]
    why = f"scheduled at {_clock(latest)}"
    if missed:
        why = (f"{_missed(job.schedule, cursor=cursor, latest=latest)} while the daemon was down; "
               f"missed: {job.missed} runs the latest once" if late else
               f"{why}; earlier runs were missed while the daemon was down")
    if live and job.concurrency == "forbid":
        return [JobAction("skip", name, latest, f"the run due at {_clock(live[0].due)} is still going "
                          f"(concurrency: forbid)")]
    stops = [JobAction("stop", name, r.due, f"replaced by the run due at {_clock(latest)} (concurrency: replace)",
                       r.container_id) for r in live] if job.concurrency == "replace" else []
    return [*stops, JobAction("start", name, latest, why)]


def _missed(schedule: str, *, cursor: float, latest: float) -> str:
    """``1 run missed`` / ``3 runs missed`` (the schedule times after the cursor, up to the latest)."""
    count, moment = 0, cursor
    while count < COUNT_LIMIT:
        moment = next_fire(schedule, after=moment)
        if moment > latest:
            break
        count += 1
    amount = f"more than {COUNT_LIMIT}" if count >= COUNT_LIMIT else str(count)
    return f"{amount} run{'s' if count != 1 else ''} missed (the latest due at {_clock(latest)})"


def _clock(moment: float) -> str:
    """A schedule time as the UTC wall clock (pure: no local time zone involved)."""
    seconds = int(moment) % 86400
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d} UTC"
