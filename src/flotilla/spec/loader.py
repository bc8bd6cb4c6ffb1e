"""The ways into a spec: a file on disk, YAML text, or a dict received over the API.

All three end in the same validator, so a spec the CLI accepts is a spec the
daemon accepts. Only the file and text paths interpolate ``${VAR}``: the dict
path receives a spec the CLI already interpolated (``spec_to_dict`` output).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from flotilla.errors import Problem, SpecError
from flotilla.spec.images import with_build_contexts
from flotilla.spec.interpolate import parse_dotenv
from flotilla.spec.locate import Reporter
from flotilla.spec.models import AppSpec
from flotilla.spec.validate import validate
from flotilla.spec.yamlnodes import read_yaml

_EMPTY_HINT = "start with app: <name> and services: with at least one service"


def load_spec(path: str | Path, *, environ: Mapping[str, str] | None = None) -> AppSpec:
    """Read, interpolate and validate a spec file; ``.env`` beside it supplies variables.

    Variables from ``environ`` (default: ``os.environ``) win over those in ``.env``.
    """
    path = Path(path)
    text = _read(path, filename=str(path))
    dotenv, dotenv_problems = _read_dotenv(path.parent / ".env")
    try:
        spec = parse_spec(text, filename=str(path), dotenv=dotenv,
                          environ=os.environ if environ is None else environ)
    except SpecError as exc:
        raise SpecError(dotenv_problems + exc.problems) from None
    if dotenv_problems:
        raise SpecError(dotenv_problems)
    return with_build_contexts(spec, base=str(path.parent.resolve()))


def parse_spec(text: str, *, filename: str, environ: Mapping[str, str],
               dotenv: Mapping[str, str] | None = None) -> AppSpec:
    """Validate YAML ``text``; ``environ`` wins over ``dotenv`` when interpolating."""
    rep = Reporter(file=filename)
    data, found = read_yaml(text, reporter=rep, variables={**(dotenv or {}), **environ})
    if not found and not rep.count():
        rep.add_at((1, 1), (), "the spec is empty", _EMPTY_HINT)
    spec = validate(rep, data) if found else None
    return _result(rep, spec)


def spec_from_dict(data: dict, *, filename: str = "<api>") -> AppSpec:
    """Validate an already-interpolated spec (``spec_to_dict`` output); problems are at 0:0."""
    rep = Reporter(file=filename)
    return _result(rep, validate(rep, data))


def locate_problems(problems: Sequence[Problem], *, text: str, filename: str) -> list[Problem]:
    """Problems the daemon found (positioned by dotted path only: an unset secret or certificate) with the
    file, line and column of that path in the spec's ``text``; a path that cannot be found keeps line 0."""
    rep = Reporter(file=filename)
    read_yaml(text, reporter=rep, variables={})  # positions only: its own problems do not matter
    located = []
    for problem in problems:
        line, column = (problem.line, problem.column) if problem.line else _position(rep, problem.path)
        located.append(replace(problem, file=filename, line=line, column=column))
    return located


def _position(rep: Reporter, dotted_path: str) -> tuple[int, int]:
    path = tuple(int(part) if part.isdigit() else part for part in dotted_path.split("."))
    return rep.locator.exact(path) or (0, 0)


def _result(rep: Reporter, spec: AppSpec | None) -> AppSpec:
    if rep.count() or spec is None:
        raise SpecError(rep.sorted_problems() or [Problem(rep.file, 0, 0, "", "invalid spec")])
    return spec


def _read(path: Path, *, filename: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(filename, 0, 0, "", f"the spec is not UTF-8 text ({exc.reason} "
                                 f"at byte {exc.start})", "save the file as UTF-8")]) from None
    except OSError as exc:
        raise SpecError([Problem(filename, 0, 0, "", f"cannot read the spec: {exc.strerror}",
                                 "check the path, or pass the spec file explicitly")]) from None


def _read_dotenv(path: Path) -> tuple[dict[str, str], tuple[Problem, ...]]:
    if not path.is_file():
        return {}, ()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, (Problem(str(path), 0, 0, "", f"cannot read .env: {exc}",
                            "fix or remove the .env file"),)
    return parse_dotenv(text, filename=str(path))
