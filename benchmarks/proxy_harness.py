"""What the proxy benchmarks share: wrk, the processes they start, and the Flotilla app they drive.

Why it exists: benchmarks/gateway.py (plain HTTP: the gateway against nginx)
and benchmarks/tls.py (HTTPS: the gateway against nginx and Caddy) run the
same kind of leg — wrk against a URL, with a Host header, warm-up first, its
output read back into requests/s, p50 and p99 — on the same kind of stage: an
app brought up by Flotilla in a private FLOTILLA_HOME, and peer proxies
started on loopback ports and stopped by pid. One copy of that code keeps the
two benchmarks measuring the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STOP_WAIT_SECONDS = 10
READY_WAIT_SECONDS = 10


class BenchError(Exception):
    """A leg or a step could not run; the message says which and why."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str  # "" when wrk saw no socket error and no non-2xx/3xx answer
    cpu_s: float | None = None  # CPU seconds the measured processes used in the run (see measure)

    @property
    def cpu_us_per_request(self) -> float | None:
        return self.cpu_s / self.requests * 1e6 if self.cpu_s is not None and self.requests else None

    @property
    def note(self) -> str:
        return f"INVALID: {self.errors}" if self.errors else ""

    def as_json(self) -> dict:
        cpu = self.cpu_us_per_request
        return {"requests_per_s": round(self.requests_per_s, 1), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3),
                "requests": self.requests, "errors": self.errors,
                "cpu_us_per_request": None if cpu is None else round(cpu, 1)}


@dataclass(frozen=True)
class Load:
    """How wrk loads a leg: the same for every leg of a run."""

    host: str  # the Host header
    threads: int
    connections: int
    seconds: float
    warmup: float  # unmeasured seconds before each leg
    headers: tuple[str, ...] = ()  # more -H values, e.g. "Connection: close"


# -- wrk ----------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"cannot read wrk's duration {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the 50% and 99% lines of --latency, the count and any errors."""
    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise BenchError(f"wrk's output has no line matching {pattern!r}:\n{output}")
        return match[1]

    errors = []
    if match := re.search(r"^\s*Socket errors: (.*)$", output, re.MULTILINE):
        errors.append(f"socket errors: {match[1].strip()}")
    if match := re.search(r"^\s*Non-2xx or 3xx responses: (\d+)", output, re.MULTILINE):
        errors.append(f"{match[1]} non-2xx/3xx responses")
    return WrkResult(
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=parse_duration_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=parse_duration_ms(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        errors="; ".join(errors),
    )


def wrk_argv(url: str, *, load: Load, threads: int, connections: int, seconds: float) -> list[str]:
    headers = [arg for header in (f"Host: {load.host}", *load.headers) for arg in ("-H", header)]
    return ["wrk", "-t", str(threads), "-c", str(max(connections, threads)), "-d", f"{seconds:g}s",
            "--latency", *headers, url]


def run_wrk_many(urls: list[str], *, load: Load, seconds: float) -> list[WrkResult]:
    """wrk against each url at once, threads and connections split evenly between them."""
    each_t, each_c = max(1, load.threads // len(urls)), max(1, load.connections // len(urls))
    procs = [subprocess.Popen(wrk_argv(u, load=load, threads=each_t, connections=each_c, seconds=seconds),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for u in urls]
    try:
        outputs = [p.communicate(timeout=seconds + 30) for p in procs]
    finally:
        for proc in procs:
            stop_process(proc)
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise BenchError(f"wrk exited {proc.returncode}: {err.strip() or out.strip()}")
    return [parse_wrk(out) for out, _ in outputs]


def combine(results: list[WrkResult]) -> WrkResult:
    """Sum of requests/s; request-weighted means of p50 and p99 (the parts are identical replicas)."""
    total = sum(r.requests for r in results) or 1
    return WrkResult(
        requests_per_s=sum(r.requests_per_s for r in results),
        p50_ms=sum(r.p50_ms * r.requests for r in results) / total,
        p99_ms=sum(r.p99_ms * r.requests for r in results) / total,
        requests=sum(r.requests for r in results),
        errors="; ".join(r.errors for r in results if r.errors),
    )


def median_result(results: list[WrkResult]) -> WrkResult:
    """The median round of a leg run several times: each figure's median (CPU: of its per-request cost)."""
    cpus = [r.cpu_us_per_request for r in results]
    requests = sum(r.requests for r in results)
    cpu_s = None if None in cpus else statistics.median(cpus) * requests / 1e6
    return WrkResult(
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=requests,
        errors="; ".join(r.errors for r in results if r.errors),
        cpu_s=cpu_s,
    )


def measure(name: str, urls: list[str], *, load: Load, cpu_pids: Callable[[], list[int]] | None = None) -> WrkResult:
    """One leg: warm-up, then the measured run; with several urls, each part is printed too.

    ``cpu_pids`` names the processes serving the leg (a proxy): the CPU time
    they and their descendants use during the measured run is recorded. On a
    machine shared with other work, requests/s swings with what else runs;
    CPU per request is what the proxy itself costs, and holds still.
    """
    extra = "".join(f" -H '{h}'" for h in load.headers)
    print(f"{name}: wrk -t {load.threads} -c {load.connections} -d {load.seconds:g}s{extra} on {', '.join(urls)}",
          flush=True)
    if load.warmup > 0:
        run_wrk_many(urls, load=load, seconds=load.warmup)
    pids = cpu_pids() if cpu_pids else []
    before = cpu_seconds(pids)
    parts = run_wrk_many(urls, load=load, seconds=load.seconds)
    if len(parts) > 1:
        for url, part in zip(urls, parts, strict=True):
            print(f"  {url}: {fmt_row(part)}", flush=True)
    combined = combine(parts)
    return replace(combined, cpu_s=cpu_seconds(pids) - before) if pids else combined


def fmt_row(result: WrkResult) -> str:
    return (f"{result.requests_per_s:10.0f} req/s  p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms"
            + (f"  {result.note}" if result.note else ""))


def usable(*legs) -> bool:
    return all(isinstance(leg, WrkResult) for leg in legs)


def verdict(met: bool, *legs: WrkResult) -> str:
    if any(leg.errors for leg in legs):
        return "not judged: a leg is INVALID"
    return "met" if met else "NOT met"


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (scripts/setup.sh installs the Debian package)")


# -- CPU time of processes ---------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLOCK_TICKS


# -- processes and ports ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_WAIT_SECONDS, always reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_pid(pid: int) -> None:
    """Stop a process that is not our child (the daemon) by its pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def http_probe(url: str, *, host: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> str | None:
    """None if `url` answers 200 with Host: `host`, else what went wrong (`context` for https)."""
    handlers = [urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)]
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with opener.open(request, timeout=timeout) as response:
            return None if response.status == 200 else f"answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{getattr(exc, 'reason', exc)}"


def wait_answering(url: str, *, host: str, seconds: float, context: ssl.SSLContext | None = None) -> str | None:
    deadline = time.monotonic() + seconds
    while (problem := http_probe(url, host=host, context=context)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return problem


def start_server(argv: list[str], *, name: str, log: Path, url: str, host: str,
                 env: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> subprocess.Popen:
    """Start a peer proxy in the foreground (stopped by its pid), once `url` answers 200."""
    with open(log, "a") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env)
    problem = wait_answering(url, host=host, seconds=READY_WAIT_SECONDS, context=context)
    if problem:
        stop_process(proc)
        raise BenchError(f"{name} did not answer on {url}: {problem}\n{log.read_text()}")
    return proc


def binary(name: str) -> str:
    """The path of a Debian package's program, or a BenchError that says who installs it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BenchError(f"{name} is not installed (scripts/setup.sh installs the Debian package)")
    return found


# -- nginx, the peer proxy both benchmarks start -------------------------------

# The same nginx for both: `worker_processes auto` (one per core, like HAProxy's
# threads), both replicas in an upstream with keep-alive; each benchmark adds
# its own server block (listeners, TLS) in {http}.
NGINX_CONF = """\
daemon off;
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream replicas {{
{servers}
        keepalive 64;
    }}
{http}
}}
"""

# The location of a server block that proxies everything to the upstream.
NGINX_PROXY = """\
        location / {
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }"""


def start_nginx(tmp: Path, *, upstreams: list[str], http: str, url: str, host: str,
                context: ssl.SSLContext | None = None) -> subprocess.Popen:
    """nginx in the foreground with NGINX_CONF (`upstreams`: "ip:port"), once `url` answers."""
    conf = tmp / "nginx.conf"
    servers = "\n".join(f"        server {upstream};" for upstream in upstreams)
    conf.write_text(NGINX_CONF.format(tmp=tmp, servers=servers, http=http))
    log = tmp / "nginx-error.log"
    return start_server([binary("nginx"), "-c", str(conf), "-p", str(tmp), "-e", str(log)], name="nginx", log=log,
                        url=url, host=host, context=context)


# -- Flotilla -----------------------------------------------------------------


class FlotillaApp:
    """A bench app in a private FLOTILLA_HOME, driven through the CLI."""

    def __init__(self, tmp: Path, *, app: str) -> None:
        self.app = app
        self.home = tmp / "home"
        self.env = {**os.environ, "FLOTILLA_HOME": str(self.home), "PYTHONPATH": str(REPO / "src")}

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flotilla", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def check(self, *args: str) -> str:
        """Run a CLI command that must succeed; its stdout."""
        proc = self.cli(*args)
        if proc.returncode != 0:
            raise BenchError(f"flotilla {args[0]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def up(self, spec: Path) -> None:
        proc = self.cli("up", "-f", str(spec), "--timeout", "120")
        for line in proc.stderr.splitlines():
            print(f"  flotilla up: {line}", flush=True)
        if proc.returncode != 0:
            raise BenchError(f"flotilla up exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")

    def replica_ips(self, *, expected: int) -> list[str]:
        ips = sorted(row["ip"] for row in json.loads(self.check("ps", self.app, "--json")) if row.get("ip"))
        if len(ips) != expected:
            raise BenchError(f"expected {expected} replica IPs from `flotilla ps {self.app} --json`, got {ips}")
        return ips

    def down(self) -> None:
        proc = self.cli("down", self.app, timeout=120)
        if proc.returncode != 0:
            print(f"warning: flotilla down {self.app} exited {proc.returncode}: {proc.stderr.strip()}",
                  file=sys.stderr)
        try:
            pid = int((self.home / "daemon.pid").read_text())
        except (OSError, ValueError):
            return
        stop_pid(pid)
