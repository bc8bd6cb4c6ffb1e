"""The rules of the image keys: ``pull`` (a service's or the app's) and ``build``.

Kept apart from validate_service.py so that where an image comes from reads
as one piece: a pull policy is one of three words, and ``build`` takes
compose's keys with compose's meanings (a string is the context). The
context's path is made absolute against the spec file's folder by the loader
(spec/images.py ``with_build_contexts``); the daemon builds only absolute ones.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from flotilla.spec import checks as c
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import BuildSpec

PULL_POLICIES = ("missing", "always", "never")
BUILD_KEYS = ("context", "dockerfile", "args", "target")
SERVICE_KEYS = ("pull", "build")
_ARGS_HINT = "give build arguments as a mapping, e.g. args: {BASE_IMAGE: python:3.12-slim}"


def pull(rep: Reporter, path: Path, value: object, ctx: object = None) -> str | None:
    return c.choice(rep, path, value, options=PULL_POLICIES)


def build(rep: Reporter, path: Path, value: object, ctx: object = None) -> BuildSpec | None:
    if isinstance(value, str):
        value = {"context": value}
    known = c.mapping(rep, path, value, allowed=BUILD_KEYS,
                      required={"context": "add context: the folder to build from, e.g. context: ./web"})
    if known is None:
        return None
    clean = c.fields(rep, path, known, {"context": _context, "dockerfile": _dockerfile, "args": _args,
                                        "target": _target})
    if rep.count() or len(clean) != len(known) or "context" not in clean:
        return None
    return BuildSpec(**clean)


def _context(rep: Reporter, path: Path, value: object) -> str | None:
    return c.word(rep, path, value, hint="give the folder to build from, relative to the spec file, e.g. ./web")


def _dockerfile(rep: Reporter, path: Path, value: object) -> str | None:
    name = c.word(rep, path, value, hint="give the Dockerfile's path inside the context, e.g. web/Dockerfile")
    if name is None:
        return None
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        rep.add(path, f"must be a path inside the build context, got {c.clip(name)}",
                "write it relative to context, without '..', e.g. web/Dockerfile")
        return None
    return name


def _args(rep: Reporter, path: Path, value: object) -> dict | None:
    if isinstance(value, (list, tuple)):
        value = dict(str(item).partition("=")[::2] for item in value)
    found = c.string_map(rep, path, value, hint=_ARGS_HINT)
    if found is None:
        return None
    bad = [k for k, v in found.items() if isinstance(v, (dict, list, tuple)) or v is None]
    for key in bad:
        rep.add(path + (key,), f"expected a string or number, got {c.describe(found[key])}", _ARGS_HINT)
    return None if bad else {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in found.items()}


def _target(rep: Reporter, path: Path, value: object) -> str | None:
    return c.word(rep, path, value, hint="give the Dockerfile stage to build, e.g. target: runtime")
