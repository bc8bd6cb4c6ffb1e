"""Typed checks shared by every part of the spec, so all messages read alike.

Each helper checks one value, reports a Problem when it is wrong and returns
the clean value, or None when it is wrong, so the caller can carry on and the
user gets every problem of the spec at once. A wrong type always says what
was expected and what was found: ``expected an integer, got a string ('two')``.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence

from flotilla.spec import units
from flotilla.spec.locate import Path, Reporter

NAME_RULE = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
NAME_MAX = 30
NAME_HINT = ("use lowercase letters, digits and '-', starting with a letter and not ending "
             f"with '-', at most {NAME_MAX} characters")


def describe(value: object) -> str:
    """``a string ('two')``, ``an integer (5)``, ``a list``: what the user wrote, briefly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({show_number(value)})"
    if isinstance(value, float):
        return f"a number ({show_number(value)})"
    if isinstance(value, str):
        return f"a string ({clip(value)})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def show_number(value: int | float) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large number"
    return f"{value:g}" if isinstance(value, float) else str(value)


def clip(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def suggest(word: str, choices: Sequence[str], *, what: str = "allowed keys") -> str:
    """``did you mean 'replicas'?``, or the list of choices when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{what}: {', '.join(choices)}" if choices else f"there are no {what}"


def mapping(rep: Reporter, path: Path, value: object, *, allowed: Sequence[str],
            required: Mapping[str, str] | None = None) -> dict | None:
    """The known keys of a mapping; unknown and missing keys are reported."""
    if not isinstance(value, Mapping):
        rep.add(path, f"expected a mapping, got {describe(value)}",
                f"give a mapping with the keys {', '.join(allowed)}")
        return None
    known = {}
    for key, item in value.items():
        if key in allowed:
            known[key] = item
        else:
            rep.add(path + (str(key),), f"unknown key {str(key)!r}", suggest(str(key), allowed),
                    key=True)
    for key, hint in (required or {}).items():
        if key not in value:
            rep.add(path + (key,), f"missing required key {key!r}", hint, key=True)
    return known


Check = Callable[[Reporter, Path, object], object]


def fields(rep: Reporter, path: Path, known: Mapping[str, object],
           checks: Mapping[str, Check]) -> dict:
    """Run each key's check; the result holds only the keys whose value is valid."""
    clean = {key: checks[key](rep, path + (key,), value) for key, value in known.items()}
    return {key: value for key, value in clean.items() if value is not None}


def string_map(rep: Reporter, path: Path, value: object, *, hint: str) -> dict | None:
    """A mapping whose keys are free names (env, secrets, services, caches)."""
    if not isinstance(value, Mapping):
        rep.add(path, f"expected a mapping, got {describe(value)}", hint)
        return None
    return {str(key): item for key, item in value.items()}


def sequence(rep: Reporter, path: Path, value: object, *, of: str) -> list | None:
    if isinstance(value, (list, tuple)):
        return list(value)
    rep.add(path, f"expected a list, got {describe(value)}", f"give a list of {of}")
    return None


def integer(rep: Reporter, path: Path, value: object, *, low: int, high: int,
            hint: str = "") -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        rep.add(path, f"expected an integer, got {describe(value)}", _int_hint(value, low, high))
        return None
    if not low <= value <= high:
        rep.add(path, f"must be between {low} and {high}, got {show_number(value)}",
                hint or f"use a whole number from {low} to {high}")
        return None
    return value


def _int_hint(value: object, low: int, high: int) -> str:
    if isinstance(value, str) and value.strip().isdigit():
        return "remove the quotes: write the number itself"
    return f"use a whole number from {low} to {high}"


def number(rep: Reporter, path: Path, value: object, *, hint: str) -> float | None:
    """A finite int or float, as float; ranges are the caller's business."""
    if not units.is_number(value):
        rep.add(path, f"expected a number, got {describe(value)}", hint)
        return None
    result = units.to_float(value)
    if result is None:
        rep.add(path, f"must be a finite number, got {show_number(value)}", hint)
    return result


def boolean(rep: Reporter, path: Path, value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    rep.add(path, f"expected true or false, got {describe(value)}", "write true or false, unquoted")
    return None


def text(rep: Reporter, path: Path, value: object, *, hint: str) -> str | None:
    if isinstance(value, str):
        return value
    rep.add(path, f"expected a string, got {describe(value)}", hint)
    return None


def word(rep: Reporter, path: Path, value: object, *, hint: str) -> str | None:
    """A non-empty string without whitespace (an image reference, for instance)."""
    result = text(rep, path, value, hint=hint)
    if result is None:
        return None
    if not result or any(char.isspace() for char in result):
        rep.add(path, f"must be non-empty and without spaces, got {clip(result)}", hint)
        return None
    return result


def choice(rep: Reporter, path: Path, value: object, *, options: Sequence[str]) -> str | None:
    result = text(rep, path, value, hint=f"use one of: {', '.join(options)}")
    if result is None or result in options:
        return result
    rep.add(path, f"must be one of {', '.join(options)}, got {clip(result)}",
            suggest(result, options, what="use one of"))
    return None


def name(rep: Reporter, path: Path, value: str, *, what: str, at_key: bool) -> str | None:
    """A DNS-safe name (app, service, cache); a service or cache name is reported at its key."""
    if NAME_RULE.fullmatch(value) and len(value) <= NAME_MAX:
        return value
    fixed = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:NAME_MAX].rstrip("-")
    hint = NAME_HINT + (f", e.g. {fixed!r}" if NAME_RULE.fullmatch(fixed) else "")
    rep.add(path, f"invalid {what} name {clip(value)}", hint, key=at_key)
    return None


def duration(rep: Reporter, path: Path, value: object, *, allow_zero: bool = False) -> float | None:
    """Seconds from ``2s``/``500ms``/``1m``/``1h`` or a number of seconds."""
    hint = "write a duration such as 500ms, 2s, 1.5m or 1h (a bare number is seconds)"
    seconds = _seconds(value)
    if seconds is None:
        rep.add(path, f"expected a duration, got {describe(value)}", hint)
        return None
    lowest = "at least 0s" if allow_zero else "greater than 0s"
    if seconds < 0 or (seconds == 0 and not allow_zero) or seconds > units.MAX_DURATION:
        rep.add(path, f"must be {lowest} and at most "
                f"{units.format_duration(units.MAX_DURATION)}, got {_show_duration(value)}", hint)
        return None
    return seconds


def _seconds(value: object) -> float | None:
    if units.is_number(value):
        return units.to_float(value)
    return units.parse_duration(value) if isinstance(value, str) else None


def _show_duration(value: object) -> str:
    return value if isinstance(value, str) else units.format_duration(float(value))


def memory(rep: Reporter, path: Path, value: object, *, minimum: int) -> int | None:
    """Bytes from ``256M``/``1Gi``/``1024k`` (binary units) or a number of bytes."""
    return size(rep, path, value, minimum=minimum, what="a memory size", examples="256M or 1G")


def size(rep: Reporter, path: Path, value: object, *, minimum: int, what: str, examples: str
         ) -> int | None:
    """Bytes from a size in binary units (``1M``, ``512k``) or a number of bytes, at least ``minimum``."""
    hint = (f"write a size such as {examples} (binary units; a bare number is bytes), "
            f"at least {units.format_memory(minimum)}")
    found = _bytes(value)
    if found is None:
        rep.add(path, f"expected {what}, got {describe(value)}", hint)
        return None
    if not minimum <= found <= units.MAX_MEMORY:
        rep.add(path, f"must be between {units.format_memory(minimum)} and "
                f"{units.format_memory(units.MAX_MEMORY)}, got {_show_size(value, found)}",
                _memory_hint(value, hint))
        return None
    return found


def _bytes(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return units.parse_memory(value) if isinstance(value, str) else None


def _show_size(value: object, size: int) -> str:
    return value if isinstance(value, str) else f"{show_number(size)} bytes"


def _memory_hint(value: object, hint: str) -> str:
    if isinstance(value, int) and 0 < value <= 65536:
        return f"a bare number is bytes: did you mean {value}M?"
    return hint


def command(rep: Reporter, path: Path, value: object, *, empty_hint: str) -> tuple[str, ...] | None:
    """A command as words: a list of strings, or one string split as a shell would (no shell runs it)."""
    words = _split_command(rep, path, value) if isinstance(value, str) else _command_list(rep, path, value)
    if words is not None and not words:
        rep.add(path, "must not be empty", empty_hint)
        return None
    return words


def _split_command(rep: Reporter, path: Path, value: str) -> tuple[str, ...] | None:
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        rep.add(path, f"cannot split the command into words: {exc}",
                "balance the quotes, or give the command as a list of strings")
        return None


def _command_list(rep: Reporter, path: Path, value: object) -> tuple[str, ...] | None:
    items = sequence(rep, path, value, of="strings, or one string")
    if items is None:
        return None
    words = [text(rep, path + (i,), item, hint='quote it: every argument is a string, e.g. "10"')
             for i, item in enumerate(items)]
    return None if None in words else tuple(words)
