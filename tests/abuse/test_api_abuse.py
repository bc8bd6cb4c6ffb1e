"""The daemon's API against clients that misbehave: idle, slow, malformed and oversized.

A real daemon (``flotilla daemon --api-listen 127.0.0.1:PORT``) in a home of
its own, and raw sockets on loopback. Its threads, descriptors and memory are
read from /proc/PID. The daemon serves no app, so it never needs Docker: it is
pointed at a socket that does not exist (Docker is reached lazily, and only
for apps), and the tests run where Docker does not.

The figures (threads and descriptors with 300 idle connections, the time to
cut off a slow body) are printed: ``pytest -s tests/abuse`` shows them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flotilla.daemon.api import BODY_TIMEOUT, LIMITS
from flotilla.daemon.client import DaemonClient
from flotilla.daemon.paths import Home
from flotilla.errors import BadRequestError
from tests.support.ports import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
TOKEN = "abuse-suite-token"
MIB = 1024 * 1024
# Descriptors the daemon opens and drops by itself meanwhile: its Docker watcher retries every second
# against the missing Docker socket, and each try leaves a socket until it is collected.
NOISE = 16


@dataclass
class Daemon:
    pid: int
    port: int
    home: Path

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def log(self) -> str:
        return (self.home / "daemon.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("abuse-home")
    port = free_port()
    env = {**os.environ, "FLOTILLA_HOME": str(home), "FLOTILLA_API_TOKEN": TOKEN,
           "PYTHONPATH": str(REPO / "src"), "DOCKER_HOST": f"unix://{home}/no-docker.sock"}
    with open(home / "daemon.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flotilla", "--home", str(home), "daemon", "--api-listen", f"127.0.0.1:{port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
    running = Daemon(pid=proc.pid, port=port, home=home)
    try:
        _wait_until_it_answers(running, proc)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_until_it_answers(daemon: Daemon, proc: subprocess.Popen) -> None:
    def answers() -> bool:
        assert proc.poll() is None, f"the daemon exited at start:\n{daemon.log()}"
        try:
            return ask(daemon.port, "GET", "/v1/health", token=TOKEN).status == 200
        except OSError:
            return False

    wait_for(answers, timeout=20, interval=0.1, what="the daemon's TCP listener to answer")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from connecting to the end of the answer (the daemon closing, or its Content-Length)

    def json(self) -> dict:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)


def converse(port: int, parts, *, pause: float = 0.0, timeout: float = 30.0) -> tuple[bytes, float]:
    """Send ``parts`` (``pause`` s apart) from another thread while reading what comes back, until the daemon
    closes or has sent its answer's Content-Length; what came back, and the seconds since connecting.

    The sender stops at the first error: the daemon may refuse and close
    while the request is still coming.
    """
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        threading.Thread(target=_send_slowly, args=(sock, parts, pause), daemon=True).start()
        raw = _read_answer(sock)
    finally:
        sock.close()
    return raw, time.monotonic() - started


def exchange(port: int, head: bytes, body_chunks=(), *, pause: float = 0.0, timeout: float = 30.0) -> Answer:
    """Send ``head``, then the body chunks, and read the answer."""
    raw, seconds = converse(port, [head, *body_chunks], pause=pause, timeout=timeout)
    return _parse(raw, seconds)


def _send_slowly(sock: socket.socket, chunks, pause: float) -> None:
    try:
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(pause)
    except OSError:
        pass


def _read_answer(sock: socket.socket) -> bytes:
    raw = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return raw
        if not data:
            return raw
        raw += data
        head, sep, body = raw.partition(b"\r\n\r\n")
        length = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if sep and length and len(body) >= int(length[0]):
            return raw


def _parse(raw: bytes, seconds: float) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), f"no HTTP answer: {raw[:200]!r}"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return Answer(status=int(lines[0].split()[1]), headers=headers, body=body, seconds=seconds)


def request_head(method: str, path: str, *, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: daemon\r\n{auth}{extra}\r\n".encode()


def ask(port: int, method: str, path: str, *, token: str | None = None, body: bytes = b"") -> Answer:
    head = request_head(method, path, token=token, extra=f"Content-Length: {len(body)}\r\n" if body else "")
    return exchange(port, head + body, timeout=10)


def assert_clear_refusal(answer: Answer, status: int | set[int], says: str, *, what: str = "") -> None:
    statuses = status if isinstance(status, set) else {status}
    assert answer.status in statuses and answer.body, (what, answer.status, answer.headers, answer.body)
    body = answer.json()
    assert says in body["message"], (what, body)
    assert b"Traceback" not in answer.body and b"File \"" not in answer.body


# -- idle and slow clients --------------------------------------------------------------------


def test_300_idle_connections_hold_no_thread_and_the_daemon_still_answers(daemon):
    ask(daemon.port, "GET", "/v1/apps", token=TOKEN)  # a worker thread exists before the count
    threads, descriptors = daemon.threads(), daemon.descriptors()
    opened = time.monotonic()
    idle = Idle([socket.create_connection(("127.0.0.1", daemon.port), timeout=5) for _ in range(300)])
    try:
        over_the_cap = 300 - LIMITS.waiting
        wait_for(lambda: idle.closed() >= over_the_cap, timeout=5, what="the connections over the cap to close")
        wait_for(lambda: daemon.descriptors() >= descriptors + LIMITS.waiting, timeout=5,
                 what="the daemon to accept the others")
        held_threads, held_descriptors = daemon.threads(), daemon.descriptors()
        answer = ask(daemon.port, "GET", "/v1/apps", token=TOKEN)
        closed_at_once = idle.closed()
        wait_for(lambda: idle.closed() == 300, timeout=LIMITS.head_timeout + 5,
                 what="the daemon to close the connections that sent no request")
        all_closed_after = time.monotonic() - opened
    finally:
        idle.close()
    after_threads, after_descriptors = daemon.threads(), daemon.descriptors()
    print(f"\n300 idle connections: threads {threads} -> {held_threads} -> {after_threads}, "
          f"descriptors {descriptors} -> {held_descriptors} -> {after_descriptors}; "
          f"{closed_at_once} closed at once (over the cap of {LIMITS.waiting} waiting), all closed after "
          f"{all_closed_after:.1f} s; an authenticated request meanwhile: {answer.seconds * 1000:.1f} ms")
    assert held_threads <= threads + 1, "an idle connection costs a thread"
    assert held_descriptors <= descriptors + LIMITS.waiting + NOISE
    assert answer.status == 200 and answer.seconds < 2
    assert all_closed_after < LIMITS.head_timeout + 3
    assert after_descriptors <= descriptors + NOISE


class Idle:
    """Connections that send nothing; ``closed`` counts those the daemon has closed (for good)."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets
        self._closed: set[int] = set()
        for sock in sockets:
            sock.setblocking(False)

    def closed(self) -> int:
        self._closed.update(i for i, sock in enumerate(self.sockets) if i not in self._closed and _ended(sock))
        return len(self._closed)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _ended(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_slow_clients_are_cut_off_in_bounded_time(daemon):
    head = request_head("POST", "/v1/apps", token=TOKEN, extra="Content-Length: 1000000\r\n")
    trickles = {
        "body": lambda: exchange(daemon.port, head, [b"x"] * 60, pause=1.0),
        "head": lambda: _trickled_head(daemon.port),
        "unauthenticated body": lambda: exchange(
            daemon.port, request_head("POST", "/v1/apps", extra="Content-Length: 1000000\r\n"), [b"x"] * 60,
            pause=1.0),
    }
    answers: dict[str, Answer | None] = {}
    threads = [threading.Thread(target=lambda k=k, f=f: answers.__setitem__(k, f())) for k, f in trickles.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    print(f"\nslow body (1 byte/s of 1,000,000) refused after {answers['body'].seconds:.1f} s; "
          f"slow head (a byte every 0.5 s) closed after {answers['head'].seconds:.1f} s; "
          f"unauthenticated slow body refused after {answers['unauthenticated body'].seconds * 1000:.0f} ms")
    assert_clear_refusal(answers["body"], 408, f"did not arrive within {BODY_TIMEOUT:g} s")
    assert answers["body"].seconds < BODY_TIMEOUT + 3
    assert answers["head"].status == 0 and answers["head"].seconds < LIMITS.head_timeout + 3
    assert answers["unauthenticated body"].status == 401 and answers["unauthenticated body"].seconds < 2


def _trickled_head(port: int) -> Answer:
    """A request head sent a byte every 0.5 s; the daemon closes without an answer (status 0)."""
    head = b"GET /v1/apps HTTP/1.1\r\nX-Slow: " + b"a" * 200
    raw, seconds = converse(port, [bytes([b]) for b in head], pause=0.5, timeout=60)
    assert raw == b"", raw
    return Answer(status=0, headers={}, body=b"", seconds=seconds)


# -- malformed and oversized requests ---------------------------------------------------------


def _post(port: int, body: bytes) -> Answer:
    return ask(port, "POST", "/v1/apps", token=TOKEN, body=body)


def _oversized_body(port: int) -> Answer:
    head = request_head("POST", "/v1/apps", token=TOKEN, extra=f"Content-Length: {10 * MIB}\r\n")
    return exchange(port, head, [b"x" * MIB] * 10)


def _oversized_chunked_body(port: int) -> Answer:
    head = request_head("POST", "/v1/apps", token=TOKEN, extra="Transfer-Encoding: chunked\r\n")
    chunk = b"%x\r\n%s\r\n" % (MIB, b"x" * MIB)
    return exchange(port, head, [chunk] * 10 + [b"0\r\n\r\n"])


MALFORMED = {
    "not JSON": (lambda port: _post(port, b"{not json"), 400, "request body is not JSON"),
    "invalid UTF-8": (lambda port: _post(port, b"\xff\xfe\xfd\xfc"), 400, "request body is not JSON"),
    "a JSON array": (lambda port: _post(port, b"[1, 2, 3]"), 400, "request body must be a JSON object"),
    "a huge Content-Length": (
        lambda port: exchange(port, request_head("POST", "/v1/apps", token=TOKEN,
                                                 extra=f"Content-Length: {10 ** 18}\r\n")),
        413, f"the request body is {10 ** 18} bytes; at most 1 MiB is accepted"),
    "a 10 MiB body": (_oversized_body, 413, "at most 1 MiB is accepted"),
    "a 10 MiB chunked body": (_oversized_chunked_body, 413, "the request body is over 1 MiB"),
    "a Content-Length that is not a number": (
        lambda port: exchange(port, request_head("POST", "/v1/apps", token=TOKEN, extra="Content-Length: twelve\r\n")),
        400, "not valid HTTP/1.1"),
    # 431 when the head arrives whole in one read, 400 when h11 sees 16 KiB of it still incomplete
    "headers of 100 KiB": (
        lambda port: exchange(port, request_head("GET", "/v1/apps", extra=f"X-Big: {'a' * 100 * 1024}\r\n")),
        {400, 431}, "request line and headers are over 16 KiB"),
    "headers of 1 MiB": (
        lambda port: exchange(port, request_head("GET", "/v1/apps", extra=f"X-Big: {'a' * MIB}\r\n")),
        400, "request line and headers are over 16 KiB"),
    "not HTTP at all": (lambda port: exchange(port, b"\x16\x03\x01 hello\r\n\r\n"), 400, "not valid HTTP/1.1"),
}


def test_malformed_and_oversized_requests_get_a_clear_4xx_and_memory_stays_bounded(daemon):
    rss = daemon.rss_mib()
    for name, (send, status, says) in MALFORMED.items():
        for _ in range(3):  # again and again: what a refusal keeps would add up
            answer = send(daemon.port)
            assert_clear_refusal(answer, status, says, what=name)
    grown = daemon.rss_mib() - rss
    print(f"\nmalformed and oversized requests: RSS {rss:.0f} MiB -> {rss + grown:.0f} MiB")
    assert grown < 20, f"the daemon's memory grew by {grown:.0f} MiB"
    assert "Traceback" not in daemon.log()
    assert ask(daemon.port, "GET", "/v1/health", token=TOKEN).status == 200


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/nothing", 404),
    ("GET", "/v1/apps/shop/nothing", 404),
    ("PUT", "/v1/apps", 405),
    ("PATCH", "/v1/apps", 405),
    ("DELETE", "/v1/health", 405),
    ("HEAD", "/v1/secrets/rekey", 405),
])
def test_unknown_paths_are_404_and_wrong_methods_405(daemon, method, path, status):
    answer = ask(daemon.port, method, path, token=TOKEN)
    assert answer.status == status
    if method != "HEAD":
        assert answer.json() == {"error": "not_found", "message": f"{method} {path} is not part of the API"}
    assert ask(daemon.port, method, path).status == 401, "the token is checked before the route"


def test_the_cli_still_talks_over_the_private_unix_socket(daemon):
    socket_path = daemon.home / "flotilla.sock"
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
    env = {**os.environ, "FLOTILLA_HOME": str(daemon.home), "PYTHONPATH": str(REPO / "src")}
    listed = subprocess.run([sys.executable, "-m", "flotilla", "ps", "--json"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    missing = subprocess.run([sys.executable, "-m", "flotilla", "logs", "nope"], env=env, capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 3 and "no app named 'nope'" in missing.stderr


def test_a_client_that_sends_too_much_reads_why_instead_of_a_reset(daemon):
    """The daemon refuses before reading and still lets the client finish sending and read the answer."""
    client = DaemonClient(Home(daemon.home), timeout=10)
    with pytest.raises(BadRequestError, match=r"the request body is \d+ bytes; at most 1 MiB is accepted"):
        client.request("POST", "/v1/apps", body={"spec": {"padding": "x" * 10 * MIB}})
