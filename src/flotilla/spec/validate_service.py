"""The rules for one service of a spec: every key, then the rules across its keys.

Split from ``validate.py`` because a service has most of the spec's keys; the
app-level module handles what spans services (names, duplicate routes), and
``service_parts.py`` the nested sections (health, routes, secrets, autoscale...).
Every check reports and carries on, so one run lists all of a service's
problems; a ServiceSpec is built only when the whole spec is clean.
"""

from __future__ import annotations

from flotilla.spec import checks as c
from flotilla.spec import concurrency, hardening, units, volumes
from flotilla.spec import service_parts as parts
from flotilla.spec import validate_images as images
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import BeforeDeploySpec, ServiceSpec
from flotilla.spec.service_parts import MAX_REPLICAS, ServiceContext, env_name

SERVICE_KEYS = ("image", "command", "port", "replicas", "env", "health", "deploy", "resources", "egress",
                "routes", "max_body", "secrets", "autoscale", "caches",
                "user", "read_only", "cap_add", "pids_limit", "concurrency", "queue_timeout", "before_deploy")
SERVICE_KEYS += volumes.SERVICE_KEYS  # volumes, host paths and backups: volumes.py
SERVICE_KEYS += images.SERVICE_KEYS  # where the image comes from: validate_images.py
SERVICE_KEYS += ("standby",)
# Warm standby replicas each cost a running replica's memory; more than this is a spec mistake.
MAX_STANDBY = 50
_PORT_HINT = "add port: the port the service listens on inside its container"


def check_service(rep: Reporter, path: Path, body: object, *, ctx: ServiceContext
                  ) -> ServiceSpec | None:
    known = c.mapping(rep, path, body, allowed=SERVICE_KEYS,
                      required={"image": "add image: the container image to run, e.g. shop-web:1"})
    if known is None:
        return None
    clean = {key: _CHECKS[key](rep, path + (key,), value, ctx) for key, value in known.items()}
    _check_port_needed(rep, path, known)
    _check_max_body_routed(rep, path, known)
    _check_secrets_not_in_env(rep, path, known)
    _check_autoscale_fits(rep, path, known=known, clean=clean)
    concurrency.check_fits(rep, path, known=known, routed=_has_routes(known))
    _check_standby_routed(rep, path, known)
    volumes.check_fits(rep, path, known=known, clean=clean)
    if rep.count() or None in clean.values():
        return None
    if "autoscale" in clean and "replicas" not in clean:
        clean["replicas"] = max(1, clean["autoscale"].min)
    return ServiceSpec(**clean)


# -- one key each ---------------------------------------------------------------------------

def _image(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> str | None:
    return c.word(rep, path, value, hint="give the image to run, e.g. shop-web:1")


def command(rep: Reporter, path: Path, value: object, ctx: ServiceContext
             ) -> tuple[str, ...] | None:
    return c.command(rep, path, value, empty_hint="remove command to run the image's default command")


_MIGRATION_HINT = "give the command to run before the rollout (e.g. python3 migrate.py), or remove before_deploy"


def _migration(rep: Reporter, path: Path, value: object) -> tuple[str, ...] | None:
    return c.command(rep, path, value, empty_hint=_MIGRATION_HINT)


def before_deploy(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> BeforeDeploySpec | None:
    """``before_deploy: CMD`` or ``{command: CMD, timeout: 10m}``: run once in a new revision's image."""
    if not isinstance(value, dict):
        words = _migration(rep, path, value)
        return None if words is None else BeforeDeploySpec(command=words)
    known = c.mapping(rep, path, value, allowed=("command", "timeout"),
                      required={"command": "add command: the migration to run, e.g. command: python3 migrate.py"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"command": _migration, "timeout": c.duration})
    return BeforeDeploySpec(**clean) if len(clean) == len(known) and "command" in clean else None


def _port(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> int | None:
    return c.integer(rep, path, value, low=1, high=65535)


def _replicas(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> int | None:
    return c.integer(rep, path, value, low=0, high=MAX_REPLICAS)


def _egress(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> bool | None:
    return c.boolean(rep, path, value)


def _max_body(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> int | None:
    return c.size(rep, path, value, minimum=1, what="a size", examples="1M or 512k")


def env(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> dict | None:
    items = c.string_map(rep, path, value, hint="give a mapping of variable names to values, "
                         "e.g. env: {LOG_LEVEL: info}")
    if items is None:
        return None
    clean = {key: (env_name(rep, path + (key,), key), _env_value(rep, path + (key,), item))
             for key, item in items.items()}
    if any(None in pair for pair in clean.values()):
        return None
    return {key: pair[1] for key, pair in clean.items()}


def _env_value(rep: Reporter, path: Path, value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if units.is_number(value):
        return rep.locator.raw(path) or str(value)
    hint = ('write "" for an empty value' if value is None
            else "quote it to pass it as one string")
    rep.add(path, f"expected a string, number or boolean, got {c.describe(value)}", hint)
    return None


def _caches(rep: Reporter, path: Path, value: object, ctx: ServiceContext
            ) -> tuple[str, ...] | None:
    items = c.sequence(rep, path, value, of="cache names")
    if items is None:
        return None
    names: list[str] = []
    for index, item in enumerate(items):
        name = c.text(rep, path + (index,), item, hint="give the name of a cache under caches:")
        if name is not None and _cache_ref_ok(rep, path + (index,), name, ctx=ctx, seen=names):
            names.append(name)
    return tuple(names) if len(names) == len(items) else None


def _cache_ref_ok(rep: Reporter, path: Path, name: str, *, ctx: ServiceContext,
                  seen: list[str]) -> bool:
    if name in seen:
        rep.add(path, f"cache {name!r} is listed twice", "list each cache once")
        return False
    if name in ctx.cache_names:
        return True
    defined = ctx.cache_names
    hint = (c.suggest(name, defined, what="defined caches") if defined
            else "define it under the top-level caches: key")
    if defined and hint.startswith("did you mean"):
        hint += f" (defined caches: {', '.join(defined)})"
    rep.add(path, f"unknown cache {c.clip(name)}", hint)
    return False


_CHECKS = {
    "image": _image, "command": command, "port": _port, "replicas": _replicas, "env": env,
    "health": parts.health, "deploy": parts.deploy, "resources": parts.resources, "egress": _egress,
    "routes": parts.routes,
    "max_body": _max_body, "secrets": parts.secrets, "autoscale": parts.autoscale, "caches": _caches,
    "user": hardening.user, "read_only": hardening.read_only, "cap_add": hardening.cap_add,
    "pids_limit": hardening.pids_limit,
    "concurrency": concurrency.concurrency, "queue_timeout": concurrency.queue_timeout,
    "before_deploy": before_deploy,
}


_CHECKS.update({"pull": images.pull, "build": images.build})
_CHECKS["standby"] = lambda rep, path, value, ctx: c.integer(
    rep, path, value, low=0, high=MAX_STANDBY,
    hint=f"use 0 to {MAX_STANDBY}: each standby replica costs a running replica's memory")
_CHECKS.update({"volumes": volumes.volumes, "allow_host_paths": volumes.allow_host_paths, "backup": volumes.backup})


# -- rules across a service's keys ----------------------------------------------------------

def _check_port_needed(rep: Reporter, path: Path, known: dict) -> None:
    if "port" in known:
        return
    needs = [why for why, present in (
        ("routes", _has_routes(known)),
        ("a health check", "health" in known)) if present]
    if needs:
        rep.add(path + ("port",), f"port is required because the service has {' and '.join(needs)}",
                _PORT_HINT, key=True)


def _check_max_body_routed(rep: Reporter, path: Path, known: dict) -> None:
    """max_body is enforced by the gateway, so only a routed service can have one."""
    if "max_body" in known and not _has_routes(known):
        rep.add(path + ("max_body",), "max_body limits requests through the gateway, and this service "
                "has no routes", "add routes, or remove max_body", key=True)


def _has_routes(known: dict) -> bool:
    return isinstance(known.get("routes"), (list, tuple)) and len(known["routes"]) > 0


def _check_secrets_not_in_env(rep: Reporter, path: Path, known: dict) -> None:
    env, secrets = known.get("env"), known.get("secrets")
    if not isinstance(env, dict) or not isinstance(secrets, dict):
        return
    for key in secrets:
        if key in env:
            rep.add(path + ("secrets", key), f"{key} is set both in env and in secrets",
                    "remove it from env: the secret supplies the value", key=True)


def _check_autoscale_fits(rep: Reporter, path: Path, *, known: dict, clean: dict) -> None:
    """Rules between autoscale and the other keys; they run on the parts that are valid."""
    scale = known.get("autoscale")
    if not isinstance(scale, dict):
        return
    low, high, replicas = scale.get("min"), scale.get("max"), clean.get("replicas")
    if _is_count(low) and _is_count(high) and low <= high and replicas is not None \
            and not low <= replicas <= high:
        rep.add(path + ("replicas",), f"replicas ({replicas}) must lie within autoscale min "
                f"({low}) and max ({high})",
                "change replicas, or remove it: with autoscale it is only the starting count")
    target, resources = scale.get("target"), known.get("resources")
    if isinstance(target, dict) and "cpu" in target and not (
            isinstance(resources, dict) and "cpus" in resources):
        rep.add(path + ("autoscale", "target", "cpu"), "a cpu target needs resources.cpus",
                "set resources.cpus: the percentage is measured against it")


def _check_standby_routed(rep: Reporter, path: Path, known: dict) -> None:
    """Standby replicas wait outside the gateway's rotation; a service without routes has none."""
    if known.get("standby") and not _has_routes(known):
        rep.add(path + ("standby",), "standby replicas wait out of the gateway's rotation, and this "
                "service has no routes", "add a route, or remove standby")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPLICAS
