"""The daemon's side of an interactive session: the client's frames to a process's input, its output back.

Why it exists: ``flotilla run -i`` and ``flotilla exec -i`` forward standard
input, which the NDJSON stream of daemon/tasks.py (one way, for scripts)
cannot carry. The transport is one HTTP/1.1 request whose chunked body is the
client's frames (daemon/frames.py: input, its end, window sizes) and whose
chunked response, started at once, is the daemon's (output, then the exit
code). uvicorn's h11 protocol delivers a request body as it arrives while the
handler answers, so both flow at the same time, with no protocol switch: the
API's gates (the bearer token, the head limits) hold as for any request, and
the CLI needs nothing but a socket. An HTTP ``Upgrade`` would have needed a
hijack of uvicorn's protocol outside ASGI.

The pump: one task reads the request (``receive``) and hands each frame to
the process (``Attached``, engines/docker/attach.py) in a worker thread; the
other reads the process's output in a worker thread and sends it as frames.
When the output ends the exit code is sent and the session ends; when the
client goes away first (``http.disconnect``: Ctrl-C, a killed CLI, a closed
terminal) the streams are closed and ``end`` runs all the same (for ``run``:
the container is removed), shielded from cancellation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from flotilla.daemon import frames
from flotilla.engines.docker.attach import Attached
from flotilla.errors import FlotillaError

log = logging.getLogger(__name__)
_OUTPUT_KINDS = {"stdout": frames.STDOUT, "stderr": frames.STDERR}


class Session:
    """One attached process: its streams, how to learn its exit code, what to do at the end."""

    def __init__(self, attached: Attached, *, exit_code: Callable[[], int | None],
                 end: Callable[[], None] = lambda: None) -> None:
        self.attached = attached
        self.exit_code = exit_code
        self.end = end


async def relay(session: Session, *, decoder: frames.Decoder, receive, send) -> None:
    """Pump a session to its end (``send`` has sent the response's start); then close it, whatever happened."""
    ended = False
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_input, _Thread(session.attached), decoder, receive, group.cancel_scope)
            await _output(_Thread(session.attached), send)
            ended = True  # not reached when the client went first: _input cancelled the group
            group.cancel_scope.cancel()
        if ended:
            code = await anyio.to_thread.run_sync(session.exit_code)
            await _send(send, frames.encode_json(frames.EXIT, {"exit_code": code}), more=False)
    except FlotillaError as exc:
        log.info("interactive session failed: %s", exc)
        await _send(send, frames.encode_json(frames.ERROR, exc.to_dict()), more=False)
    finally:
        with anyio.CancelScope(shield=True):
            session.attached.close()
            await anyio.to_thread.run_sync(session.end)


class _Thread:
    """Blocking calls on a session's streams, one at a time and in order, in a worker thread of their own.

    Not the default thread pool the API's handlers share: each open session
    blocks a thread reading its output (and maybe one writing input a process
    does not read), so 40 idle shells would otherwise starve every handler.
    A call cancelled (the session ends) is abandoned; closing the streams
    wakes its thread.
    """

    def __init__(self, attached: Attached) -> None:
        self.attached = attached
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, name: str, *args):
        return await anyio.to_thread.run_sync(getattr(self.attached, name), *args, abandon_on_cancel=True,
                                              limiter=self._limiter)


async def _output(attached: _Thread, send) -> None:
    while (piece := await attached.call("read")) is not None:
        stream, data = piece
        await _send(send, frames.encode(_OUTPUT_KINDS[stream], data), more=True)


async def _input(attached: _Thread, decoder: frames.Decoder, receive, scope: anyio.CancelScope) -> None:
    """The client's frames to the process, until the client goes (then the whole session ends)."""
    ended = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            log.info("interactive client went away; ending its session")
            scope.cancel()
            return
        try:
            received = decoder.feed(message.get("body", b""))
        except FlotillaError as exc:
            log.info("ending an interactive session: %s", exc)
            scope.cancel()
            return
        for frame in received:
            ended = await _apply(attached, frame) or ended
        if not message.get("more_body", False) and not ended:  # a client that ends its body ends its input
            ended = True
            await attached.call("close_stdin")


async def _apply(attached: _Thread, frame: frames.Frame) -> bool:
    """One client frame; True when it ended the input."""
    if frame.kind == frames.STDIN:
        await attached.call("write", frame.payload)
    elif frame.kind == frames.STDIN_END:
        await attached.call("close_stdin")
        return True
    elif frame.kind == frames.RESIZE and (size := frames.size_of(frame)):
        try:
            await attached.call("resize", *size)
        except FlotillaError as exc:
            log.info("could not resize a session's terminal: %s", exc)
    return False


async def _send(send, data: bytes, *, more: bool) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
