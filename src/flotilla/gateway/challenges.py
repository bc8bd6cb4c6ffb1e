"""The HTTP-01 answer, rendered into every HTTP frontend: the gateway answers the CA itself.

An ACME server proves a host is ours by fetching
``http://HOST/.well-known/acme-challenge/TOKEN`` and expecting the token's key
authorization. No replica should have to serve that, and no file should be
written per token, so HAProxy answers it from a map (token -> key
authorization) that the daemon changes at run time through the Runtime API
(``add map`` / ``del map``, challenge_map.py), no reload. The map is also a file
HAProxy reads at (re)start, so a reload during an order keeps its answers; a key
authorization is public by design (the CA fetches it over plain HTTP), so the
file holds nothing secret.

A token not in the map falls through to the routes, as any other path does, so an
app that answers its own challenges keeps working. ``ACME_CHALLENGE_ACL`` names the
path test, for rules that must not apply to challenges (the HTTP -> HTTPS redirect).
"""

from __future__ import annotations

import re

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
ACME_CHALLENGE_ACL = "acme_challenge"
TOKEN_VAR = "txn.acme_token"
# RFC 8555 8.3: a token is base64url; a key authorization is token "." base64url(thumbprint).
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{1,256}\.[A-Za-z0-9_-]{1,256}")
_MAP_PATH = re.compile(r"/[A-Za-z0-9_./@+=,-]+")


def challenge_lines(map_path: str | None) -> list[str]:
    """The frontend lines answering HTTP-01 from ``map_path``; none without a map."""
    if map_path is None:
        return []
    path = checked_map_path(map_path)
    lookup = f"var({TOKEN_VAR}),map({path})"
    return [
        "# ACME HTTP-01: the gateway answers the CA itself, from a map changed at run time (challenges.py)",
        f"acl {ACME_CHALLENGE_ACL} path_beg {ACME_CHALLENGE_PREFIX}",
        f"http-request set-var({TOKEN_VAR}) path,field(4,/) if {ACME_CHALLENGE_ACL}",
        f'http-request return status 200 content-type text/plain lf-string "%[{lookup}]" '
        f"if {ACME_CHALLENGE_ACL} {{ {lookup} -m found }}",
    ]


def checked_map_path(path: str) -> str:
    """An absolute path HAProxy's configuration and its Runtime API both take as one word."""
    if not _MAP_PATH.fullmatch(path):
        raise ValueError(f"the ACME challenge map {path!r} needs an absolute path of plain characters "
                         "(no spaces or quotes): move the daemon's home to such a path")
    return path
