"""Making text a container printed safe to store and to show: no secret values, no terminal codes.

Flotilla keeps some of what replicas print (the last lines before a crash, a probe's
answer, an error echoed by Redis) in its events, which reach ``state.db``, the daemon's
log, ``flotilla events`` and the output of ``up``. A replica may print its own secrets
(redis-server echoes a bad config line, password included), and anything it prints may
hold terminal escape sequences that rewrite a user's screen. ``scrub`` is the one pure
function that removes both; the event log applies it to every message it records.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MARKER = "[secret]"
MIN_LINE = 4  # a line of a multi-line secret is replaced on its own from this length
# ESC (or the one-byte C1 CSI) and what follows it: CSI with parameters, OSC up to BEL
# or ST, and any other two-character escape.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)


def strip_controls(text: str) -> str:
    """``text`` without escape sequences and control or format characters; tabs and line
    breaks become spaces, so one message stays one line."""
    text = _ESCAPES.sub("", text)
    return "".join(" " if char in "\t\n\r\v\f" else char for char in text if _shown(char))


def _shown(char: str) -> bool:
    return char in "\t\n\r\v\f" or unicodedata.category(char) not in ("Cc", "Cf")


def scrub(text: str, secrets: Iterable[bytes]) -> str:
    """``text`` with control characters removed, then every secret value (and every line of
    a multi-line one) replaced by ``[secret]``. Controls go first, so that a value split by
    an escape sequence is still found."""
    clean = strip_controls(text)
    for needle in _needles(secrets):
        clean = clean.replace(needle, MARKER)
    return clean


def _needles(secrets: Iterable[bytes]) -> list[str]:
    """The strings to replace, longest first (so a value containing another goes whole)."""
    found: set[str] = set()
    for value in secrets:
        decoded = value.decode("utf-8", errors="replace")  # as the engine decodes container output
        found.add(strip_controls(decoded).strip())
        found.update(line.strip() for line in map(strip_controls, decoded.splitlines())
                     if len(line.strip()) >= MIN_LINE)
    found.discard("")
    return sorted(found, key=len, reverse=True)
