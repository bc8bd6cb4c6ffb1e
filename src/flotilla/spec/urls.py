"""The characters a route's host and path (and a health path) may hold, and what to write instead.

A route's host and path are written into haproxy.cfg as they are, and a
request's Host header and path are compared with them byte for byte. So the
spec accepts exactly what can travel in a request and what HAProxy loads: a
host is an ASCII DNS name (an internationalized name in its IDNA form,
``xn--...``), and a path is RFC 3986 path characters with ``%XX`` escapes.
Anything else (a NUL, a lone surrogate, a space, a non-ASCII letter) is
refused here with the text to write instead, never left for the renderer or
HAProxy to fail on for every app of the gateway.

Each check returns None when the value is fine, or ``(what is wrong, what to
do)`` for the caller to report at the value's position.
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote

MAX_HOST_LENGTH = 253
MAX_PATH_LENGTH = 1024
# RFC 3986 pchar and '/': unreserved, sub-delims, ':' and '@' ('%' starts an escape).
PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@/")
HOST_HINT = "write a DNS name such as shop.localhost, or *.shop.example for every subdomain"
PATH_HINT = "write a path such as / or /api"
Problem = tuple[str, str]

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


# -- hosts --------------------------------------------------------------------------------------

def host_problem(host: str) -> Problem | None:
    """Why ``host`` (already lowercased) cannot be a route's host, or None.

    An empty "what is wrong" means the name as a whole is not a DNS name.
    """
    if not host.isascii():
        return _non_ascii_host(host)
    if not _HOST.fullmatch(host) or len(host) > MAX_HOST_LENGTH:
        return "", HOST_HINT
    return None


def _non_ascii_host(host: str) -> Problem:
    reason = "a Host header carries ASCII only"
    ace = idna_form(host)
    if ace is None:
        return reason, HOST_HINT
    return reason, f"write the name in its IDNA form, {ace!r}"


def idna_form(host: str) -> str | None:
    """``*.xn--bcher-kva.example`` for ``*.bücher.example``, None if that is no valid host either."""
    try:
        ace = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ace if host_problem(ace) is None else None


# -- paths --------------------------------------------------------------------------------------

def path_problem(path: str, *, query: bool) -> Problem | None:
    """Why ``path`` cannot be a request path prefix (with ``query``: may hold ``?query``), or None."""
    if not path.startswith("/"):
        return "it must start with '/'", _slash_hint(path, query=query)
    if len(path) > MAX_PATH_LENGTH:
        return f"it is longer than {MAX_PATH_LENGTH} characters", "shorten it"
    allowed = PATH_CHARACTERS | {"?"} if query else PATH_CHARACTERS
    for index, char in enumerate(path):
        if char == "%" and not _ESCAPE.match(path, index):
            return "'%' must start an escape of two hex digits such as %20", _encode_hint(path)
        if char not in allowed and char != "%":
            return _character_problem(path, index)
    return None


def _slash_hint(path: str, *, query: bool) -> str:
    fixed = "/" + path
    return f"write {fixed!r}" if path and path_problem(fixed, query=query) is None else PATH_HINT


def normalize_escapes(path: str) -> str:
    """``/caf%c3%a9`` -> ``/caf%C3%A9``: the form clients send (RFC 3986 6.2.2.1)."""
    return _ESCAPE.sub(lambda match: match.group().upper(), path)


def _character_problem(path: str, index: int) -> Problem:
    char = path[index]
    if char in "?#":
        part = "a query" if char == "?" else "a fragment"
        return (f"{char!r} starts {part}, which is not part of the path a route matches",
                f"route the path alone, e.g. {path[:index] or '/'!r}")
    shown = f"{char!r} (U+{ord(char):04X})"
    if 0xD800 <= ord(char) <= 0xDFFF:
        return (f"{shown} is a lone surrogate, not a character",
                "remove it: it has no UTF-8 form, so no request can carry it")
    return f"{shown} is not allowed in a URL path", _encode_hint(path)


def _encode_hint(path: str) -> str:
    """The path with every character outside RFC 3986 percent-encoded (UTF-8)."""
    escaped = _BAD_PERCENT.sub("%25", path)
    # errors="ignore": a lone surrogate has no UTF-8 form, so the suggestion leaves it out
    encoded = quote(escaped, safe="".join(PATH_CHARACTERS) + "%", errors="ignore")
    return f"percent-encode it: write {encoded!r}"
