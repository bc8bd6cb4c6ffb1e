"""The activator behind the real gateway: only HAProxy reaches it, bodies stream, HAProxy's environment is clean.

Issue 13, breaks 6, 7 and 9, tried as they were found: a second local user
(uid 65534, through ``setpriv``) takes the activator's address after the
daemon is killed with -9, or talks to it directly naming an internal
service's backend; a 512 MiB POST to a service at zero; and HAProxy started
by a daemon whose environment holds the master key. Real Docker, HAProxy and
daemon; traffic goes to loopback and to the test's own containers only.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from flotilla.gateway.runtime import RuntimeApi
from tests.conftest import BASE_IMAGE
from tests.integration.test_autoscale import scaled_spec
from tests.support.cli import app_status, ps
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I", "-c"]
MASTER_KEY = "5f" * 32
API_TOKEN = "tok-3c1d7e9a0b5f42e8a6d1c0ffee1234"

# What a second local user tries against the activator's address: take it (bind) and wait for
# what the gateway delivers, or talk to it. Prints one JSON line once it is set, one at the end.
ATTACKER = r"""
import json, os, socket, sys, time
kind, where, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
report = {"uid": os.getuid(), "errors": [], "bound": False, "connected": False, "got": ""}
family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
address = where if kind == "unix" else ("127.0.0.1", int(where))
if kind == "unix":
    try:
        os.unlink(where)
    except OSError as exc:
        report["errors"].append(f"unlink: {exc.strerror}")
listener = socket.socket(family, socket.SOCK_STREAM)
try:
    listener.bind(address)
    listener.listen(8)
    report["bound"] = True
except OSError as exc:
    report["errors"].append(f"bind: {exc.strerror}")
probe = socket.socket(family, socket.SOCK_STREAM)
try:
    probe.connect(address)
    report["connected"] = True
except OSError as exc:
    report["errors"].append(f"connect: {exc.strerror}")
print(json.dumps({"ready": True}), flush=True)
if report["bound"]:
    listener.settimeout(seconds)
    try:
        conn, _ = listener.accept()
        conn.settimeout(2)
        report["got"] = conn.recv(65536).decode("latin-1")
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nstolen")
    except OSError:
        pass
print(json.dumps(report), flush=True)
"""

# A replica that reads a body of any size in pieces and says how many bytes came.
COUNTER = r"""
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(b"ok")
    def do_POST(self):
        left, seen = int(self.headers["Content-Length"]), 0
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                break
            left, seen = left - len(piece), seen + len(piece)
        self.answer(json.dumps({"bytes": seen}).encode())
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""


def zero_spec(app: str, port: int, *, internal: bool = False) -> str:
    """test_autoscale's worker, at zero when idle; ``internal``: with an internal service beside it."""
    inner = """\
  inner:
    image: shop-catalog:1
    port: 8000
    health: {path: /healthz, interval: 1s, timeout: 500ms}
""" if internal else ""
    return scaled_spec(app, port, minimum=0, maximum=2, delay="3s", replicas=1) + inner


def counter_spec(app: str, port: int) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  sink:
    image: {BASE_IMAGE}
    command: {json.dumps(["python3", "-c", COUNTER])}
    port: 8000
    replicas: 1
    max_body: 600M
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes: [{{host: sink.localhost, path: /}}]
    autoscale: {{min: 0, max: 1, target: {{concurrency: 2}}, scale_down_delay: 3s}}
"""


def up_at_zero(flotilla, app: str, tmp_path: Path, spec: str, service: str, env: dict | None = None) -> None:
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), "--timeout", "90", env=env)

    def at_zero() -> bool:
        desired = next(s["desired"] for s in app_status(flotilla, app)["services"] if s["name"] == service)
        return desired == 0 and not any(r["service"] == service for r in ps(flotilla, app))

    wait_for(at_zero, timeout=40, what=f"{service} scaled to zero")
    backend = f"be_{app}_{service}"
    wait_for(lambda: activator_address(flotilla, backend) is not None, timeout=15,
             what="the activator in the gateway")


def activator_address(flotilla, backend: str) -> tuple[str, str] | None:
    """Where the gateway sends ``backend``'s held requests: ("unix", path) or ("tcp", port)."""
    runtime = RuntimeApi(flotilla.home / "gateway" / "haproxy.sock")
    servers = runtime.servers(backend)
    activator = servers.get("activator")
    if activator is not None and activator.admin == "ready":
        text = (flotilla.home / "gateway" / "haproxy.cfg").read_text()
        found = re.search(rf"^backend {backend}\n(?:    .*\n)*?    server activator unix@(\S+)", text, re.M)
        return ("unix", found.group(1)) if found else None
    loopback = [s for s in servers.values() if s.address == "127.0.0.1" and s.admin == "ready"]
    return ("tcp", str(loopback[0].port)) if loopback else None


def as_nobody(kind: str, where: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([*NOBODY, ATTACKER, kind, where, str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == json.dumps({"ready": True}), (line, proc.stderr.read())
    return proc


def finished(proc: subprocess.Popen) -> dict:
    proc.wait(timeout=30)  # then read: communicate() would skip what readline() buffered
    out, err = proc.stdout.read(), proc.stderr.read()
    assert out.strip(), f"the second user's process said nothing: {err}"
    return json.loads(out.strip().splitlines()[-1])


def public_request(port: int, host: str, *, headers: dict | None = None, timeout: float = 40):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/whoami", headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def test_after_kill_9_a_local_user_cannot_take_the_activators_address(flotilla, app_name, tmp_path):
    port = free_port()
    up_at_zero(flotilla, app_name, tmp_path, zero_spec(app_name, port), "worker")
    kind, where = activator_address(flotilla, f"be_{app_name}_worker")
    flotilla.kill_daemon(signal.SIGKILL)
    attacker = as_nobody(kind, where, seconds=8)
    status, body = public_request(port, "work.localhost",
                                  headers={"Cookie": "session=s3cr3t", "Authorization": "Bearer t0ken"})
    report = finished(attacker)
    assert report["uid"] == 65534
    assert not report["bound"] and not report["connected"], report
    assert report["got"] == "", f"the gateway delivered a public request to uid 65534: {report['got'][:200]}"
    assert status == 503 and "stolen" not in body, (status, body)


def test_a_local_user_cannot_reach_the_activator_nor_an_internal_service_through_it(flotilla, app_name, tmp_path):
    port = free_port()
    up_at_zero(flotilla, app_name, tmp_path, zero_spec(app_name, port, internal=True), "worker")
    kind, where = activator_address(flotilla, f"be_{app_name}_worker")
    report = finished(as_nobody(kind, where, seconds=0))
    assert not report["connected"] and not report["bound"], report
    assert any("Permission denied" in e for e in report["errors"]), report
    # Even a process that may connect (root here) reaches no internal service through it.
    status, answer = direct(kind, where, f"be_{app_name}_inner")
    assert status == 503 and "is not held for scale from zero" in answer, (status, answer)
    assert desired(flotilla, app_name, "worker") == 0, "a refused request woke nothing"
    # Through the gateway the header is the backend's own: a forged one changes nothing.
    status, body = public_request(port, "work.localhost", headers={"X-Flotilla-Backend": f"be_{app_name}_inner"})
    assert status == 200 and '"worker"' in body, body
    runtime = RuntimeApi(flotilla.home / "gateway" / "haproxy.sock")
    wait_for(lambda: runtime.servers(f"be_{app_name}_worker")["activator"].admin == "maint", timeout=15,
             what="the activator out of rotation once a replica serves")


def desired(flotilla, app: str, service: str) -> int:
    return next(s["desired"] for s in app_status(flotilla, app)["services"] if s["name"] == service)


def direct(kind: str, where: str, backend: str) -> tuple[int, str]:
    """A request straight to the activator, as root."""
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(40)
        sock.connect(where if kind == "unix" else ("127.0.0.1", int(where)))
        sock.sendall(f"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Flotilla-Backend: {backend}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode(errors="replace")
    return int(answer.split()[1]), answer


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines())
            if k in ("VmRSS", "VmHWM")}


def test_a_512_mib_post_to_a_service_at_zero_streams_through_the_activator(flotilla, app_name, tmp_path):
    port = free_port()
    up_at_zero(flotilla, app_name, tmp_path, counter_spec(app_name, port), "sink")
    pid = flotilla.daemon_pid()
    before = memory_kib(pid)
    peak = [before["VmRSS"]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], memory_kib(pid)["VmRSS"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size, chunk = 512 * 1024 * 1024, b"\x00" * (1 << 20)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/upload", body=(chunk for _ in range(size // len(chunk))),
                     headers={"Host": "sink.localhost", "Content-Length": str(size)})
        response = conn.getresponse()
        answer = response.read().decode()
    finally:
        conn.close()
        done.set()
        sampler.join()
    took = time.monotonic() - started
    after = memory_kib(pid)
    grown = (max(peak[0], after["VmHWM"]) - before["VmRSS"]) // 1024
    print(f"daemon VmRSS {before['VmRSS'] // 1024} MiB before, {after['VmRSS'] // 1024} MiB after, "
          f"peak sampled {peak[0] // 1024} MiB, VmHWM {after['VmHWM'] // 1024} MiB; 512 MiB in {took:.1f}s")
    assert response.status == 200 and json.loads(answer) == {"bytes": size}, answer
    assert grown < 64, f"the daemon grew {grown} MiB relaying a 512 MiB body"


def test_haproxy_runs_with_a_clean_environment(flotilla, app_name, tmp_path):
    port = free_port()
    spec = f"""\
app: {app_name}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes: [{{host: web.localhost}}]
"""
    env = {"FLOTILLA_MASTER_KEY": MASTER_KEY, "FLOTILLA_API_TOKEN": API_TOKEN}
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), "--timeout", "60", env=env)
    daemon = Path(f"/proc/{flotilla.daemon_pid()}/environ").read_bytes()
    assert MASTER_KEY.encode() in daemon, "the test must start the daemon with the key in its environment"
    master = int((flotilla.home / "gateway" / "haproxy.pid").read_text().split()[0])
    processes = [master, *children(master)]
    assert len(processes) >= 2, "the master and at least one worker"
    for pid in processes:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
        ours = {name for name in names if not name.startswith(b"HAPROXY_")}  # HAProxy's own, set by its master
        assert ours == {b"PATH"}, (pid, names)
        assert MASTER_KEY.encode() not in environ and API_TOKEN.encode() not in environ


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found
