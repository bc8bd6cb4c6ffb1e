"""Parse and print the human units a spec is written in: durations, memory sizes, percents.

Users write ``2s``, ``256M`` and ``70%``; the models hold seconds, bytes and
percent as plain numbers. Keeping the conversions in one place means the error
messages, the documentation and the Kubernetes renderer all agree on what
``256M`` means (binary, as Docker reads it: 256 MiB).
"""

from __future__ import annotations

import math
import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

MAX_DURATION = 24 * 3600.0
MAX_MEMORY = TIB

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(_NUMBER + r"\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_MEMORY = re.compile(_NUMBER + r"\s*([kmgt]?)(i?)(b?)", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
_PERCENT = re.compile(_NUMBER + r"\s*%")


def is_number(value: object) -> bool:
    """True for ints and floats, never for booleans (YAML's ``yes`` is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_float(value: int | float) -> float | None:
    """The value as a finite float, or None when it is infinite, NaN or too large."""
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def parse_duration(text: str) -> float | None:
    """Seconds from ``500ms``, ``2s``, ``1.5m``, ``1h`` or a bare number; None if malformed."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return to_float(float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def parse_memory(text: str) -> int | None:
    """Bytes from ``256M``, ``1G``, ``512Mi``, ``1024k``, ``64MB`` or a bare number; binary units."""
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        return None
    if match.group(2) == "" and match.group(3):
        return None  # a lone "i" is no unit
    amount = to_float(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    return None if amount is None else int(amount)


def parse_percent(text: str) -> float | None:
    """The number in ``70%``; None if the text is not a percentage."""
    match = _PERCENT.fullmatch(text.strip())
    return None if match is None else to_float(float(match.group(1)))


def format_duration(seconds: float) -> str:
    """``2s``, ``0.5s``, ``60s``: short enough for an error message."""
    return f"{seconds:g}s"


def format_memory(size: int) -> str:
    """``256 MiB`` for round sizes, ``1234 bytes`` (or ``1 byte``) otherwise."""
    for unit, name in ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} byte" if size == 1 else f"{size} bytes"
