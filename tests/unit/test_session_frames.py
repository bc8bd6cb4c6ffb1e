"""An interactive session's framing (daemon/frames.py) and the daemon's pump (daemon/attach.py), without I/O.

The pump runs against an in-memory process (``FakeProcess``) and in-memory
ASGI ``receive``/``send``: the client's frames reach the process in order, the
output comes back as frames then the exit code, and a client that goes away
still ends the session (``end``: for ``run``, the container's removal).
"""

from __future__ import annotations

import queue

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.daemon import frames
from flotilla.daemon.attach import Session, relay
from flotilla.errors import BadRequestError

KIND = st.sampled_from(sorted(frames.KINDS))
FRAMES = st.lists(st.tuples(KIND, st.binary(max_size=300)), max_size=20)


@given(FRAMES, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_frames_split_anywhere_come_back_whole_and_in_order(sent, cuts):
    stream = b"".join(frames.encode(kind, payload) for kind, payload in sent)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = frames.Decoder()
    got = [frame for a, b in zip(points, points[1:]) for frame in decoder.feed(stream[a:b])]
    assert [(f.kind, f.payload) for f in got] == sent
    assert decoder.pending == 0


def test_a_stream_that_is_not_frames_is_refused_with_a_sentence():
    with pytest.raises(BadRequestError, match="not a Flotilla session frame"):
        frames.Decoder().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadRequestError, match="not a Flotilla session frame"):
        frames.Decoder().feed(frames.HEADER.pack(frames.STDIN, frames.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        frames.encode(b"?", b"")
    with pytest.raises(ValueError):
        frames.encode(frames.STDIN, b"x" * (frames.MAX_PAYLOAD + 1))


def test_a_size_is_two_positive_whole_numbers():
    assert frames.size_of(frames.Decoder().feed(frames.resize(40, 100))[0]) == (40, 100)
    for nonsense in (None, [40], [0, 100], [40, -1], [40, True], ["40", 100], [40, 1 << 16], {"rows": 40}):
        assert frames.size_from(nonsense) is None
    with pytest.raises(BadRequestError, match="does not hold JSON"):
        frames.Frame(frames.RESIZE, b"{").json()


class FakeProcess:
    """An Attached in memory: ``output`` is what the process prints, then (``ends_at_eof``) it ends once its
    input is closed, or it waits for ever; what it is given is recorded."""

    def __init__(self, output: list[tuple[str, bytes]], *, ends_at_eof: bool) -> None:
        self.output = queue.Queue()
        for piece in output:
            self.output.put(piece)
        self.ends_at_eof = ends_at_eof
        self.given: list[object] = []
        self.closed = False

    def read(self):
        return self.output.get()

    def write(self, data: bytes) -> bool:
        self.given.append(data)
        return True

    def close_stdin(self) -> None:
        self.given.append("EOF")
        if self.ends_at_eof:
            self.output.put(None)

    def resize(self, rows: int, cols: int) -> None:
        self.given.append((rows, cols))

    def close(self) -> None:
        self.closed = True
        self.output.put(None)  # as a shut-down socket wakes its reader


def pump(process: FakeProcess, messages: list[dict]) -> tuple[list, list]:
    """Run ``relay`` with the client's ``messages``; (the daemon's frames, what ``end`` saw)."""
    sent: list[frames.Frame] = []
    ended: list[bool] = []
    decoder = frames.Decoder()

    async def main() -> None:
        incoming = list(messages)

        async def receive() -> dict:
            if incoming:
                return incoming.pop(0)
            await anyio.sleep_forever()

        async def send(message: dict) -> None:
            sent.extend(decoder.feed(message["body"]))

        session = Session(process, exit_code=lambda: 5, end=lambda: ended.append(process.closed))
        with anyio.fail_after(10):
            await relay(session, decoder=frames.Decoder(), receive=receive, send=send)

    anyio.run(main)
    return sent, ended


def body(*parts: bytes, more: bool = True) -> dict:
    return {"type": "http.request", "body": b"".join(parts), "more_body": more}


def test_the_clients_frames_reach_the_process_in_order_and_the_exit_code_comes_last():
    process = FakeProcess([("stdout", b"got "), ("stderr", b"oops")], ends_at_eof=True)
    sent, ended = pump(process, [  # a resize frame split across two reads
        body(frames.encode(frames.STDIN, b"a"), frames.resize(40, 100)[:3]),
        body(frames.resize(40, 100)[3:], frames.encode(frames.STDIN, b"b"), frames.encode(frames.STDIN_END))])
    assert process.given == [b"a", (40, 100), b"b", "EOF"]
    assert [(f.kind, f.payload) for f in sent[:2]] == [(frames.STDOUT, b"got "), (frames.STDERR, b"oops")]
    assert sent[-1].kind == frames.EXIT and sent[-1].json() == {"exit_code": 5}
    assert ended == [True]  # the streams closed, then the session ended


def test_a_client_that_goes_away_ends_the_session_and_its_container():
    process = FakeProcess([("stdout", b"$ ")], ends_at_eof=False)  # a shell waiting for a line that never comes
    sent, ended = pump(process, [body(frames.encode(frames.STDIN, b"ls")), {"type": "http.disconnect"}])
    assert ended == [True]
    assert all(f.kind != frames.EXIT for f in sent)


def test_a_body_that_ends_closes_the_processs_input():
    process = FakeProcess([], ends_at_eof=True)
    sent, ended = pump(process, [body(frames.encode(frames.STDIN, b"x"), more=False)])
    assert process.given == [b"x", "EOF"]
    assert sent[-1].json() == {"exit_code": 5}
    assert ended == [True]
