"""The rules of the top-level ``jobs:`` section: scheduled containers (plan/jobs.py runs them).

Apart from ``validate_service.py`` because a job is not a service: it has no
port, routes or replicas, but a schedule, a timeout and the policies for a run
still going when the next is due (``concurrency``) and for runs due while the
daemon was down (``missed``). Its command, env, secrets and resources follow
the service rules, so they are checked by the same functions. A job takes its
image from a service (``service:``, the image the deploy pinned, with that
service's env, secrets and networks) or names one (``image:``).
"""

from __future__ import annotations

from collections.abc import Collection

from flotilla.spec import checks as c
from flotilla.spec import schedules
from flotilla.spec import service_parts as parts
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import JobSpec
from flotilla.spec.service_parts import ServiceContext
from flotilla.spec.validate_service import command, env

JOB_KEYS = ("schedule", "command", "service", "image", "env", "secrets", "resources", "timeout",
            "concurrency", "missed")
_SOURCE_HINT = "add service: NAME (run in that service's image, env and secrets) or image: IMAGE"


def jobs(rep: Reporter, value: object, *, services: Collection[str], ctx: ServiceContext) -> dict[str, JobSpec]:
    """Every valid job of ``jobs:``; the problems of the others are in ``rep``."""
    bodies = c.string_map(rep, ("jobs",), value, hint=(
        "give a mapping of job names to settings, e.g. jobs: {report: {schedule: '0 3 * * *', "
        "service: web, command: python3 -m report}}"))
    found = {}
    for name, body in (bodies or {}).items():
        path = ("jobs", name)
        valid_name = c.name(rep, path, name, what="job", at_key=True)
        job = _job(rep, path, body, services=services, ctx=ctx)
        if valid_name and job:
            found[name] = job
    return found


def _job(rep: Reporter, path: Path, body: object, *, services: Collection[str], ctx: ServiceContext
         ) -> JobSpec | None:
    known = c.mapping(rep, path, body, allowed=JOB_KEYS, required={
        "schedule": "add schedule: a cron schedule in UTC, e.g. schedule: '0 3 * * *'"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {
        "schedule": _schedule,
        "command": lambda r, p, v: command(r, p, v, ctx),
        "service": lambda r, p, v: _service(r, p, v, services=services),
        "image": lambda r, p, v: c.word(r, p, v, hint="give the image to run, e.g. shop-worker:1"),
        "env": lambda r, p, v: env(r, p, v, ctx),
        "secrets": lambda r, p, v: parts.secrets(r, p, v, ctx),
        "resources": lambda r, p, v: parts.resources(r, p, v, ctx),
        "timeout": c.duration,
        "concurrency": lambda r, p, v: c.choice(r, p, v, options=("forbid", "allow", "replace")),
        "missed": lambda r, p, v: c.choice(r, p, v, options=("run_once", "skip")),
    })
    if ("service" in known) == ("image" in known):
        what = "both service and image" if "service" in known else "neither service nor image"
        rep.add(path, f"job has {what}", _SOURCE_HINT + " (one of the two)", key=True)
        return None
    return JobSpec(**clean) if len(clean) == len(known) else None


def _schedule(rep: Reporter, path: Path, value: object) -> str | None:
    problem = schedules.schedule_problem(value)
    if problem:
        rep.add(path, problem, schedules.SCHEDULE_HINT)
        return None
    return " ".join(schedules.fields(value))


def _service(rep: Reporter, path: Path, value: object, *, services: Collection[str]) -> str | None:
    name = c.text(rep, path, value, hint="give the name of a service under services:")
    if name is None or name in services:
        return name
    rep.add(path, f"unknown service {c.clip(name)}", c.suggest(name, sorted(services), what="services"))
    return None
