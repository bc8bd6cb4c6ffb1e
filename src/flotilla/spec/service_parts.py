"""The nested sections of a service: health, resources, routes, secrets, autoscale.

Each section is a small mapping with its own rules; keeping them apart from
``validate_service.py`` keeps both files short enough to read. Like every
check, these report each problem and carry on, returning None when invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flotilla.spec import checks as c
from flotilla.spec import units, urls
from flotilla.spec.interpolate import ENV_NAME
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import (
    AutoscaleSpec,
    AutoscaleTarget,
    DeploySpec,
    HealthSpec,
    ResourcesSpec,
    RouteSpec,
    TlsSpec,
)

MAX_REPLICAS = 100
MAX_CPUS = 64
MIN_MEMORY = 6 * units.MIB
_SECRET = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Where Flotilla puts a replica's env-secret shim and values (secrets/injection.py mounts
# it): a file secret there would replace the shim or export a reserved variable.
# /var/run is /run in Debian-based images (a symlink Docker follows inside the image).
FLOTILLA_DIR = "/run/flotilla"
_RESERVED_DIRS = (FLOTILLA_DIR, "/var" + FLOTILLA_DIR)
_KERNEL_DIRS = ("/proc", "/sys", "/dev")  # /dev/shm too: shared memory of the container
MAX_SECRET_FILES = 64  # file targets per service: each is a bind mount and a file in the secrets tmpfs
_FILE_HINT = ("use an absolute file path without ':', ',', whitespace or '..', not under /proc, /sys, "
              "/dev or /run/flotilla, e.g. /run/secrets/tls.key")
_ENV_HINT = "use letters, digits and '_', not starting with a digit"


@dataclass
class ServiceContext:
    """What a service's checks need from the rest of the spec, and what they leave for it."""

    cache_names: tuple[str, ...]
    routes: list[tuple[tuple[str, str], Path]] = field(default_factory=list)
    tls_routes: list[Path] = field(default_factory=list)  # the app checks them against gateway.https_port


def env_name(rep: Reporter, path: Path, key: str) -> str | None:
    """An environment variable name a user may set (reported at the key)."""
    if not ENV_NAME.fullmatch(key):
        rep.add(path, f"invalid environment variable name {c.clip(key)}", _ENV_HINT, key=True)
        return None
    if key.startswith("FLOTILLA_"):
        rep.add(path, f"{key} uses the reserved prefix FLOTILLA_",
                "rename it: Flotilla sets FLOTILLA_* variables itself", key=True)
        return None
    return key


def health(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> HealthSpec | None:
    known = c.mapping(rep, path, value, allowed=("path", "interval", "timeout", "replace_after", "start_period"))
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"path": _health_path, "interval": c.duration,
                                        "timeout": c.duration, "replace_after": c.duration,
                                        "start_period": lambda r, p, v: c.duration(r, p, v, allow_zero=True)})
    interval, timeout = clean.get("interval", 2.0), clean.get("timeout", 1.0)
    if timeout >= interval and {"interval", "timeout"} & set(known):
        where = "timeout" if "timeout" in known else "interval"
        rep.add(path + (where,), f"timeout ({units.format_duration(timeout)}) must be shorter "
                f"than interval ({units.format_duration(interval)})",
                "lower timeout or raise interval")
        return None
    return HealthSpec(**clean) if len(clean) == len(known) else None


def deploy(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> DeploySpec | None:
    """``deploy: {deadline: 60s, on_failure: rollback|hold}``: how a rollout is judged."""
    known = c.mapping(rep, path, value, allowed=("deadline", "on_failure"))
    if known is None:
        return None
    clean = c.fields(rep, path, known, {
        "deadline": c.duration,
        "on_failure": lambda r, p, v: c.choice(r, p, v, options=("rollback", "hold")),
    })
    return DeploySpec(**clean) if len(clean) == len(known) else None


def _health_path(rep: Reporter, path: Path, value: object) -> str | None:
    result = c.text(rep, path, value, hint="write an HTTP path such as /healthz")
    return None if result is None else _url_path(rep, path, result, what="health", query=True)


def resources(rep: Reporter, path: Path, value: object, ctx: ServiceContext
               ) -> ResourcesSpec | None:
    known = c.mapping(rep, path, value, allowed=("cpus", "memory"))
    if known is None:
        return None
    clean = c.fields(rep, path, known, {
        "cpus": _cpus,
        "memory": lambda r, p, v: c.memory(r, p, v, minimum=MIN_MEMORY),
    })
    return ResourcesSpec(**clean) if len(clean) == len(known) else None


def _cpus(rep: Reporter, path: Path, value: object) -> float | None:
    hint = f"give a number of CPUs greater than 0 and at most {MAX_CPUS}, e.g. 0.5"
    cpus = c.number(rep, path, value, hint=hint)
    if cpus is not None and not 0 < cpus <= MAX_CPUS:
        rep.add(path, f"must be greater than 0 and at most {MAX_CPUS}, got {c.show_number(cpus)}",
                hint)
        return None
    return cpus


def routes(rep: Reporter, path: Path, value: object, ctx: ServiceContext
            ) -> tuple[RouteSpec, ...] | None:
    items = c.sequence(rep, path, value, of="routes such as {host: shop.localhost, path: /}")
    if items is None:
        return None
    routes = [_route(rep, path + (i,), item, ctx) for i, item in enumerate(items)]
    return None if None in routes else tuple(routes)


def _route(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> RouteSpec | None:
    known = c.mapping(rep, path, value, allowed=("host", "path", "strip_prefix", "tls"),
                      required={"host": "add host: the DNS name requests arrive for"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"host": _host, "path": _route_path,
                                        "strip_prefix": c.boolean, "tls": _tls})
    if len(clean) != len(known) or "host" not in clean:
        return None
    route = RouteSpec(**clean)
    ctx.routes.append(((route.host, route.path), path))
    if route.tls is not None:
        ctx.tls_routes.append(path + ("tls",))
    return route


_CERT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_CERT_HINT = ("name a vault certificate with lowercase letters, digits, '.', '_' and '-', e.g. "
              "certificate: shop (stored with `flotilla certs set APP shop --cert FILE --key FILE`)")
_TLS_HINT = "give tls: {certificate: NAME} (a vault certificate) or tls: {acme: true} (issued by ACME)"
MAX_HSTS = 2 * 365 * 86400  # two years, the longest max-age browsers' preload lists ask for


def _tls(rep: Reporter, path: Path, value: object) -> TlsSpec | None:
    """``tls: {certificate: NAME | acme: true, redirect: true, hsts: 0}``: exactly one source."""
    known = c.mapping(rep, path, value, allowed=("certificate", "acme", "redirect", "hsts"))
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"certificate": _cert_name, "acme": c.boolean,
                                        "redirect": c.boolean, "hsts": _hsts})
    sources = [key for key in ("certificate", "acme") if clean.get(key)]
    if len(sources) == 2:
        rep.add(path, "has both certificate and acme: a route has one certificate source", _TLS_HINT)
        return None
    if not sources and "certificate" not in known:
        rep.add(path, "names no certificate source", _TLS_HINT)
        return None
    return TlsSpec(**clean) if len(clean) == len(known) else None


def _cert_name(rep: Reporter, path: Path, value: object) -> str | None:
    name = c.text(rep, path, value, hint=_CERT_HINT)
    if name is not None and not _CERT_NAME.fullmatch(name):
        rep.add(path, f"invalid certificate name {c.clip(name)}", _CERT_HINT)
        return None
    return name


def _hsts(rep: Reporter, path: Path, value: object) -> int | None:
    hint = (f"give the seconds of Strict-Transport-Security max-age, e.g. 31536000 (a year), at most "
            f"{MAX_HSTS}; 0 is off")
    return c.integer(rep, path, value, low=0, high=MAX_HSTS, hint=hint)


def _host(rep: Reporter, path: Path, value: object) -> str | None:
    host = c.text(rep, path, value, hint=urls.HOST_HINT)
    if host is None:
        return None
    host = host.lower() if host.isascii() else host  # str.lower() maps U+212A (Kelvin) to 'k'
    problem = urls.host_problem(host)
    if problem:
        reason, hint = problem
        rep.add(path, f"invalid host {c.clip(host)}" + (f": {reason}" if reason else ""), hint)
        return None
    return host


def _route_path(rep: Reporter, path: Path, value: object) -> str | None:
    result = c.text(rep, path, value, hint=urls.PATH_HINT)
    return None if result is None else _url_path(rep, path, result, what="route", query=False)


def _url_path(rep: Reporter, path: Path, value: str, *, what: str, query: bool) -> str | None:
    """A route path, or with ``query`` a health path: RFC 3986 characters, escapes upper-cased."""
    problem = urls.path_problem(value, query=query)
    if problem:
        reason, hint = problem
        rep.add(path, f"invalid {what} path {c.clip(value)}: {reason}", hint)
        return None
    return urls.normalize_escapes(value)


def secrets(rep: Reporter, path: Path, value: object, ctx: ServiceContext) -> dict | None:
    items = c.string_map(rep, path, value, hint="map an env variable name or a file path to a "
                         "secret name, e.g. secrets: {DB_PASSWORD: db-password}")
    if items is None:
        return None
    clean = {key: (_secret_target(rep, path + (key,), key), _secret_name(rep, path + (key,), item))
             for key, item in items.items()}
    targets = [(key, pair[0]) for key, pair in clean.items() if pair[0] and pair[0].startswith("/")]
    ok = _distinct_files(rep, path, targets) & _few_files(rep, path, len(targets))
    if not ok or any(None in pair for pair in clean.values()):
        return None
    return {target: name for target, name in clean.values()}


def _secret_target(rep: Reporter, path: Path, key: str) -> str | None:
    if not key.startswith("/") and not ENV_NAME.fullmatch(key):
        rep.add(path, f"invalid secret target {c.clip(key)}",
                "use an environment variable name (letters, digits and '_') or an absolute "
                "file path such as /run/secrets/tls.key", key=True)
        return None
    if not key.startswith("/"):
        return env_name(rep, path, key)
    problem = file_target_problem(key)
    if problem:
        rep.add(path, f"invalid secret file path {c.clip(key)}: {problem}", _FILE_HINT, key=True)
        return None
    return clean_file_path(key)


def clean_file_path(key: str) -> str:
    """The path the container sees: repeated slashes collapsed (a leading ``//`` too, which
    posixpath.normpath keeps), ``.`` dropped and ``..`` resolved (``/..`` is ``/``).

    ``file_target_problem`` refuses ``..`` anyway; resolving it here keeps this a true
    normal form, so no spelling can pass the checks for one path and mount another."""
    parts: list[str] = []
    for part in key.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def file_target_problem(key: str) -> str | None:
    """Why a file-secret target cannot be mounted, or None: characters first, then the cleaned path."""
    if any(not char.isprintable() or char.isspace() for char in key):
        return "it holds whitespace or a control character"
    if ":" in key or "," in key:
        return "':' and ',' separate the fields of Docker's mount syntax (-v SRC:DST:MODE, --mount a=b,c=d)"
    if ".." in key.split("/"):
        return "'..' is resolved inside the image, where a symlink (/var/run -> /run) can take it anywhere"
    clean = clean_file_path(key)
    if clean == "/":
        return "it is the root directory"
    if _within(clean, _KERNEL_DIRS):
        return f"{clean} is in a kernel filesystem (/proc, /sys, /dev)"
    if _within(clean, _RESERVED_DIRS):
        return f"{clean} is Flotilla's own directory for env secrets ({FLOTILLA_DIR})"
    return None


def _within(path: str, dirs: tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in dirs)


def _distinct_files(rep: Reporter, path: Path, targets: list[tuple[str, str]]) -> bool:
    """Two spellings of one path are one mount point; a file cannot be mounted inside another."""
    seen: dict[str, str] = {}  # cleaned path -> the key that named it first
    ok = True
    for key, target in sorted(targets, key=lambda pair: (len(pair[1]), pair[0])):
        if target in seen:
            rep.add(path + (key,), f"secret file path {target} is given twice: {c.clip(seen[target])} "
                    f"and {c.clip(key)} are the same path", "keep one of them", key=True)
            ok = False
            continue
        outer = next((k for t, k in seen.items() if target.startswith(t + "/")), None)
        if outer is not None:
            rep.add(path + (key,), f"secret file path {c.clip(key)} lies inside the file target "
                    f"{c.clip(outer)}", "choose paths where neither is inside the other", key=True)
            ok = False
        seen[target] = key
    return ok


def _few_files(rep: Reporter, path: Path, count: int) -> bool:
    if count <= MAX_SECRET_FILES:
        return True
    rep.add(path, f"{count} file targets; a service may have at most {MAX_SECRET_FILES}",
            "put related values in one secret (one file), or deliver some as environment variables")
    return False


def _secret_name(rep: Reporter, path: Path, value: object) -> str | None:
    hint = ("name the secret with lowercase letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 63 characters)")
    name = c.text(rep, path, value, hint=hint)
    if name is not None and not _SECRET.fullmatch(name):
        rep.add(path, f"invalid secret name {c.clip(name)}", hint)
        return None
    return name


def autoscale(rep: Reporter, path: Path, value: object, ctx: ServiceContext
               ) -> AutoscaleSpec | None:
    known = c.mapping(rep, path, value, allowed=("min", "max", "target", "scale_down_delay"),
                      required={"min": "add min: the fewest replicas, e.g. 1",
                                "max": "add max: the most replicas, e.g. 10",
                                "target": "add target: e.g. {concurrency: 10}"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {
        "min": lambda r, p, v: c.integer(r, p, v, low=0, high=MAX_REPLICAS),
        "max": lambda r, p, v: c.integer(r, p, v, low=1, high=MAX_REPLICAS),
        "target": _target,
        "scale_down_delay": lambda r, p, v: c.duration(r, p, v, allow_zero=True),
    })
    if "min" in clean and "max" in clean and clean["min"] > clean["max"]:
        rep.add(path + ("min",), f"min ({clean['min']}) is greater than max ({clean['max']})",
                "lower min or raise max")
        return None
    complete = len(clean) == len(known) and {"min", "max", "target"} <= set(clean)
    return AutoscaleSpec(**clean) if complete else None


def _target(rep: Reporter, path: Path, value: object) -> AutoscaleTarget | None:
    names = ("concurrency", "rps", "cpu")
    known = c.mapping(rep, path, value, allowed=names)
    if known is None:
        return None
    if not known:
        if not value:  # with only unknown keys, those were reported already
            rep.add(path, "needs at least one of concurrency, rps, cpu",
                    "e.g. target: {concurrency: 10} (in-flight requests per replica)")
        return None
    clean = c.fields(rep, path, known, {"concurrency": _positive, "rps": _positive, "cpu": _percent})
    return AutoscaleTarget(**clean) if len(clean) == len(known) else None


def _positive(rep: Reporter, path: Path, value: object) -> float | None:
    hint = "give a number greater than 0 (per replica)"
    result = c.number(rep, path, value, hint=hint)
    if result is not None and result <= 0:
        rep.add(path, f"must be greater than 0, got {c.show_number(result)}", hint)
        return None
    return result


def _percent(rep: Reporter, path: Path, value: object) -> float | None:
    hint = "write a percentage of resources.cpus such as 70%"
    if isinstance(value, str):
        result = units.parse_percent(value)
    else:
        result = units.to_float(value) if units.is_number(value) else None
    if result is None:
        rep.add(path, f"expected a percentage, got {c.describe(value)}", hint)
    elif not 0 < result <= 100:
        rep.add(path, f"must be greater than 0% and at most 100%, got {c.show_number(result)}%",
                hint)
        return None
    return result
