"""The daemon's HTTP servers: uvicorn, with the limits a control plane needs.

Why it exists: the API, the activator (and the dashboard to come) used to be
``http.server`` code, where every connection held a thread, so 300 idle
connections held 300 threads. On uvicorn an idle connection is a socket and a
few KiB on one event loop; handlers that call blocking code run in a bounded
thread pool of their own (see api.py).

uvicorn bounds the request head's size (h11) and the idle time between
keep-alive requests, but not two things a client controls: how long it takes
to send a request head (a connection that never sends a byte, or sends its
headers a byte at a time, is kept for ever), and how many connections it keeps
open (``limit_concurrency`` answers 503 to a *request*; an idle connection
sends none). ``GuardedH11Protocol`` adds both: a deadline for every request
head, and caps on open connections and on connections still waiting for a
head, where the oldest waiting one makes way for a new one. So a flood of idle
connections costs no thread and cannot keep out a client that sends its
request.

Sockets are bound by the caller and handed over (``HttpServer(sockets=…)``):
a UNIX socket must be created under a umask, in a directory made for it. A
server on a UNIX socket may also name the only users it serves
(``peers``): each connection's peer is read from the kernel (SO_PEERCRED), and
any other is closed before a byte is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

import anyio
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
AsgiApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Limits:
    """What one listener allows a client; the defaults suit a local control plane."""

    connections: int = 512  # open at most; a connection beyond is closed as soon as it is accepted
    waiting: int = 256  # connected but not yet sent a request head; the oldest is closed for a new one
    head_timeout: float = 10.0  # seconds to send a whole request head, from connecting or the last response
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)
    head_bytes: int = 16 * KIB  # request line and headers (h11's max incomplete event size)
    backlog: int = 128  # connections the kernel queues before the event loop accepts them
    graceful: int = 5  # seconds requests in progress (a followed log) get at shutdown
    linger: float = 2.0  # seconds a closing connection still reads (and drops) what the client sends


HEAD_REFUSED = "the request is not valid HTTP/1.1, or its request line and headers are over {size} KiB"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head and caps on connections.

    One subclass per server (``protocol_for``) carries its limits and its
    connections waiting for a head, oldest first. Everything here runs on
    the server's event loop, so the dict needs no lock.
    """

    limits: Limits
    waiting: dict[GuardedH11Protocol, asyncio.TimerHandle]
    peers: frozenset[int] | None  # the uids served (UNIX sockets); None: anyone who can connect

    transport: LingeringClose
    head_refused = False  # send_400_response answered: the client may still be sending that head

    def connection_made(self, transport) -> None:
        super().connection_made(LingeringClose(transport, linger=self.limits.linger, loop=self.loop,
                                               still_sending=self._still_sending))
        if len(self.connections) > self.limits.connections:
            log.debug("closing a new connection: %d are open already", self.limits.connections)
            self.transport.close_now()
            return
        if self.peers is not None and (uid := peer_uid(transport.get_extra_info("socket"))) not in self.peers:
            log.debug("closing a connection from uid %s: this server serves only uids %s", uid, sorted(self.peers))
            self.transport.close_now()
            return
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:
            return  # the answer is out; what the client still sends is dropped
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A malformed or oversized request head: a JSON sentence instead of uvicorn's plain text."""
        log.debug("refusing a request head: %s", msg)
        body = json.dumps({"error": "bad_request",
                           "message": HEAD_REFUSED.format(size=self.limits.head_bytes // KIB)}).encode()
        head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(body))
        self.head_refused = True
        self.transport.write(head + body)  # written whole and closed: h11's state no longer matters
        self.transport.close()

    def _still_sending(self) -> bool:
        """Whether the client may still be sending: a refused head, or a body not all received."""
        return self.head_refused or (self.cycle is not None and self.cycle.more_body)

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _watch_head(self) -> None:
        """Start the head deadline when the connection waits for a request; stop it when one came."""
        if not self._awaiting_head() or self.transport.is_closing():
            self._stop_waiting()
        elif self not in self.waiting:
            if len(self.waiting) >= self.limits.waiting:
                oldest = next(iter(self.waiting))
                log.debug("closing the oldest of %d connections that sent no request", len(self.waiting))
                oldest._give_up()
            self.waiting[self] = self.loop.call_later(self.limits.head_timeout, self._give_up)

    def _stop_waiting(self) -> None:
        timer = self.waiting.pop(self, None)
        if timer is not None:
            timer.cancel()

    def _give_up(self) -> None:
        self._stop_waiting()
        self.transport.close_now()  # no request, so no answer to let the client read


class LingeringClose:
    """A connection's transport whose ``close`` first lets the client read the answer.

    Closing a socket while the client is still sending (a refused body, an
    oversized head) makes the kernel reset the connection, which can destroy
    the answer before the client reads it: the CLI would say "connection
    reset" instead of "over 1 MiB". So while the client ``still_sending``,
    ``close`` ends the answer (FIN), reads and drops what still comes, and
    closes when the client does, or after ``linger`` seconds (as nginx's
    lingering close does). Everything else is the transport's own.
    """

    def __init__(self, transport: asyncio.Transport, *, linger: float, loop: asyncio.AbstractEventLoop,
                 still_sending: Callable[[], bool]) -> None:
        self._transport = transport
        self._linger = linger
        self._loop = loop
        self._still_sending = still_sending
        self.lingering = False

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not self._still_sending():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # after what is still buffered: the client reads the whole answer
        self._transport.resume_reading()  # a paused body would fill the window and stall the client
        self._loop.call_later(self._linger, self._transport.close)

    def close_now(self) -> None:
        self._transport.close()


class HeadLimit:
    """Refuses a request whose head is over ``limit`` bytes, with 431 and a JSON sentence, before ``app`` sees it.

    h11 refuses a head over the limit only while it is incomplete: one that
    arrives whole in one read (up to 256 KiB) passes. This counts what h11
    parsed, so the limit holds however the head arrived.
    """

    def __init__(self, app: AsgiApp, *, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http" and _head_size(scope) > self._limit:
            message = f"the request line and headers are over {_size(self._limit)}; send less"
            body = json.dumps({"error": "bad_request", "message": message}).encode()
            await send({"type": "http.response.start", "status": 431, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


def _head_size(scope: dict) -> int:
    target = len(scope.get("raw_path") or b"") + len(scope["query_string"]) + len(scope["method"])
    return target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def protocol_for(limits: Limits, peers: frozenset[int] | None = None) -> type[GuardedH11Protocol]:
    return type("ServerH11Protocol", (GuardedH11Protocol,), {"limits": limits, "waiting": {}, "peers": peers})


def peer_uid(sock) -> int | None:
    """The uid of the process at the other end of a UNIX socket, as the kernel saw it connect."""
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    except (OSError, AttributeError):
        return None
    return uid


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the daemon's own stop its loops first (server.py)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """One uvicorn server for an ASGI app on sockets bound beforehand, with ``limits``;
    ``peers``: the only uids it serves (UNIX sockets only)."""

    def __init__(self, app: AsgiApp, *, sockets: list[socket.socket], limits: Limits,
                 peers: frozenset[int] | None = None) -> None:
        config = uvicorn.Config(
            HeadLimit(app, limit=limits.head_bytes),
            http=protocol_for(limits, peers),
            ws="none",
            loop="asyncio",
            lifespan="off",
            log_config=None,  # the daemon's logging stays as it is
            log_level=logging.ERROR,  # not a warning per malformed request: a client could fill the log
            access_log=False,
            proxy_headers=False,  # no client may claim another address with X-Forwarded-For
            server_header=False,
            timeout_keep_alive=limits.keep_alive,
            h11_max_incomplete_event_size=limits.head_bytes,
            backlog=limits.backlog,
            timeout_graceful_shutdown=limits.graceful,
        )
        self._server = _Server(config)
        self.sockets = sockets

    async def serve(self) -> None:
        await self._server.serve(sockets=self.sockets)

    def stop(self) -> None:
        """Ask the server to stop (from any thread, or a signal handler); ``serve`` then returns."""
        self._server.should_exit = True

    def start_thread(self, name: str) -> threading.Thread:
        """Serve on an event loop of its own, in a daemon thread."""
        thread = threading.Thread(target=asyncio.run, args=(self.serve(),), name=name, daemon=True)
        thread.start()
        return thread


def serve_all(servers: list[HttpServer]) -> None:
    """Serve every server on one event loop in this thread, until each is stopped."""

    async def together() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(together())


class BodyRefused(Exception):
    """A request body over its limit (413) or too slow to arrive (408); ``message`` says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


async def read_body(headers: Mapping[str, str], receive, *, limit: int, timeout: float) -> bytes:
    """The whole request body, refused before it is read when it says it is over ``limit`` bytes.

    ``headers`` are the request's, lower-cased. The declared Content-Length is
    checked first; the chunks are counted too (a chunked body declares
    nothing), and all of them must arrive within ``timeout`` seconds.
    """
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"the request body is {int(declared)} bytes; at most {_size(limit)} is accepted")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"the request body is over {_size(limit)}; send less")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyRefused(408, f"the request body did not arrive within {timeout:g} s "
                               f"({size} bytes came); send it at once") from None


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit // KIB} KiB"
