"""The daemon's HTTP API: an ASGI app on a UNIX socket only its owner can open (and, optionally, TCP).

Thin glue: each route parses its request, calls an operation or a status
function, and answers JSON. Flotilla errors become JSON bodies with the
error's code and message (and, for a bad spec, every problem), so the CLI
shows the same sentence the daemon wrote.

It is an ASGI app (Starlette's responses) served by uvicorn (daemon/serving.py,
which also holds the connection, head and time limits), so an idle client
costs a socket, not a thread. A request passes four gates before any work:
the bearer token on the TCP listener (``BearerToken``: 401, nothing read);
the route (404, or 405 for a known path with another method); the body
(413 over ``MAX_BODY``, said by Content-Length or counted, 408 when it does not
arrive within ``BODY_TIMEOUT``); a worker thread. Handlers call blocking daemon
code, so they run in at most ``WORKERS`` threads; a request that waits
``WORKER_WAIT`` for one is answered 503 with nothing done. ``async`` handlers
run on the event loop and must not block: health answers even when every
worker is busy.

A front end (the dashboard, ``Frontend``) is mounted under its prefix: its
requests go to it whole, and it authenticates each itself. The daemon knows it
only by that Protocol; ``server.build`` makes it from ``DaemonParts``.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import inspect
import json
import logging
import queue
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
from starlette.responses import Response, StreamingResponse

from flotilla import __version__
from flotilla.daemon import attach, frames
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.backups import Backups
from flotilla.daemon.events import EventLog
from flotilla.daemon.gateway_logs import entry_filter, stream_access_log
from flotilla.daemon.images import Images
from flotilla.daemon.jobs import Jobs
from flotilla.daemon.operations import Operations
from flotilla.daemon.ports import ReplicaEngine
from flotilla.daemon.progress import run_with_progress
from flotilla.daemon.registries import Registries
from flotilla.daemon.serving import MIB, AsgiApp, BodyRefused, ClientGone, Limits, read_body
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.status import StatusViews
from flotilla.daemon.store import Store
from flotilla.daemon.tasks import RUN, Tasks, exec_session, now_suffix, stream_exec, stream_task
from flotilla.daemon.traffic import Traffic
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import (
    BadRequestError,
    ConflictError,
    DaemonError,
    EngineUnavailableError,
    FlotillaError,
    NotFoundError,
    SpecError,
    TaskFailedError,
)
from flotilla.gateway.accesslog import AccessLog
from flotilla.gateway.metrics import MetricsWindow
from flotilla.spec.tasks import task_spec

log = logging.getLogger(__name__)
HTTP_STATUS = {
    SpecError: 400,
    BadRequestError: 400,
    ConflictError: 409,
    NotFoundError: 404,
    EngineUnavailableError: 503,
    TaskFailedError: 409,
}
Route = tuple[str, re.Pattern, Callable]
LIMITS = Limits()  # each listener's connection, head and time limits (serving.Limits says what each is)
MAX_BODY = 1 * MIB  # a spec or a secret (at most 64 KiB) fits many times over
BODY_TIMEOUT = 10.0  # seconds for a whole body, once its head has come
WORKERS = 8  # threads running handlers at once
WORKER_WAIT = 30.0  # seconds a request may wait for one
LOG_QUEUE = 10_000  # lines read ahead of a slow log client; the readers wait beyond
LOG_POLL = 0.05  # seconds between looks at the log readers' queue
UNAUTHORIZED = {"error": "unauthorized",
                "message": "send Authorization: Bearer <token>; the token is in $FLOTILLA_HOME/api.token"}


@dataclass(frozen=True)
class DaemonParts:
    """What a front end served by the daemon (the dashboard, flotilla.web) may use; built once in server.build."""

    apps: AppRepository
    status: StatusViews
    history: Store
    metrics: MetricsWindow
    operations: Operations
    events: EventLog
    snapshots: Snapshots
    traffic: Traffic | None
    engine: ReplicaEngine
    wakeups: Wakeups
    access_log: AccessLog | None = None


class Frontend(Protocol):
    """A browser front end mounted under ``prefix`` (flotilla.web.Dashboard): an ASGI app that authenticates
    every request itself. The daemon never imports it; the CLI hands its factory to server.build."""

    prefix: str

    async def __call__(self, scope: dict, receive, send) -> None: ...

    def login_url(self) -> str: ...

    def admits(self, scope: dict) -> bool: ...


FrontendFactory = Callable[[DaemonParts, str], Frontend]  # (the daemon's parts, the loopback base URL)


class Request:
    """What a handler sees: the URL's parameters, its query (the last value of each name), the body."""

    def __init__(self, params: dict, query: str, body: bytes = b"", *, decoder: frames.Decoder | None = None) -> None:
        self.params = params
        self.query = {k: v[-1] for k, v in parse_qs(query).items()}
        self.body = body
        self.frames = decoder  # an interactive session's: the rest of the body is read by daemon/attach.py

    def json(self) -> dict:
        try:
            body = json.loads(self.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequestError("request body must be a JSON object")
        return body

    def flag(self, name: str) -> bool:
        return self.query.get(name, "") in ("1", "true", "yes")

    def number(self, name: str, *, default: int) -> int:
        """A whole-number query parameter (``?since=12``); BadRequestError when it is not one."""
        raw = self.query.get(name, "") or str(default)
        if not raw.isdigit():
            raise BadRequestError(f"?{name}={raw!r}: write a whole number, for example ?{name}={default}")
        return int(raw)


class Refused(Exception):
    """A request answered ``status`` before (or instead of) its handler, with ``error``'s sentence."""

    def __init__(self, status: int, error: FlotillaError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


class Api:
    """Routes requests to the daemon's parts; one instance per daemon, itself the ASGI app."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        operations: Operations,
        status: StatusViews,
        history: Store,
        engine: ReplicaEngine,
        access_log: AccessLog,
        frontend: Frontend | None = None,
        registries: Registries | None = None,
        images: Images | None = None,
        backups: Backups | None = None,
        tasks: Tasks | None = None,
        jobs: Jobs | None = None,
    ) -> None:
        self._backups = backups
        self._apps = apps
        self._operations = operations
        self._status = status
        self._history = history
        self._engine = engine
        self._access_log = access_log
        self.frontend = frontend
        self._registries = registries
        self._images = images
        self._tasks = tasks
        self._jobs = jobs
        self._workers = anyio.Semaphore(WORKERS)
        self.route_table: list[Route] = [
            ("GET", re.compile(r"/v1/health"), self.health),
            ("GET", re.compile(r"/v1/apps"), self.list_apps),
            ("POST", re.compile(r"/v1/apps"), self.submit),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)"), self.app_status),
            ("DELETE", re.compile(r"/v1/apps/(?P<app>[^/]+)"), self.remove),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/scale"), self.scale),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/history"), self.history),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/history/(?P<number>[0-9]+)"), self.revision),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/rollback"), self.rollback),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/restart"), self.restart),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/events"), self.events),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/logs"), self.logs),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/gateway-logs"), self.gateway_logs),
            ("GET", re.compile(r"/v1/gateway/logs"), self.gateway_logs),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/routes"), self.routes),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/metrics"), self.metrics),
            ("GET", re.compile(r"/metrics"), self.prometheus),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets"), self.list_secrets),
            ("PUT", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.set_secret),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.reveal_secret),
            ("DELETE", re.compile(r"/v1/apps/(?P<app>[^/]+)/secrets/(?P<name>[^/]+)"), self.remove_secret),
            ("POST", re.compile(r"/v1/secrets/rekey"), self.rekey),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/certs"), self.list_certificates),
            ("PUT", re.compile(r"/v1/apps/(?P<app>[^/]+)/certs/(?P<name>[^/]+)"), self.set_certificate),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/certs/(?P<name>[^/]+)"), self.reveal_certificate),
            ("DELETE", re.compile(r"/v1/apps/(?P<app>[^/]+)/certs/(?P<name>[^/]+)"), self.remove_certificate),
            ("POST", re.compile(r"/v1/dashboard/login"), self.dashboard_login),
            ("POST", re.compile(r"/v1/build"), self.build),
            ("GET", re.compile(r"/v1/registries"), self.list_registries),
            ("PUT", re.compile(r"/v1/registries/(?P<host>[^/]+)"), self.registry_login),
            ("GET", re.compile(r"/v1/registries/(?P<host>[^/]+)"), self.reveal_registry_login),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/images"), self.app_images),
            ("DELETE", re.compile(r"/v1/registries/(?P<host>[^/]+)"), self.registry_logout),
            ("POST", re.compile(r"/v1/images/prune"), self.prune_images),
            ("GET", re.compile(r"/v1/volumes"), self.list_volumes),
            ("GET", re.compile(r"/v1/backups"), self.list_backups),
            ("GET", re.compile(r"/v1/backups/(?P<id>[^/]+)/data"), self.backup_data),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/backups"), self.take_backup),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/restore"), self.restore),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/run"), self.run_task),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/exec"), self.exec_in_replica),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/jobs"), self.list_jobs),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/jobs/(?P<job>[^/]+)/logs"), self.job_logs),
            ("GET", re.compile(r"/v1/apps/(?P<app>[^/]+)/jobs/(?P<job>[^/]+)/runs"), self.job_runs),
            ("POST", re.compile(r"/v1/apps/(?P<app>[^/]+)/jobs/(?P<job>[^/]+)/run"), self.run_job),
            (
                "GET",
                re.compile(r"/v1/apps/(?P<app>[^/]+)/services/(?P<service>[^/]+)/endpoints"),
                self.endpoints,
            ),
        ]

    def dispatch(self, method: str, path: str) -> tuple[Callable | None, dict, bool]:
        """The handler for ``method path``, its URL parameters (decoded), and whether the path exists."""
        known = False
        for verb, pattern, handler in self.route_table:
            match = pattern.fullmatch(path)
            if match:
                known = True
                if verb == method:
                    return handler, {k: unquote(v) for k, v in match.groupdict().items()}, True
        return None, {}, known

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http" and self._for_frontend(scope):
            await self.frontend(scope, receive, send)
        elif scope["type"] == "http":  # no lifespan (serving.py turns it off), no websockets
            response = await self.answer(scope, receive)
            await response(scope, receive, send)

    def _for_frontend(self, scope: dict) -> bool:
        path = _path_of(scope)
        prefix = self.frontend.prefix if self.frontend else None
        return bool(prefix) and (path == prefix or path.startswith(f"{prefix}/"))

    async def answer(self, scope: dict, receive) -> Response:
        """The response to one request; every failure becomes a JSON answer, never a traceback."""
        method = scope["method"]
        path = _path_of(scope)
        handler, params, known = self.dispatch(method, path)
        try:
            if handler is None:
                raise Refused(405 if known else 404, NotFoundError(f"{method} {path} is not part of the API"))
            decoder = frames.Decoder() if self._framed(scope, handler) else None
            body = await (_start_frame(receive, decoder) if decoder else _read_body(scope, receive))
            result = await self._run(handler, Request(params, scope["query_string"].decode("latin-1"), body,
                                                      decoder=decoder))
        except Refused as refusal:
            return json_response(refusal.status, refusal.error.to_dict(), close=True)
        except FlotillaError as exc:
            return json_response(_status_of(exc), exc.to_dict())
        except Exception as exc:  # answer, log, and keep serving
            log.exception("API %s %s failed", method, path)
            return json_response(500, {"error": "internal", "message": f"internal error ({type(exc).__name__}); "
                                                                       "the daemon's log has the details"})
        return result if isinstance(result, Response) else json_response(*result)

    def _framed(self, scope: dict, handler: Callable | None) -> bool:
        """An interactive session (daemon/attach.py): a run or exec whose body is frames, not JSON."""
        framed = _headers_of(scope).get("content-type", "").split(";")[0].strip() == frames.CONTENT_TYPE
        return framed and handler in (self.run_task, self.exec_in_replica)

    async def _run(self, handler: Callable, req: Request):
        """An ``async`` handler on the loop; any other in a worker thread, once one is free."""
        if inspect.iscoroutinefunction(handler):
            return await handler(req)
        try:
            with anyio.fail_after(WORKER_WAIT):
                await self._workers.acquire()
        except TimeoutError:
            raise Refused(503, DaemonError(f"the daemon is busy: its {WORKERS} API workers were all taken for "
                                           f"{WORKER_WAIT:g} s; nothing was done, try again")) from None
        try:
            return await anyio.to_thread.run_sync(handler, req)
        finally:
            self._workers.release()

    # -- handlers: each returns (status, body) or a Response

    async def health(self, req: Request):
        return 200, {"ok": True, "version": __version__}

    def list_apps(self, req: Request):
        apps = []
        for stored in self._apps.stored():
            apps.append({"app": stored.name, "status": stored.status, "updated": stored.updated})
        return 200, {"apps": apps}

    def submit(self, req: Request):
        """``?progress=1`` streams each pull and build step (daemon/progress.py) before the result."""
        spec, dry_run = req.json().get("spec") or {}, req.flag("dry_run")
        if req.flag("progress"):
            return _progress_response(lambda sink: self._operations.submit(spec, dry_run=dry_run, progress=sink))
        return 200, self._operations.submit(spec, dry_run=dry_run)

    def build(self, req: Request):
        spec = req.json().get("spec") or {}
        return _progress_response(lambda sink: self._operations.build(spec, progress=sink))

    def list_registries(self, req: Request):
        return 200, {"registries": self._registries_part().list()}

    def registry_login(self, req: Request):
        body = req.json()
        password = _decode_password(body.get("password_b64"))
        return 200, self._registries_part().login(req.params["host"], username=body.get("username"),
                                                  password=password)

    def reveal_registry_login(self, req: Request):
        """For `flotilla apply --target kubernetes` (image pull Secrets), only with ?reveal=1."""
        if not req.flag("reveal"):
            raise BadRequestError("registry passwords are only sent with ?reveal=1, to `flotilla apply`")
        login = self._registries_part().credentials(req.params["host"])
        if login is None:
            raise NotFoundError(f"no login for registry {req.params['host']}; `flotilla registry ls` lists them")
        return 200, {"registry": req.params["host"], "username": login.username,
                     "password_b64": base64.b64encode(login.password.encode()).decode()}

    def app_images(self, req: Request):
        """The image pins of the app's deploy (what Kubernetes manifests name by digest)."""
        spec = self._apps.require(req.params["app"])
        return 200, {"images": {ref: pin.model_dump() for ref, pin in spec.images.items()}}

    def registry_logout(self, req: Request):
        return 200, self._registries_part().logout(req.params["host"])

    def prune_images(self, req: Request):
        if self._images is None:
            raise ConflictError("this daemon runs without an image store")
        return 200, self._images.prune(self._apps)

    def _registries_part(self) -> Registries:
        if self._registries is None:
            raise ConflictError("this daemon runs without a secrets vault, so it keeps no registry logins")
        return self._registries

    def app_status(self, req: Request):
        return 200, self._status.app_status(req.params["app"])

    def remove(self, req: Request):
        return 200, self._operations.remove(req.params["app"], volumes=req.flag("volumes"))

    # -- volumes and backups (daemon/backups.py) ----------------------------------------

    def list_volumes(self, req: Request):
        found = self._engine.list_volumes(req.query.get("app") or None)
        return 200, {"volumes": [asdict(v) for v in found]}

    def list_backups(self, req: Request):
        return 200, {"backups": [e.to_dict() for e in self._backups_part().list(req.query.get("app") or None)]}

    def backup_data(self, req: Request):
        path = self._backups_part().open(req.params["id"])
        return StreamingResponse(_file_chunks(path), media_type="application/octet-stream")

    def take_backup(self, req: Request):
        body = req.json()
        entries = self._backups_part().take(req.params["app"], str(body.get("service", "")),
                                            volume=body.get("volume") or None)
        return 200, {"backups": [e.to_dict() for e in entries]}

    def restore(self, req: Request):
        body = req.json()
        return 200, self._backups_part().restore(req.params["app"], str(body.get("service", "")),
                                                 source=str(body.get("source", "")), volume=body.get("volume") or None,
                                                 stop=bool(body.get("stop")), live=bool(body.get("live")))

    def _backups_part(self) -> Backups:
        if self._backups is None:
            raise NotFoundError("this daemon keeps no backups")
        return self._backups

    def scale(self, req: Request):
        counts = req.json().get("replicas") or {}
        return 200, self._operations.scale(req.params["app"], counts)

    def history(self, req: Request):
        return 200, self._operations.history(req.params["app"])

    def revision(self, req: Request):
        return 200, self._operations.revision(req.params["app"], int(req.params["number"]))

    def rollback(self, req: Request):
        number = req.json().get("revision")
        if number is not None and (not isinstance(number, int) or isinstance(number, bool) or number < 1):
            raise BadRequestError(f"revision must be a revision number (1, 2, ...), got {number!r}")
        return 200, self._operations.rollback(req.params["app"], number)

    def restart(self, req: Request):
        service = req.json().get("service")
        if service is not None and not isinstance(service, str):
            raise BadRequestError(f"service must be a service name, got {service!r}")
        return 200, self._operations.restart(req.params["app"], service)

    def events(self, req: Request):
        since = req.number("since", default=0)
        limit = min(req.number("limit", default=1000), 10_000)
        events = self._history.events(req.params["app"], since=since, limit=limit)
        return 200, {"events": [e.to_dict() for e in events]}

    def endpoints(self, req: Request):
        found = self._status.endpoints(req.params["app"], req.params["service"])
        return 200, {"endpoints": found}

    def routes(self, req: Request):
        return 200, {"routes": self._status.routes(req.params["app"])}

    def metrics(self, req: Request):
        return 200, {"services": self._status.metrics(req.params["app"])}

    def prometheus(self, req: Request):
        extra = (self._backups.prometheus() if self._backups else "") + (
            "\n".join(self._jobs.metrics()) + "\n" if self._jobs else "")
        return Response(self._status.prometheus() + extra, media_type="text/plain; version=0.0.4; charset=utf-8")

    def list_secrets(self, req: Request):
        infos = self._operations.vault.list(req.params["app"])
        return 200, {"secrets": [_secret_info(i) for i in infos]}

    def set_secret(self, req: Request):
        value = _decode_value(req.json().get("value_b64"))
        return 200, self._operations.set_secret(req.params["app"], req.params["name"], value)

    def reveal_secret(self, req: Request):
        if not req.flag("reveal"):
            raise BadRequestError("secret values are only sent with ?reveal=1 (`flotilla secrets get --reveal`)")
        value = self._operations.vault.get(req.params["app"], req.params["name"])
        return 200, {"name": req.params["name"], "value_b64": base64.b64encode(value).decode()}

    def remove_secret(self, req: Request):
        return 200, self._operations.remove_secret(req.params["app"], req.params["name"])

    def list_certificates(self, req: Request):
        """Hosts, issuer, expiry, source and last error of each certificate: never a key."""
        found = self._operations.certificates.list(req.params["app"])
        return 200, {"certificates": [c.to_dict() for c in found]}

    def set_certificate(self, req: Request):
        body = req.json()
        cert, key = body.get("cert"), body.get("key")
        if not isinstance(cert, str) or not isinstance(key, str):
            raise BadRequestError("give the certificate chain and its key as PEM text: {\"cert\": ..., \"key\": ...}")
        return 200, self._operations.set_certificate(req.params["app"], req.params["name"],
                                                     cert_pem=cert.encode(), key_pem=key.encode())

    def reveal_certificate(self, req: Request):
        """The chain and key, for `flotilla apply`'s kubernetes.io/tls Secrets (sent to the API server, not shown)."""
        if not req.flag("reveal"):
            raise BadRequestError("a certificate's key is only sent with ?reveal=1 (`flotilla apply` asks for it)")
        found = self._operations.certificates.require(req.params["app"], req.params["name"])
        return 200, {"name": found.name, "cert": found.cert_pem.decode(), "key": found.key_pem.decode()}

    def remove_certificate(self, req: Request):
        return 200, self._operations.remove_certificate(req.params["app"], req.params["name"])

    def rekey(self, req: Request):
        return 200, self._operations.rekey()

    def dashboard_login(self, req: Request):
        """``flotilla dashboard``: a one-time login URL for the browser (only the socket's owner, or a bearer
        of the API token, can ask)."""
        if self.frontend is None:
            raise NotFoundError("this daemon serves no dashboard; start it without --dashboard-listen off")
        url = urlsplit(self.frontend.login_url())
        return 200, {"url": url.geturl(), "path": f"{url.path}?{url.query}"}

    def logs(self, req: Request):
        spec, service = self._app_and_service(req)
        observed = self._engine.observe(spec.app)
        replicas = [r for r in observed.replicas if not service or r.service == service]
        lines = stream_logs(self._engine, replicas, follow=req.flag("follow"), tail=req.query.get("tail", "all"))
        return StreamingResponse(lines, media_type="text/plain; charset=utf-8")

    def gateway_logs(self, req: Request):
        """The gateway's access log as JSON lines: of one app (and ``?service=``) or, without one, all of it."""
        app = service = None
        if "app" in req.params:
            spec, service = self._app_and_service(req)
            app = spec.app
        tail = None if req.query.get("tail", "all") == "all" else req.number("tail", default=100)
        lines = stream_access_log(self._access_log, keep=entry_filter(app, service), tail=tail,
                                  follow=req.flag("follow"))
        return StreamingResponse(lines, media_type="application/x-ndjson")

    # -- tasks (daemon/tasks.py) and jobs (daemon/jobs.py) -------------------------

    def run_task(self, req: Request):
        """``flotilla run``: a task container of the service, its output and exit code streamed as NDJSON."""
        body = req.json()
        spec = self._status.runtime_spec(req.params["app"])
        command = _command_of(body)
        tasks, service, tty = self._require_tasks(), str(body.get("service", "")), bool(body.get("tty"))
        started = tasks.start(task_spec(spec, service=service, command=command), service=service, kind=RUN,
                              subject=service, suffix=now_suffix(), tty=tty, stdin=req.frames is not None,
                              start=req.frames is None)
        if req.frames is not None:
            return SessionResponse(tasks.attach(started, tty=tty, size=_size_of(body)), decoder=req.frames)
        return StreamingResponse(stream_task(tasks, self._engine, started), media_type="application/x-ndjson")

    def exec_in_replica(self, req: Request):
        """``flotilla exec``: a command inside a running replica (named as ``flotilla ps`` shows it)."""
        body = req.json()
        spec = self._status.runtime_spec(req.params["app"])
        wanted = str(body.get("replica", ""))
        replicas = [r for r in self._engine.observe(spec.app).replicas if r.running]
        found = next((r for r in replicas if wanted in (r.replica, r.name)), None)
        if found is None:
            raise NotFoundError(f"app {spec.app} has no running replica {wanted!r}; running: "
                                f"{', '.join(sorted(r.replica for r in replicas)) or 'none'}"
                                f" (`flotilla ps {spec.app}`)")
        command, tty = list(_command_of(body)), bool(body.get("tty"))
        if req.frames is not None:
            return SessionResponse(exec_session(self._engine, found.container_id, command, tty=tty,
                                                size=_size_of(body)), decoder=req.frames)
        exec_id, output = self._engine.run_in(found.container_id, command, tty=tty)
        return StreamingResponse(stream_exec(self._engine, exec_id, output), media_type="application/x-ndjson")

    def list_jobs(self, req: Request):
        return 200, self._require_jobs().list(req.params["app"])

    def job_logs(self, req: Request):
        number = req.number("run", default=0) if "run" in req.query else None
        return 200, self._require_jobs().logs(req.params["app"], req.params["job"], number=number)

    def job_runs(self, req: Request):
        return 200, self._require_jobs().history(req.params["app"], req.params["job"])

    def run_job(self, req: Request):
        return 200, self._require_jobs().run_now(req.params["app"], req.params["job"])

    def _require_tasks(self) -> Tasks:
        if self._tasks is None:
            raise ConflictError("this daemon runs no tasks")
        return self._tasks

    def _require_jobs(self) -> Jobs:
        if self._jobs is None:
            raise ConflictError("this daemon runs no scheduled jobs")
        return self._jobs

    def _app_and_service(self, req: Request):
        """The runtime spec of the URL's app and the ``?service=`` it has (NotFoundError when it has not)."""
        spec = self._status.runtime_spec(req.params["app"])
        service = req.query.get("service")
        if service and service not in spec.services:
            raise NotFoundError(f"app {spec.app} has no service {service!r}; it has: {', '.join(spec.services)}")
        return spec, service


class BearerToken:
    """The TCP listener's gate: without the token a request is answered 401, its body unread, nothing done.

    The dashboard's paths are the one exception: a browser sends no bearer token, so there the dashboard's
    own login (a one-time token from the API, then its session cookie) stands for it (``admits``)."""

    def __init__(self, app: AsgiApp, *, token: str, admits: Callable[[dict], bool] | None = None) -> None:
        if not token.strip():  # a second guard: `Bearer ` with nothing after it must never match
            raise ValueError("the API's bearer token is empty")
        self._app = app
        self._token = token.strip().encode()
        self._admits = admits  # the dashboard's own authentication (its session cookie), for its paths only

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http" and not self.authorized(scope) and not (self._admits and self._admits(scope)):
            await json_response(401, UNAUTHORIZED, close=True)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def authorized(self, scope: dict) -> bool:
        scheme, _, given = _headers_of(scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)


def _command_of(body: dict) -> tuple[str, ...]:
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        raise BadRequestError("give the command as a non-empty list of strings, e.g. "
                              "`flotilla run shop web -- python3 -m manage`")
    return tuple(command)


def _size_of(body: dict) -> tuple[int, int] | None:
    """An interactive session's first terminal size (``"size": [rows, cols]``), if it gave a sensible one."""
    return frames.size_from(body.get("size"))


class SessionResponse(Response):
    """The answer to an interactive run or exec: frames both ways until the command ends (daemon/attach.py)."""

    def __init__(self, session: attach.Session, *, decoder: frames.Decoder) -> None:
        super().__init__(media_type=frames.CONTENT_TYPE)
        self._session = session
        self._decoder = decoder

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", frames.CONTENT_TYPE.encode()), (b"cache-control", b"no-store")]})
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._session.attached.close()
                await anyio.to_thread.run_sync(self._session.end)
            raise
        await attach.relay(self._session, decoder=self._decoder, receive=receive, send=send)


async def _start_frame(receive, decoder: frames.Decoder) -> bytes:
    """The JSON of an interactive session's first frame (START), sent alone before the client waits for the
    answer; refused (400, nothing started) when it is something else or does not come within BODY_TIMEOUT."""
    received: list[frames.Frame] = []
    try:
        with anyio.fail_after(BODY_TIMEOUT):
            while not received:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Refused(400, BadRequestError("the client left before its session's start frame"))
                received = decoder.feed(message.get("body", b""))
                if not received and (not message.get("more_body", False) or decoder.pending > MAX_BODY):
                    raise Refused(400, BadRequestError("an interactive session's body must begin with a whole "
                                                       "start frame (daemon/frames.py)"))
    except TimeoutError:
        raise Refused(408, BadRequestError(f"the session's start frame did not arrive within {BODY_TIMEOUT:g} s; "
                                           "send it at once")) from None
    if received[0].kind != frames.START or len(received) > 1 or decoder.pending:
        raise Refused(400, BadRequestError("send an interactive session's start frame alone, then wait for the "
                                           "answer before any other frame (daemon/frames.py)"))
    return received[0].payload


def _progress_response(work) -> StreamingResponse:
    return StreamingResponse(run_with_progress(work, name="progress"), media_type="application/x-ndjson")


async def _file_chunks(path) -> AsyncIterator[bytes]:
    with open(path, "rb") as source:
        while chunk := await anyio.to_thread.run_sync(source.read, 1 << 16):
            yield chunk


def json_response(status: int, body: dict, *, close: bool = False) -> Response:
    """``body`` as JSON (lone surrogates escaped, as json.dumps does); ``close`` ends the connection after it,
    for answers given before the request's body was read."""
    headers = {"connection": "close"} if close else None
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _path_of(scope: dict) -> str:
    """The path as sent (still percent-encoded, so an encoded ``/`` stays inside its segment), without a
    trailing slash."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return raw.decode("latin-1").rstrip("/") or "/"


def _headers_of(scope: dict) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def _read_body(scope: dict, receive) -> bytes:
    try:
        return await read_body(_headers_of(scope), receive, limit=MAX_BODY, timeout=BODY_TIMEOUT)
    except BodyRefused as refused:
        raise Refused(refused.status, BadRequestError(refused.message)) from None
    except ClientGone:
        raise Refused(400, BadRequestError("the client left before its request body arrived")) from None


def _status_of(exc: FlotillaError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def _secret_info(info) -> dict:
    return {"name": info.name, "version": info.version, "created": info.created, "versions": info.versions}


def _decode_password(encoded) -> str:
    try:
        return _decode_value(encoded).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError("the password or token must be UTF-8 text") from exc


def _decode_value(encoded) -> bytes:
    try:
        return base64.b64decode(encoded or "", validate=True)
    except (ValueError, TypeError) as exc:
        raise BadRequestError("value_b64 must be the secret's value in base64") from exc


async def stream_logs(engine, replicas, *, follow: bool, tail: str) -> AsyncIterator[bytes]:
    """``replica | line`` for every replica, merged as lines arrive.

    One reader thread per replica (the engine's log streams block); they stop
    when this generator is closed, which Starlette does when the client goes
    away: at once while they wait for room in the queue, or at a replica's
    next line while they wait for the engine.
    """
    width = max((len(r.replica) for r in replicas), default=0)
    lines: queue.Queue = queue.Queue(maxsize=LOG_QUEUE)
    done = threading.Event()
    readers = [
        threading.Thread(target=_read_logs, args=(engine, r, lines, done, follow, tail, width),
                         name=f"logs-{r.replica}", daemon=True)
        for r in replicas
    ]
    for reader in readers:
        reader.start()
    try:
        while True:
            reading = any(t.is_alive() for t in readers)
            batch = _drain(lines)
            if batch:
                yield batch
            elif not reading:
                return
            else:
                await anyio.sleep(LOG_POLL)
    finally:
        done.set()


def _drain(lines: queue.Queue) -> bytes:
    """The lines waiting now (at most a thousand), as one chunk."""
    batch = []
    with contextlib.suppress(queue.Empty):
        while len(batch) < 1000:
            batch.append(lines.get_nowait())
    return b"".join(batch)


def _read_logs(engine, replica, lines: queue.Queue, done: threading.Event, follow, tail, width) -> None:
    prefix = f"{replica.replica:<{width}} | ".encode()
    pending = b""
    try:
        for chunk in engine.logs(replica.container_id, follow=follow, tail=tail):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if not all(_offer(lines, prefix + line + b"\n", done) for line in complete):
                return
    except FlotillaError:
        return
    if pending:
        _offer(lines, prefix + pending + b"\n", done)


def _offer(lines: queue.Queue, line: bytes, done: threading.Event) -> bool:
    """Queue ``line``, waiting for room while the client is still there; False once it has gone."""
    while not done.is_set():
        try:
            lines.put(line, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
