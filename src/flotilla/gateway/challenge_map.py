"""The HTTP-01 answers a running gateway serves: one map, changed without a reload.

The ACME client (acme.py) publishes a token's key authorization here before it
tells the CA to validate, and withdraws it after. Each change goes two ways: to
the map file, which HAProxy reads when it (re)starts, and to the running HAProxy
through the Runtime API (``add map`` / ``del map``), so an answer is served at
once and survives a reload that happens during an order. challenges.py renders
the rule that reads the map.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from flotilla.errors import GatewayError
from flotilla.gateway.challenges import KEY_AUTHORIZATION, TOKEN, checked_map_path
from flotilla.gateway.runtime import RuntimeApi


def ensure_challenge_map(path: Path) -> None:
    """The map file exists (empty at first): HAProxy refuses a configuration naming a missing map."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        path.write_text("")


class ChallengeMap:
    """A ``ChallengeResponder`` (acme.py) over the gateway's map file and Runtime API."""

    def __init__(self, path: Path, runtime: RuntimeApi) -> None:
        self.path = path
        self._runtime = runtime
        self._lock = threading.Lock()
        self._answers: dict[str, str] = {}

    def publish(self, token: str, key_authorization: str) -> None:
        token, value = _checked(token, key_authorization)
        with self._lock:
            self._answers[token] = value
            self._write()
            self._delete(token)  # a token published again keeps one entry
            self._runtime.command(f"add map {self._map()} {token} {value}")

    def withdraw(self, token: str) -> None:
        token, _ = _checked(token, None)
        with self._lock:
            self._answers.pop(token, None)
            self._write()
            self._delete(token)

    def tokens(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._answers))

    def _delete(self, token: str) -> None:
        try:
            self._runtime.command(f"del map {self._map()} {token}")
        except GatewayError as exc:
            if "not found" not in exc.message.lower():
                raise

    def _map(self) -> str:
        return checked_map_path(str(self.path))

    def _write(self) -> None:
        ensure_challenge_map(self.path)
        temporary = self.path.with_suffix(".new")
        temporary.write_text("".join(f"{t} {v}\n" for t, v in sorted(self._answers.items())))
        os.replace(temporary, self.path)


def _checked(token: str, key_authorization: str | None) -> tuple[str, str]:
    """Both as RFC 8555 shapes them: nothing that could end a Runtime API command or a map line."""
    if not TOKEN.fullmatch(token):
        raise GatewayError(f"{token[:80]!r} is not an ACME token (base64url characters only)")
    if key_authorization is not None and not KEY_AUTHORIZATION.fullmatch(key_authorization):
        raise GatewayError(f"the key authorization for token {token} is not TOKEN.THUMBPRINT in base64url")
    return token, key_authorization or ""
