"""Interactive `flotilla run -i` / `flotilla exec -i`: standard input reaches the command, piped or from a terminal.

Real Docker, a real daemon, the real CLI: piped input through `read` and `cat`
(the exit code is the command's), and a terminal session driven through a
pseudo-terminal made here (`os.openpty`), as a user at a shell would: its size
reaches the command at the start and after a SIGWINCH, the local terminal is
put back as it was, and a killed CLI still has its container removed.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.support.cli import killed_run_leaves_no_container, task_containers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

SPEC = """\
app: {app}
services:
  worker:
    image: flotilla/python:bookworm
    command: ["python3", "-c", "import time; time.sleep(3600)"]
    env: {{GREETING: hello}}
"""
READ_AND_EXIT = ["sh", "-c", "read x; echo got $x $GREETING; echo oops >&2; exit 5"]


@pytest.fixture
def app(flotilla, app_name, tmp_path):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, SPEC.format(app=app_name))), "--timeout", "90")
    return app_name


@pytest.mark.parametrize("verb,target", [("run", "worker"), ("exec", "worker-1")])
def test_piped_input_reaches_the_command_and_its_exit_code_comes_back(flotilla, app, verb, target, docker_client):
    done = flotilla.run(verb, "-i", app, target, "--", *READ_AND_EXIT, input_text="there\n", check=False)
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stdout == "got there hello\n"
    assert done.stderr == "oops\n"  # without a terminal the streams stay apart
    data = "".join(f"line {n} {'x' * 60}\n" for n in range(4000))  # ~270 KB: many frames each way
    copied = flotilla.run(verb, "-i", app, target, "--", "cat", input_text=data)
    assert copied.stdout == data
    wait_for(lambda: not task_containers(docker_client, app), timeout=20, what="the run's container removed")


def test_without_i_piped_input_is_not_read(flotilla, app):
    """The NDJSON path for scripts is as it was: the command's standard input is empty."""
    done = flotilla.run("run", app, "worker", "--", "sh", "-c", "read x; echo got:$x; exit 5", input_text="there\n",
                        check=False)
    assert (done.returncode, done.stdout) == (5, "got:\n"), done.stdout + done.stderr


class Terminal:
    """A pseudo-terminal with the CLI on its far end, as a user's shell would run it."""

    def __init__(self, flotilla, *args: str, rows: int, cols: int) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([*flotilla.command_prefix(), *args], env=flotilla.env, stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True)
        self.seen = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, wanted: bytes, *, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {wanted!r}; the terminal showed {self.seen[-2000:]!r}")
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the CLI closed the terminal's other end
                    raise AssertionError(f"terminal closed before {wanted!r}: {self.seen[-2000:]!r}") from None
        return self.seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.parametrize("verb,target", [("run", "worker"), ("exec", "worker-1")])
def test_a_terminal_session_is_interactive_sized_and_restored(flotilla, app, verb, target, docker_client):
    term = Terminal(flotilla, verb, app, target, "--", "sh", rows=41, cols=101)
    try:
        term.type("stty size\n")
        term.read_until(b"41 101")  # the size at the start, before the shell read its first line
        term.resize(50, 132)
        for attempt in range(10):  # the CLI may read the next line before its SIGWINCH handler ran: ask again
            os.kill(term.proc.pid, signal.SIGWINCH)  # the CLI is no terminal's foreground process: signal it
            term.type("stty size\n")
            try:
                term.read_until(b"50 132", timeout=5)
                break
            except AssertionError:
                if attempt == 9:
                    raise
        term.type("echo hi-$((6*7)); exit 7\n")
        term.read_until(b"hi-42")
        assert term.proc.wait(timeout=60) == 7
        assert termios.tcgetattr(term.slave) == term.before  # raw mode undone
    finally:
        term.close()
    wait_for(lambda: not task_containers(docker_client, app), timeout=20, what="the run's container removed")


def test_a_killed_interactive_cli_leaves_no_container(flotilla, app, docker_client):
    cli = subprocess.Popen([*flotilla.command_prefix(), "run", "-i", app, "worker", "--", "cat"], env=flotilla.env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_run_leaves_no_container(cli, docker_client, app)


def test_many_idle_sessions_leave_the_api_answering(flotilla, app):
    """Each session blocks a thread on its process's output; those are not the API handlers' threads."""
    from flotilla.daemon import frames

    client = flotilla.client()
    sessions = []
    try:
        for _ in range(45):  # more than anyio's default pool of 40 threads
            sessions.append(client.session(f"/v1/apps/{app}/exec", {"replica": "worker-1", "command": ["cat"],
                                                                    "tty": False}))
        done = flotilla.run("exec", app, "worker-1", "--", "echo", "still-answering", timeout=60)
        assert done.stdout == "still-answering\n"
        last = sessions[-1]
        assert last.send(frames.encode(frames.STDIN, b"ping\n"))
        assert next(last.received()) == frames.Frame(frames.STDOUT, b"ping\n")
    finally:
        for session in sessions:
            session.close()


def tcp_session(port: int, path: str, start: dict, *, token: str):
    """A session over the API's TCP listener, as a remote client would open it (the CLI uses the socket)."""
    import http.client
    import socket

    from flotilla.daemon import frames
    from flotilla.daemon.client import Session, _chunk

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
                 f"Content-Type: {frames.CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                 + _chunk(frames.encode_json(frames.START, start)))
    response = http.client.HTTPResponse(sock, method="POST")
    response.begin()
    return response, Session(sock, response)


def test_a_session_over_tcp_needs_the_token(flotilla, app_name, tmp_path):
    from flotilla.daemon import frames
    from tests.support.ports import free_port

    port, token = free_port(), "a-long-enough-test-token"
    daemon = subprocess.Popen([*flotilla.command_prefix(), "daemon", "--api-listen", f"127.0.0.1:{port}"],
                              env={**flotilla.env, "FLOTILLA_API_TOKEN": token}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: flotilla.daemon_pid() == daemon.pid and flotilla.client().alive(), timeout=30,
                 what="the daemon with a TCP listener")
        flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, SPEC.format(app=app_name))), "--timeout", "90")
        start = {"replica": "worker-1", "command": ["sh", "-c", "read x; echo got $x; exit 5"], "tty": False}
        refused, _ = tcp_session(port, f"/v1/apps/{app_name}/exec", start, token="wrong")
        assert refused.status == 401
        answer, session = tcp_session(port, f"/v1/apps/{app_name}/exec", start, token=token)
        assert answer.status == 200
        session.send(frames.encode(frames.STDIN, b"over-tcp\n"))
        received = list(session.received())
        session.close()
        assert received[0] == frames.Frame(frames.STDOUT, b"got over-tcp\n")
        assert received[-1].json() == {"exit_code": 5}
    finally:
        flotilla.run("down", app_name, check=False, timeout=120)
        daemon.terminate()
        daemon.wait(timeout=30)
