"""The dashboard's HTTP side: an ASGI app the daemon mounts under /dashboard (daemon/api.py).

Why it exists: it is the one gate between a browser and the daemon. Every
path but the login answers 401 without a session; an action (POST) also needs
its Origin to be this very listener, no cross-site fetch metadata, and the
session's CSRF token in a header, else 403 with nothing done. Every answer
carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only (no inline script, no eval), and is never
cached. The page is pushed: /dashboard/stream is a Server-Sent Events stream
that sends each section when it changes, built from one shared reading a
second (state.Reader) however many tabs are open.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from importlib import resources
from urllib.parse import parse_qs, unquote

import anyio
from starlette.responses import Response, StreamingResponse

from flotilla.daemon.api import DaemonParts
from flotilla.daemon.serving import KIB, BodyRefused, ClientGone, read_body
from flotilla.errors import FlotillaError
from flotilla.web import views
from flotilla.web.actions import Actions
from flotilla.web.sessions import COOKIE, SESSION_TTL, Session, Sessions, csrf_ok
from flotilla.web.state import Reader

log = logging.getLogger(__name__)
PREFIX = views.PREFIX
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the login URL's token never leaves in a Referer
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
MAX_FORM = 4 * KIB
STREAM_INTERVAL = 1.0  # seconds between looks for changes
HEARTBEAT = 15.0  # seconds of silence after which the stream sends a comment (finds clients that left)
THREADS = 4  # readings and actions at once (they call blocking daemon code)


def _static_files() -> dict[str, bytes]:
    """The page's files, read once from the package: nothing outside this list is ever served."""
    root = resources.files("flotilla.web") / "static"
    found = {}
    for folder, names in (("", ("dashboard.js", "dashboard.css")),
                          ("vendor/", ("htmx.min.js", "sse.min.js", "uPlot.iife.min.js", "uPlot.min.css"))):
        for name in names:
            found[folder + name] = (root / folder / name).read_bytes()
    return found


class Dashboard:
    """The dashboard of one daemon: its sessions, its reader, its routes; itself the ASGI app."""

    prefix = PREFIX

    def __init__(self, parts: DaemonParts, *, base_url: str, clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.sessions = Sessions(clock=clock)
        self.reader = Reader(apps=parts.apps, status=parts.status, history=parts.history, metrics=parts.metrics,
                             access_log=parts.access_log)
        self.actions = Actions(apps=parts.apps, operations=parts.operations, events=parts.events,
                               snapshots=parts.snapshots, traffic=parts.traffic, engine=parts.engine,
                               wakeups=parts.wakeups)
        self._static = _static_files()
        self._threads = anyio.CapacityLimiter(THREADS)
        self._rendered: tuple[object, dict[str, str]] = (None, {})  # the latest picture and its sections

    @classmethod
    def build(cls, parts: DaemonParts, base_url: str) -> Dashboard:
        """The factory ``daemon.server.build`` is handed (see cli/main.py's ``daemon``)."""
        return cls(parts, base_url=base_url)

    def login_url(self) -> str:
        """A URL that logs a browser in once, within sessions.LOGIN_TTL."""
        return f"{self.base_url}{PREFIX}/login?token={self.sessions.new_login()}"

    def admits(self, scope: dict) -> bool:
        """Whether the dashboard itself authenticates this request (a session, or the login path that
        checks its token), so a listener's bearer-token gate may let it through."""
        path = _path(scope)
        if path != PREFIX and not path.startswith(f"{PREFIX}/"):
            return False  # a session never opens the API beside the dashboard
        return path == f"{PREFIX}/login" or self._session(scope) is not None

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        response = await self.answer(scope, receive)
        response.headers.update(SECURITY_HEADERS)
        await response(scope, receive, send)

    async def answer(self, scope: dict, receive) -> Response:
        method, path = scope["method"], _path(scope)
        if path == f"{PREFIX}/login" and method == "GET":
            return self.login(scope)
        session = self._session(scope)
        if session is None:
            return _text(401, "Not logged in: run `flotilla dashboard` for a login link.")
        if method == "GET":
            return self._get(path, session)
        if method == "POST":
            return await self._post(scope, receive, path, session)
        return _text(405, f"{method} is not allowed here.")

    def login(self, scope: dict) -> Response:
        token = _query(scope).get("token", "")
        session = self.sessions.log_in(token) if token else None
        if session is None:
            return _text(403, "This login link is used up or expired: run `flotilla dashboard` for a new one.")
        response = Response(status_code=303, headers={"location": f"{PREFIX}/"})
        response.set_cookie(COOKIE, session.id, max_age=int(SESSION_TTL), path=PREFIX, httponly=True,
                            samesite="strict")
        return response

    def _get(self, path: str, session: Session) -> Response:
        if path in (PREFIX, f"{PREFIX}/"):
            return Response(views.page(csrf=session.csrf), media_type="text/html; charset=utf-8")
        if path == f"{PREFIX}/stream":
            return StreamingResponse(self.stream(session), media_type="text/event-stream",
                                     headers={"x-accel-buffering": "no"})
        if path == f"{PREFIX}/state.json":
            picture = self.reader.picture()
            body = {"apps": picture.apps, "events": picture.events, "charts": picture.charts}
            return Response(json.dumps(body), media_type="application/json")
        name = path.removeprefix(f"{PREFIX}/static/")
        if name in self._static:
            return Response(self._static[name], media_type=STATIC_TYPES[name[name.rindex("."):]])
        return _text(404, "Nothing here.")

    async def _post(self, scope: dict, receive, path: str, session: Session) -> Response:
        refusal = _cross_site(scope, session)
        if refusal:
            return _text(403, refusal)
        try:
            form = await _form(scope, receive)
            message = await anyio.to_thread.run_sync(self._act, path, form, limiter=self._threads)
        except FlotillaError as exc:
            return Response(views.notice(exc.message, ok=False), media_type="text/html; charset=utf-8")
        if message is None:
            return _text(404, "No such action.")
        return Response(views.notice(message, ok=True), media_type="text/html; charset=utf-8")

    def _act(self, path: str, form: dict[str, str]) -> str | None:
        parts = [unquote(p) for p in path.removeprefix(f"{PREFIX}/").split("/")]
        match parts:
            case ["apps", app, "scale"]:
                return self.actions.scale(app, service=form.get("service", ""), replicas=form.get("replicas", ""))
            case ["apps", app, "replicas", replica, "restart"]:
                return self.actions.restart(app, replica=replica)
        return None

    async def stream(self, session: Session) -> AsyncIterator[str]:
        """Server-Sent Events: every section at once, then each one when it changes, until the session ends."""
        sent: dict[str, str] = {}
        quiet_since = time.monotonic()
        while self.sessions.find(session.id) is not None:
            sections = await anyio.to_thread.run_sync(self._sections, limiter=self._threads)
            changed = {k: v for k, v in sections.items() if sent.get(k) != v}
            if changed:
                sent.update(changed)
                quiet_since = time.monotonic()
                yield "".join(_event(name, data) for name, data in changed.items())
            elif time.monotonic() - quiet_since > HEARTBEAT:
                quiet_since = time.monotonic()
                yield ": still here\n\n"
            await anyio.sleep(STREAM_INTERVAL)

    def _sections(self) -> dict[str, str]:
        """The page's sections for the current picture, rendered once for every open stream."""
        picture = self.reader.picture()
        if self._rendered[0] is not picture:
            self._rendered = (picture, views.fragments(picture))
        return self._rendered[1]

    def _session(self, scope: dict) -> Session | None:
        cookie = SimpleCookie()
        try:
            cookie.load(_headers(scope).get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed Cookie header means no session, nothing more
            return None
        morsel = cookie.get(COOKIE)
        return self.sessions.find(morsel.value if morsel else None)


def _cross_site(scope: dict, session: Session) -> str | None:
    """Why a POST is refused as possibly cross-site, or None: its Origin must be this listener, the browser
    must not call it cross-site, and the CSRF token must be the session's."""
    headers = _headers(scope)
    origin = headers.get("origin", "")
    if origin not in {f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"}:
        return f"Refused: the request's Origin ({origin or 'none'}) is not this dashboard."
    if headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return "Refused: the browser says this request comes from another site."
    if not csrf_ok(session, headers.get("x-csrf-token")):
        return "Refused: the CSRF token is missing or wrong; reload the page."
    return None


async def _form(scope: dict, receive) -> dict[str, str]:
    try:
        body = await read_body(_headers(scope), receive, limit=MAX_FORM, timeout=10.0)
    except (BodyRefused, ClientGone):
        body = b""
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _event(name: str, data: str) -> str:
    """One SSE event; each line of ``data`` its own ``data:`` field, as the format wants."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")


def _headers(scope: dict) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _path(scope: dict) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    return raw.decode("latin-1").split("?", 1)[0]


def _query(scope: dict) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
