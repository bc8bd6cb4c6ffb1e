"""Who may use the dashboard: one-time login tokens, session cookies and their CSRF tokens.

Why it exists: a browser cannot send the API's bearer token, and a URL
printed by `flotilla dashboard` may end up in a shell history or a proxy log.
So the URL carries a login token that works once, within ``LOGIN_TTL``, and
is exchanged for a session (an HttpOnly, SameSite=Strict cookie); every
action must also carry the session's CSRF token. Only hashes of the tokens
are kept, compared in constant time; the clock is injected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

LOGIN_TTL = 60.0  # seconds a printed login URL works (once)
SESSION_TTL = 12 * 3600.0  # seconds a browser session lasts
MAX_SESSIONS = 64  # the oldest session goes when a 65th logs in
COOKIE = "flotilla_session"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its id (the cookie's value), its CSRF token and when it ends."""

    id: str
    csrf: str
    expires: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Sessions:
    """Login tokens waiting to be used, and the sessions they became; thread-safe."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._logins: dict[bytes, float] = {}  # digest -> expiry
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def new_login(self) -> str:
        """A login token for one use, within ``LOGIN_TTL``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired()
            self._logins[_digest(token)] = self._clock() + LOGIN_TTL
        return token

    def log_in(self, token: str) -> Session | None:
        """The new session for a valid login token (which is used up); None for any other token."""
        with self._lock:
            self._drop_expired()
            if self._logins.pop(_digest(token), None) is None:
                return None
            session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                              expires=self._clock() + SESSION_TTL)
            self._sessions[_digest(session.id)] = session
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].expires)]
        return session

    def find(self, session_id: str | None) -> Session | None:
        """The live session whose id is ``session_id``, or None."""
        if not session_id:
            return None
        with self._lock:
            self._drop_expired()
            session = self._sessions.get(_digest(session_id))
        return session if session and hmac.compare_digest(session.id, session_id) else None

    def _drop_expired(self) -> None:
        now = self._clock()
        for table in (self._logins, self._sessions):
            for key in [k for k, v in table.items() if (v if isinstance(v, float) else v.expires) <= now]:
                del table[key]


def csrf_ok(session: Session, given: str | None) -> bool:
    """Whether ``given`` is the session's CSRF token (constant-time)."""
    return bool(given) and hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "surrogatepass"))
