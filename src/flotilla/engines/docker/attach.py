"""A process's standard streams through Docker's hijacked attach or exec connection.

Why it exists: an interactive ``flotilla run``/``exec`` needs what the log
stream cannot give: the command's standard input, and its terminal's size.
Docker gives both only on a hijacked connection (``POST
/containers/ID/attach`` before the container starts, or ``POST
/exec/ID/start``), a raw socket carrying the input one way and the output the
other (multiplexed with an 8-byte header per piece without a terminal, raw
with one); a half-close of our side closes the process's standard input.
``Attached`` wraps that socket behind plain methods, so the daemon's pump
(daemon/attach.py) sees no Docker type.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import docker
import docker.errors
from docker.utils.socket import STDERR, next_frame_header, read, read_exactly

from flotilla.errors import EngineError

CHUNK = 1 << 16
RESIZE_TRIES = 20  # an exec's size can be set only once it runs; Docker's CLI retries the same way
RESIZE_PAUSE = 0.05


class Attached:
    """The standard streams of one container or exec process; ``resize`` sets its terminal's size."""

    def __init__(self, sock, *, tty: bool, resize: Callable[[int, int], None]) -> None:
        self._sock = sock
        self._raw: socket.socket = getattr(sock, "_sock", sock)
        self._raw.settimeout(None)  # the SDK's request timeout would end an idle shell after a minute
        self.tty = tty
        self._resize = resize

    def read(self) -> tuple[str, bytes] | None:
        """The next piece of output, as ("stdout" | "stderr", bytes); None when the process closed its output."""
        try:
            if self.tty:
                data = read(self._sock, CHUNK)
                return ("stdout", data) if data else None
            while (header := next_frame_header(self._sock)) != (-1, -1):
                stream, size = header
                if size > 0:
                    return ("stderr" if stream == STDERR else "stdout", read_exactly(self._sock, size))
        except (OSError, docker.errors.DockerException):
            return None  # closed under us (the session ended) or by Docker
        return None

    def write(self, data: bytes) -> bool:
        """Give ``data`` to the process's standard input; False when it no longer takes any."""
        try:
            self._raw.sendall(data)
        except OSError:
            return False
        return True

    def close_stdin(self) -> None:
        """The end of the input: the process reads end-of-file (its output still comes)."""
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's size (a no-op without one); EngineError when Docker refuses it."""
        if not self.tty:
            return
        try:
            self._resize(rows, cols)
        except docker.errors.DockerException as exc:
            raise EngineError(f"Docker refused a terminal size of {rows}x{cols}: {exc}") from exc

    def close(self) -> None:
        """End both directions, also waking a thread blocked in ``read``."""
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()


def attach_container(api: docker.APIClient, container_id: str, *, tty: bool) -> Attached:
    """The streams of a created, not yet started container (so no output is missed)."""
    sock = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    return Attached(sock, tty=tty, resize=lambda rows, cols: api.resize(container_id, height=rows, width=cols))


def exec_attached(api: docker.APIClient, container_id: str, command: list[str], *, tty: bool
                  ) -> tuple[str, Attached]:
    """Start ``command`` in a running container with its standard input open; (exec id, its streams)."""
    exec_id = api.exec_create(container_id, command, stdin=True, stdout=True, stderr=True, tty=tty)["Id"]
    sock = api.exec_start(exec_id, socket=True, tty=tty)
    return exec_id, Attached(sock, tty=tty, resize=lambda rows, cols: _resize_exec(api, exec_id, rows, cols))


def _resize_exec(api: docker.APIClient, exec_id: str, rows: int, cols: int) -> None:
    for attempt in range(RESIZE_TRIES):
        try:
            api.exec_resize(exec_id, height=rows, width=cols)
            return
        except docker.errors.APIError:
            if attempt == RESIZE_TRIES - 1:
                raise
            time.sleep(RESIZE_PAUSE)
