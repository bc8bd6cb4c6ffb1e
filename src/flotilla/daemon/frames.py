"""The framing of an interactive ``flotilla run -i`` / ``flotilla exec -i`` session (pure, no I/O).

Why it exists: an interactive command needs bytes both ways at once (the
terminal's keys in, the command's output out) plus a few control messages
(the window's size, the end of input, the exit code). Both directions travel
as the bodies of one HTTP/1.1 request and its response, each chunked and sent
while the other still flows (daemon/attach.py says why that transport). A
body is a sequence of frames: one byte for the kind, four for the payload's
length (big-endian), then the payload, so a frame split anywhere by the
network is put back together by ``Decoder``. The CLI and the daemon both
import this module; it needs nothing but the standard library.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from flotilla.errors import BadRequestError

CONTENT_TYPE = "application/vnd.flotilla.frames"  # of both bodies; it marks a run or exec request as a session
HEADER = struct.Struct(">cI")
MAX_PAYLOAD = 1 << 20  # a bigger frame is refused: no side needs one (stdin and output go in 64 KiB pieces)

# client -> daemon
START = b"s"  # JSON: what to run ({"service"|"replica", "command", "tty", "size": [rows, cols]}); the first frame
STDIN = b"i"  # bytes for the command's standard input
STDIN_END = b"e"  # no more input: the command's standard input is closed (it reads its end)
RESIZE = b"r"  # JSON [rows, cols]: the terminal's new size
# daemon -> client
STDOUT = b"o"
STDERR = b"E"  # only without a terminal (with one, both streams are the terminal's)
EXIT = b"x"  # JSON {"exit_code": N}: the last frame
ERROR = b"!"  # JSON: a Flotilla error (its to_dict()), the last frame

KINDS = frozenset({START, STDIN, STDIN_END, RESIZE, STDOUT, STDERR, EXIT, ERROR})


@dataclass(frozen=True)
class Frame:
    kind: bytes
    payload: bytes = b""

    def json(self):
        try:
            return json.loads(self.payload or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"a {self.kind.decode()!r} frame does not hold JSON: {exc}") from exc


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame's bytes."""
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return HEADER.pack(kind, len(payload)) + payload


def encode_json(kind: bytes, value) -> bytes:
    return encode(kind, json.dumps(value).encode())


def resize(rows: int, cols: int) -> bytes:
    return encode_json(RESIZE, [rows, cols])


def size_of(frame: Frame) -> tuple[int, int] | None:
    """A RESIZE frame's (rows, cols), or None when it holds no sensible size."""
    return size_from(frame.json())


def size_from(value) -> tuple[int, int] | None:
    """``[rows, cols]`` (as JSON gives it) as a size, or None when it is not a sensible one."""
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                            and 0 < v < 1 << 16 for v in value)):
        return value[0], value[1]
    return None


class Decoder:
    """Frames back out of a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes (in order); the rest waits for the next ``feed``.

        BadRequestError for an unknown kind or a payload over MAX_PAYLOAD: the
        stream is not ours, or is corrupt, and cannot be read on.
        """
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buffer)
            if kind not in KINDS or size > MAX_PAYLOAD:
                raise BadRequestError(f"not a Flotilla session frame (kind {kind!r}, {size} bytes); "
                                      "send the frames daemon/frames.py describes")
            if len(self._buffer) < HEADER.size + size:
                break
            frames.append(Frame(kind, bytes(self._buffer[HEADER.size:HEADER.size + size])))
            del self._buffer[:HEADER.size + size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)
