"""Cron schedules: the one module that imports croniter.

Scheduled jobs (``jobs:``) and scheduled backups both say *when* in cron
syntax. Parsing cron by hand is a classic source of bugs (day-of-month OR
day-of-week, ranges, steps, ``@daily``), so a well-kept library does it, behind
three pure functions: whether a string is a valid schedule (with a message
that says what is wrong and what to do), the first fire time after a moment,
and the last fire time at or before one. Times are Unix seconds, and every
schedule is read in UTC, so a schedule means the same on every host and in a
Kubernetes CronJob (rendered with ``timeZone: Etc/UTC``).

A schedule has 5 fields (minute hour day-of-month month day-of-week) or 6, the
sixth being seconds (croniter's order: ``* * * * * */10`` is every ten
seconds); the macros ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
``@yearly`` (``@annually``) and ``@midnight`` are accepted. Kubernetes knows
no seconds field, so a 6-field schedule runs on one host only (the renderer
refuses it with its own message).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

SCHEDULE_HINT = (
    "write 5 fields 'minute hour day-of-month month day-of-week' (e.g. '*/15 * * * *', "
    "'0 3 * * *'), 6 with seconds last ('* * * * * */10'), or @hourly/@daily/@weekly/@monthly"
)
# A schedule time handled this many seconds late still counts as on time; later, it was missed
# (plan/jobs.py; a Kubernetes CronJob's startingDeadlineSeconds with ``missed: skip``).
ON_TIME = 30.0
_MACROS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"})


def fields(schedule: str) -> list[str]:
    """The whitespace-separated fields of a schedule (one for a macro)."""
    return schedule.split()


def has_seconds(schedule: str) -> bool:
    """True for a 6-field schedule, whose last field is seconds."""
    return len(fields(schedule)) == 6


def schedule_problem(schedule: object) -> str | None:
    """What is wrong with ``schedule`` as a cron schedule, or None when it is valid."""
    if not isinstance(schedule, str) or not schedule.strip():
        return "a schedule must be a non-empty cron string"
    parts = fields(schedule)
    if len(parts) == 1 and parts[0].lower() in _MACROS:
        return None
    if len(parts) not in (5, 6):
        return f"{schedule!r} has {len(parts)} fields; a schedule has 5 (or 6, with seconds last)"
    try:
        croniter(schedule, 0).get_next(float)
    except (CroniterError, ValueError, KeyError) as exc:
        return f"{schedule!r} is not a valid cron schedule ({exc})"
    return None


def next_fire(schedule: str, *, after: float) -> float:
    """The first time strictly after ``after`` (Unix seconds, UTC) at which ``schedule`` fires."""
    return float(croniter(schedule, _utc(after)).get_next(float))


def last_fire(schedule: str, *, at: float) -> float:
    """The latest time at or before ``at`` (Unix seconds, UTC) at which ``schedule`` fired."""
    before = float(croniter(schedule, _utc(at)).get_prev(float))
    following = next_fire(schedule, after=before)
    return following if following <= at else before


def _utc(moment: float) -> datetime:
    """``moment`` as a UTC datetime, rounded down to the microsecond (fromtimestamp rounds to nearest,
    which would put a moment just before a fire time at the fire time)."""
    whole = math.floor(moment)
    micros = min(999_999, math.floor((moment - whole) * 1_000_000))
    return datetime.fromtimestamp(whole, UTC) + timedelta(microseconds=micros)
