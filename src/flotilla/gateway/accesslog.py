"""The gateway's access log: one JSON object a line, kept to a few files of bounded size, read back by app.

HAProxy writes one line per request (``log_format``) to its standard output.
A line holds what happened, never what was said: the method, the path
without its query string, the status, sizes, timings, the backend and
server, the client's address and the request id. No other header value
(Authorization, Cookie...) and no query string is ever logged, so tokens and
passwords in them never reach the disk. Every string a client chooses goes
through HAProxy's ``json`` converter, so it cannot break the line.

Why a pipe and not a file: HAProxy makes its log descriptor non-blocking
with ``fcntl(F_SETFL)``, which clears O_APPEND, so a file it writes cannot be
truncated (its next line would land at the old offset, after a hole) and it
cannot reopen one either. So its standard output is a named pipe,
``access.fifo``, that HAProxy holds open for reading and writing: the pipe
always has a reader, so HAProxy never gets EPIPE, and when nobody drains it
HAProxy drops lines rather than wait. The daemon drains it (``AccessLog.run``,
one of its loops) into ``access.log``, which it owns and rotates by size, in
batches: once the pipe is empty it lets lines gather for ``PUMP_INTERVAL``
(at 50,000 requests/s that is 1,000 lines, a third of what the pipe holds),
so its cost is per batch, not per line, and it only tells log lines from
HAProxy's notices, never parses them. (Parsing each line, and reading as
soon as one came, cost the daemon 4 µs a request, and at 48,000 requests/s
it fell behind: HAProxy dropped 30% of the lines, counted in ``show info``'s
``DroppedLogs``; drained in batches, 0.02%.) Over ``MAX_BYTES`` the file
becomes ``access.log.1`` (older ones shift up to ``KEEP``). While the
daemon is down the pipe holds ``PIPE_SIZE`` bytes (a few thousand requests);
beyond that, lines are lost, requests never are. Each line is at most
``LINE_LIMIT`` bytes, so HAProxy's threads write each in one atomic piece.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from flotilla.gateway.model import parse_backend_name

log = logging.getLogger(__name__)
MAX_BYTES = 10 * 1024 * 1024
KEEP = 3  # rotated files: access.log.1 (newest) ... access.log.3
PIPE_SIZE = 1024 * 1024  # bytes the pipe holds while nobody drains it
PUMP_INTERVAL = 0.02  # seconds the daemon lets lines gather once it emptied the pipe (far less than it holds)
LINE_LIMIT = 4096  # PIPE_BUF: a line HAProxy writes at once is never mixed with another
_READ_SIZE = PIPE_SIZE  # the whole pipe in one read
Entry = dict  # one parsed line, with "app" and "service" added (None for no Flotilla backend)


def log_format(*, path_var: str, request_id_var: str) -> str:
    """HAProxy's log-format for a line, the path and request id read from these variables.

    No spaces (HAProxy would split the directive there). Timings are
    milliseconds (-1: not reached); a status of -1 means the client left
    first. The path (ASCII: HAProxy refuses other bytes in a request line)
    is cut at 512 bytes and the request id at 128, so a line, escaped (at
    most 3 characters a byte), stays well within ``LINE_LIMIT``.
    """
    return (
        '{"time":%Ts.%ms,"client":"%ci","frontend":"%f","backend":"%b","server":"%s",'
        f'"method":"%HM","path":"%[var({path_var}),bytes(0,512),json(utf8s)]","status":%ST,'
        '"bytes_in":%U,"bytes_out":%B,'
        '"ms":{"request":%TR,"queue":%Tw,"connect":%Tc,"response":%Tr,"total":%Ta},'
        '"termination":"%ts","retries":%rc,'
        f'"request_id":"%[var({request_id_var}),bytes(0,128),json(utf8s)]"}}'
    )


def parse_line(line: bytes) -> Entry | None:
    """The entry of one access log line; None for anything else HAProxy writes there (notices)."""
    if not line.startswith(b"{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    app, service = parse_backend_name(str(entry.get("backend", ""))) or (None, None)
    return {**entry, "app": app, "service": service}


def _is_entry(line: bytes) -> bool:
    """A line HAProxy's ``log_format`` made (one JSON object), told without parsing it: the drain's filter.

    Parsing every line cost the daemon more CPU per request than HAProxy's
    TLS did; readers parse what they read anyway (``parse_line``).
    """
    return line.startswith(b"{") and line.endswith(b"}")


def open_pipe(path: Path) -> int:
    """HAProxy's end of the access pipe (made if missing): read-write, so it always has a reader."""
    if path.exists() and not stat.S_ISFIFO(path.stat().st_mode):
        path.unlink()
    if not path.exists():
        os.mkfifo(path, 0o600)
    fd = os.open(path, os.O_RDWR)
    with contextlib.suppress(OSError):  # a smaller pipe only holds fewer lines
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return fd


class AccessLog:
    """The access log: drained from HAProxy's pipe into a file rotated by size, and read back by app."""

    def __init__(self, path: Path, *, pipe: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self._pipe = pipe
        self._max_bytes = max_bytes
        self._keep = keep
        self._fd: int | None = None
        self._pending = b""

    def rotated(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    # -- writing: the daemon's loop ----------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Drain the pipe into the file until ``stop`` is set (the daemon's ``gateway-log`` loop)."""
        while not stop.is_set():
            try:
                drained = self.pump()
            except OSError as exc:
                log.warning("gateway access log: %s", exc)
                drained = 0
            if drained < _READ_SIZE:  # the pipe is empty now: let lines gather, read them in one go
                stop.wait(PUMP_INTERVAL)

    def pump(self) -> int:
        """Append the complete lines waiting in the pipe (only JSON ones) and rotate; the bytes read."""
        data = self._read_pipe()
        *lines, self._pending = (self._pending + data).split(b"\n")
        kept = [line + b"\n" for line in lines if _is_entry(line)]
        if kept:
            with open(self.path, "ab") as out:
                out.write(b"".join(kept))
            self.rotate()
        return len(data)

    def rotate(self) -> bool:
        """Over ``max_bytes``: the file becomes ``.1`` and older copies shift up; True when it did."""
        if self.size() <= self._max_bytes:
            return False
        for number in range(self._keep - 1, 0, -1):
            if self.rotated(number).exists():
                self.rotated(number).replace(self.rotated(number + 1))
        self.path.replace(self.rotated(1))
        self.path.touch()  # a follower tells a rotation by the new file's inode
        return True

    def _read_pipe(self) -> bytes:
        fd = self._pipe_fd()
        if fd is None:
            return b""
        try:
            return os.read(fd, _READ_SIZE)  # b"" while no gateway holds the pipe
        except BlockingIOError:  # held, and empty
            return b""

    def _pipe_fd(self) -> int | None:
        """Our read end, opened once, and again if the pipe was made anew."""
        try:
            inode = self._pipe.stat().st_ino
        except FileNotFoundError:
            return None
        if self._fd is not None and os.fstat(self._fd).st_ino != inode:
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            self._fd = os.open(self._pipe, os.O_RDONLY | os.O_NONBLOCK)
        return self._fd

    # -- reading: the API --------------------------------------------------------

    def tail(self, count: int | None, *, keep: Callable[[Entry], bool], end: int | None = None) -> list[Entry]:
        """The last ``count`` entries (all with None) that ``keep`` accepts, oldest first.

        The current file is read up to ``end`` (where a Follower starts, so
        that nothing is shown twice), then older copies while more are wanted.
        """
        found: list[Entry] = []
        for number, path in enumerate([self.path, *map(self.rotated, range(1, self._keep + 1))]):
            found = [e for e in _entries(_read(path, end=end if number == 0 else None)) if keep(e)] + found
            if count is not None and len(found) >= count:
                return found[len(found) - count:]
        return found

    def follower(self) -> Follower:
        return Follower(self)


class Follower:
    """New entries of the access log as they are written, across a rotation."""

    def __init__(self, access_log: AccessLog) -> None:
        self._log = access_log
        self._inode = _inode(access_log.path)
        self.offset = access_log.size()  # where reading starts: the end, now
        self._pending = b""

    def read(self) -> list[Entry]:
        """The complete lines written since the last read (after a rotation: the old file's rest first)."""
        data, inode = b"", _inode(self._log.path)
        if inode != self._inode:  # rotated: our file is .1 now (or there was none when we began)
            data = _read(self._log.rotated(1), start=self.offset) if self._inode is not None else b""
            self._inode, self.offset = inode, 0
        current = _read(self._log.path, start=self.offset)
        self.offset += len(current)
        *lines, self._pending = (self._pending + data + current).split(b"\n")
        return [e for e in map(parse_line, lines) if e is not None]


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read(path: Path, *, start: int = 0, end: int | None = None) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(start)
            return file.read() if end is None else file.read(max(0, end - start))
    except FileNotFoundError:
        return b""


def _entries(data: bytes) -> list[Entry]:
    return [e for e in map(parse_line, data.split(b"\n")) if e is not None]
