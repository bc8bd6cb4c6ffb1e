"""Talking to the daemon from the CLI (or any Python program), over its socket.

``DaemonClient.connect`` starts a daemon in the background when none answers,
so every command just works; errors the daemon sends back are rebuilt as the
same Flotilla exceptions it raised.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode

from flotilla.daemon import frames
from flotilla.daemon.paths import Home
from flotilla.errors import DaemonError, DaemonUnavailableError, error_from_dict

START_TIMEOUT = 15.0
PROGRESS_TIMEOUT = 3600.0  # seconds of silence in a streamed answer (a build step may print nothing for long)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DaemonClient:
    def __init__(self, home: Home, *, timeout: float = 120.0) -> None:
        self.home = home
        self.timeout = timeout

    @classmethod
    def connect(cls, home: Home, *, autostart: bool = True) -> DaemonClient:
        client = cls(home)
        if client.alive():
            return client
        if not autostart:
            raise DaemonUnavailableError(
                f"no flotilla daemon is running for {home.root}; start one with `flotilla daemon`"
            )
        proc = spawn_daemon(home)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if client.alive():
                return client
            if proc.poll() is not None and not client.alive():
                raise DaemonUnavailableError(
                    f"the flotilla daemon exited at start ({_last_line(home)}); see {home.log_file}"
                )
            time.sleep(0.05)
        raise DaemonUnavailableError(
            f"the flotilla daemon did not start within {START_TIMEOUT:.0f}s; see {home.log_file}"
        )

    def alive(self) -> bool:
        try:
            self.request("GET", "/v1/health", timeout=2.0)
        except DaemonUnavailableError:
            return False
        return True

    def request(self, method: str, path: str, *, body: dict | None = None, query: dict | None = None,
                timeout: float | None = None) -> dict:
        response, conn = self._open(method, path, body=body, query=query, timeout=timeout)
        try:
            data = response.read()
        finally:
            conn.close()
        payload = json.loads(data or b"{}")
        if response.status >= 400:
            raise error_from_dict(payload)
        return payload

    def stream(self, path: str, *, query: dict | None = None) -> Iterator[bytes]:
        """Lines of a streaming response (``logs``), until the daemon closes it."""
        response, conn = self._open("GET", path, query=query, timeout=None)
        try:
            if response.status >= 400:
                raise error_from_dict(json.loads(response.read() or b"{}"))
            yield from response
        finally:
            conn.close()

    def with_progress(self, method: str, path: str, *, body: dict | None = None, query: dict | None = None,
                      on_progress: Callable[[dict], None]) -> dict:
        """A request the daemon answers as progress lines (daemon/progress.py): each step to
        ``on_progress``, then the result, or the daemon's error raised as the same exception."""
        response, conn = self._open(method, path, body=body, query=query, timeout=PROGRESS_TIMEOUT)
        try:
            if response.status >= 400:
                raise error_from_dict(json.loads(response.read() or b"{}"))
            for line in response:
                message = json.loads(line)
                if "progress" in message:
                    on_progress(message["progress"])
                elif "error" in message:
                    raise error_from_dict(message["error"])
                elif "result" in message:
                    return message["result"]
        finally:
            conn.close()
        raise DaemonError("the flotilla daemon ended its answer without a result; see its log")

    def session(self, path: str, start: dict) -> Session:
        """An interactive session (daemon/attach.py): POST ``path`` with a chunked body of frames, ``start``
        first; once the daemon answered 200, frames go both ways at once. Its error raised otherwise."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._translated(sock):
            sock.settimeout(self.timeout)
            sock.connect(str(self.home.socket))
            head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {frames.CONTENT_TYPE}\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n")
            sock.sendall(head.encode() + _chunk(frames.encode_json(frames.START, start)))
            response = http.client.HTTPResponse(sock, method="POST")
            response.begin()
            if response.status >= 400:
                raise error_from_dict(json.loads(response.read() or b"{}"))
        sock.settimeout(None)  # a shell may sit idle for hours
        return Session(sock, response)

    def _open(self, method, path, *, body=None, query=None, timeout=None):
        url = path + (f"?{urlencode(query)}" if query else "")
        conn = _UnixConnection(str(self.home.socket), timeout or self.timeout)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        with self._translated(conn):
            conn.request(method, url, body=data, headers=headers)
            return conn.getresponse(), conn

    @contextlib.contextmanager
    def _translated(self, connection) -> Iterator[None]:
        """Connection failures as Flotilla errors; ``connection`` closed on any failure."""
        try:
            yield
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            connection.close()
            raise DaemonUnavailableError(f"no flotilla daemon answers on {self.home.socket}") from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise DaemonError(f"lost the connection to the flotilla daemon: {exc}") from exc
        except BaseException:
            connection.close()
            raise


class Session:
    """The client's end of an interactive session: ``send`` frames (from any thread), read the daemon's."""

    def __init__(self, sock: socket.socket, response: http.client.HTTPResponse) -> None:
        self._sock = sock
        self._response = response
        self._lock = threading.Lock()
        self._decoder = frames.Decoder()

    def send(self, frame: bytes) -> bool:
        """One frame (frames.encode); False when the session is over (the daemon no longer reads)."""
        try:
            with self._lock:
                self._sock.sendall(_chunk(frame))
        except OSError:
            return False
        return True

    def received(self) -> Iterator[frames.Frame]:
        """The daemon's frames as they come, until it ends its answer."""
        try:
            while data := self._response.read1(1 << 16):
                yield from self._decoder.feed(data)
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"lost the connection to the flotilla daemon: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked request body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _last_line(home: Home) -> str:
    try:
        lines = home.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def app_path(app: str, *rest: str) -> str:
    return "/".join(["/v1/apps", quote(app, safe=""), *(quote(r, safe="") for r in rest)])


def spawn_daemon(home: Home) -> subprocess.Popen:
    """Start ``flotilla daemon`` detached, logging to the home's daemon.log."""
    home.ensure()
    with open(home.log_file, "ab") as log_file:
        proc = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", "flotilla", "--home", str(home.root), "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            env={**os.environ, "FLOTILLA_HOME": str(home.root)},
        )
    return proc
