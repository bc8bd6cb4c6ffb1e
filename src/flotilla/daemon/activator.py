"""Scale from zero: hold a request at the gateway while the first replica starts.

A service with ``autoscale.min: 0`` has one more server in its gateway
backend: this activator, on a UNIX socket. HAProxy enables it (Runtime API)
only while no replica serves the service. The activator receives the request
(HAProxy names the backend in ``X-Flotilla-Backend``), asks the autoscaler
for a replica, waits until one is healthy (at most HOLD_TIMEOUT), then relays
the request to it and the answer back, both streamed. The client sees a
slower first response, never a refusal. As soon as a replica serves, the
gateway sends traffic straight to it and the activator is out of the path.

Only the gateway reaches it, and only for what it may hold:

* the socket lives in a directory that only root and the gateway's worker
  group may enter (``0750 root:haproxy``), removed and made anew at every
  daemon start, so no other local user can connect to it, nor bind its path
  after the daemon died (there is no port to take);
* each connection's peer is read from the kernel (SO_PEERCRED): a uid other
  than root, the daemon's own or the gateway workers' is closed unread;
* a request must name a backend of Flotilla's whose service is held at zero
  right now (``held``, from Traffic): any other, an internal service's name
  included, is refused with 503 and wakes nothing.

Memory stays flat whatever the body: nothing of it is read while the request
waits, then it goes to the replica chunk by chunk (uvicorn stops reading the
client past 64 KiB unread), and the answer comes back the same way. Every
step is bounded: the connect to the replica, each read and write on either
side (``Timeouts``), the hold itself, and the requests held at once (HOLDS;
HAProxy queues more, ``maxconn`` on the activator's server line).

It is an ASGI app on a uvicorn server of its own (daemon/serving.py: the same
connection, head and time limits as the API, and a 400 for a malformed head),
in a thread of its own, on a socket bound when it is made.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import h11
from starlette.responses import Response

from flotilla.daemon.serving import HttpServer, Limits
from flotilla.errors import DaemonError, GatewayError
from flotilla.gateway.model import parse_backend_name
from flotilla.gateway.workers import worker_account

log = logging.getLogger(__name__)
# Below HAProxy's `timeout server` (30 s): the client gets this activator's clear 503, not a 504.
HOLD_TIMEOUT = 25.0
POLL_INTERVAL = 0.05
BACKEND_HEADER = b"x-flotilla-backend"
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-authorization", b"proxy-authenticate"}
NOT_RELAYED = HOP_BY_HOP | {BACKEND_HEADER, b"expect"}  # HAProxy and uvicorn answer Expect themselves
NOT_RETURNED = HOP_BY_HOP | {b"date"}  # uvicorn dates the answer itself
HOLDS = 64  # requests held (or relayed) at once; one more is refused with 503
CHUNK = 64 * 1024
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
RUN_ROOT = Path("/run/flotilla-activator")  # root's daemons; any other keeps it in its home
SOCKET_NAME = "activator.sock"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 2.0  # to the new replica
    io: float = 30.0  # each read and each write, from the client and to the replica (HAProxy's own)


@dataclass(frozen=True)
class GatewayAccess:
    """Who may reach the activator: the group its directory and socket belong to, and the peer uids served."""

    group: int | None  # None: the daemon is not root, HAProxy runs as the daemon's user
    peers: frozenset[int] | None  # None: no peer check (tests)


def socket_path(*, home: Path, identity: str, euid: int | None = None) -> Path:
    """Where the activator of the daemon of ``home`` listens: a directory of its own under /run
    (root), or under the home (any other user, whose HAProxy runs as that same user)."""
    root = RUN_ROOT if (os.geteuid() if euid is None else euid) == 0 else home / "run"
    return root / identity / SOCKET_NAME


def gateway_access(user: str) -> GatewayAccess:
    """The gateway workers' group and uid (``user``, gateway/workers.py), with root and the daemon's own uid."""
    peers = {0, os.geteuid()}
    try:
        account = worker_account(user)
    except GatewayError as exc:  # the gateway cannot start either; said when an app needs it
        log.warning("the activator serves root alone: %s", exc.message)
        return GatewayAccess(group=None, peers=frozenset(peers))
    if account is None:
        return GatewayAccess(group=None, peers=frozenset(peers))
    return GatewayAccess(group=grp.getgrnam(account.group).gr_gid,
                         peers=frozenset(peers | {pwd.getpwnam(account.user).pw_uid}))


class Activator:
    def __init__(
        self,
        *,
        path: Path,
        access: GatewayAccess,
        wake: Callable[[str, str], None],
        ready_replica: Callable[[str, str], tuple[str, int] | None],
        held: Callable[[str, str], bool],
        hold_timeout: float = HOLD_TIMEOUT,
        timeouts: Timeouts = Timeouts(),  # frozen: one shared value is safe
    ) -> None:
        self.path = path
        self._wake = wake
        self._ready_replica = ready_replica
        self._held = held
        self._hold_timeout = hold_timeout
        self._timeouts = timeouts
        self._holding = 0  # requests held or relayed now; only the server's event loop touches it
        listener = bind_socket(path, group=access.group, backlog=Limits().backlog)
        self._server = HttpServer(self, sockets=[listener], limits=Limits(), peers=access.peers)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = self._server.start_thread("activator")

    def stop(self) -> None:
        self._server.stop()
        if self._thread:
            self._thread.join(timeout=2)
        shutil.rmtree(self.path.parent, ignore_errors=True)

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        malformed = _malformed(scope)
        if malformed:
            await _answer(400, malformed)(scope, receive, send)
            return
        service, refusal = self._admit(scope)
        if refusal:
            await _answer(503, refusal)(scope, receive, send)
            return
        self._holding += 1
        try:
            replica = await self._replica_for(*service)
            if replica is None:
                await _answer(503, "no replica became ready in time; try again")(scope, receive, send)
                return
            await relay(replica, scope, receive, send, timeouts=self._timeouts)
        finally:
            self._holding -= 1

    def _admit(self, scope: dict) -> tuple[tuple[str, str], str | None]:
        """The held service a request is for, or why it is refused (and nothing woken)."""
        named = [value.decode("latin-1") for name, value in scope["headers"] if name == BACKEND_HEADER]
        parsed = parse_backend_name(named[0]) if len(named) == 1 else None
        if parsed is None:
            return ("", ""), "this request names no backend of Flotilla's; the activator serves only the gateway"
        if not self._held(*parsed):
            return parsed, f"{parsed[0]}/{parsed[1]} is not held for scale from zero; nothing was woken"
        if self._holding >= HOLDS:
            return parsed, f"{HOLDS} requests are held already; try again"
        return parsed, None

    async def _replica_for(self, app: str, service: str) -> tuple[str, int] | None:
        """Wake ``service`` of ``app`` and wait (at most the hold timeout) for a healthy replica."""
        with anyio.move_on_after(self._hold_timeout):
            await anyio.to_thread.run_sync(self._wake, app, service, abandon_on_cancel=True)
            while True:
                found = await anyio.to_thread.run_sync(self._ready_replica, app, service, abandon_on_cancel=True)
                if found:
                    return found
                await anyio.sleep(POLL_INTERVAL)
        return None


# -- the socket ----------------------------------------------------------------------------------

def bind_socket(path: Path, *, group: int | None, backlog: int) -> socket.socket:
    """A listening UNIX socket at ``path``, in a directory made anew that only the owner and ``group`` enter.

    Whatever was at the directory (a socket left by a daemon killed with -9)
    is removed first. The directory is made 0700, given to ``group``, then
    opened to it (0750), so no other user can enter it at any moment; the
    socket is bound under umask 0o177 and then opened to the group (0660).
    """
    _checked_root(path.parent.parent)
    directory = path.parent
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        directory.unlink()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if group is not None:
        for made, mode in ((directory, 0o750), (path, 0o660)):
            os.chown(made, -1, group)
            os.chmod(made, mode)
    sock.listen(backlog)
    return sock


def _checked_root(root: Path) -> None:
    """``root`` (the directory above the activator's own) exists, is a real directory of ours, and only we write it."""
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise DaemonError(f"{root} must be a directory owned by uid {os.geteuid()} that no one else may write "
                          f"(it is mode {stat.filemode(info.st_mode)}, uid {info.st_uid}); remove it and "
                          "start the daemon again")


# -- the relay -----------------------------------------------------------------------------------

class ClientGone(Exception):
    """The client closed its connection while its request was relayed."""


def _answer(status: int, text: str) -> Response:
    return Response(f"{text}\n".encode(), status_code=status, media_type="text/plain")


async def relay(target: tuple[str, int], scope: dict, receive, send, *, timeouts: Timeouts) -> None:
    """Send the request to ``target`` (body streamed), then stream its answer back through ``send``.

    Before the answer starts, a failure is an answer: 400 (a request that
    cannot be relayed as it is), 502 (the replica failed) or 504 (too slow).
    Once it started, the connection is cut instead: the client sees a
    truncated answer, never a wrong one.
    """
    upstream = _Upstream(timeouts=timeouts)
    try:
        request = h11.Request(method=scope["method"], target=_target_of(scope),
                              headers=_request_headers(scope, target))
        await upstream.open(target)
        await upstream.send_request(request, receive)
        await upstream.relay_answer(send)
    except ClientGone:
        log.debug("activator: the client left during the relay to %s:%d", *target)
    except h11.LocalProtocolError as exc:
        await _fail(upstream, scope, receive, send, 400, f"the request cannot be relayed as it is: {exc}")
    except TimeoutError:
        await _fail(upstream, scope, receive, send, 504, "the new replica did not answer in time")
    except (OSError, h11.RemoteProtocolError) as exc:
        await _fail(upstream, scope, receive, send, 502, f"the new replica did not answer: {exc}")
    finally:
        upstream.close()


async def _fail(upstream: _Upstream, scope: dict, receive, send, status: int, text: str) -> None:
    if upstream.answer_started:
        log.debug("activator: cutting a relayed answer: %s", text)
        return  # uvicorn closes a connection whose answer is not complete
    await _answer(status, text)(scope, receive, send)


class _Upstream:
    """One HTTP/1.1 exchange with a replica, framed by h11, every read and write under ``timeouts.io``."""

    def __init__(self, *, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._conn = h11.Connection(h11.CLIENT)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.answer_started = False

    async def open(self, target: tuple[str, int]) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(*target, limit=CHUNK),
                                                            self._timeouts.connect)

    async def send_request(self, request: h11.Request, receive) -> None:
        await self._write(self._conn.send(request))
        while True:
            message = await asyncio.wait_for(receive(), self._timeouts.io)
            if message["type"] == "http.disconnect":
                raise ClientGone
            if message.get("body"):
                await self._write(self._conn.send(h11.Data(data=message["body"])))
            if not message.get("more_body", False):
                break
        await self._write(self._conn.send(h11.EndOfMessage()))

    async def relay_answer(self, send) -> None:
        event = await self._next_event()
        while isinstance(event, h11.InformationalResponse):  # a 100 Continue of the replica's: not the answer
            event = await self._next_event()
        if not isinstance(event, h11.Response):
            raise h11.RemoteProtocolError(f"no answer but {type(event).__name__}")
        headers = [(name, value) for name, value in event.headers if name not in NOT_RETURNED]
        await send({"type": "http.response.start", "status": event.status_code, "headers": headers})
        self.answer_started = True
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                raise h11.RemoteProtocolError("the replica closed the connection before its answer ended")
            await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _next_event(self):
        while (event := self._conn.next_event()) is h11.NEED_DATA:
            self._conn.receive_data(await asyncio.wait_for(self._reader.read(CHUNK), self._timeouts.io))
        return event

    async def _write(self, data: bytes | None) -> None:
        if data:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self._timeouts.io)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _malformed(scope: dict) -> str | None:
    """Why a request head that h11 let through is still not valid HTTP (RFC 9110: no control
    character in a field value but HTAB), or None."""
    for name, value in scope["headers"]:
        if _CONTROL.search(value):
            return f"the value of header {name.decode('latin-1')!r} holds a control character; send valid HTTP"
    return None


def _target_of(scope: dict) -> bytes:
    """The request target as the client sent it: the raw path and the query."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope["query_string"]
    return path + b"?" + query if query else path


def _request_headers(scope: dict, target: tuple[str, int]) -> list[tuple[bytes, bytes]]:
    """The client's headers, every one and in order, without hop-by-hop ones; the body framed as it came."""
    names = {name for name, _ in scope["headers"]}
    headers = [(name, value) for name, value in scope["headers"] if name not in NOT_RELAYED]
    if b"content-length" not in names and b"transfer-encoding" in names:
        headers.append((b"transfer-encoding", b"chunked"))
    if b"host" not in names:
        headers.append((b"host", f"{target[0]}:{target[1]}".encode()))
    return [*headers, (b"connection", b"close")]
