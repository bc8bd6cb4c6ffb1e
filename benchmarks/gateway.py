"""Benchmark: Flotilla's gateway against nginx and against no proxy at all, with wrk.

Why it exists: the gateway (HAProxy, driven by Flotilla) sits in front of
every public request, so what it costs must be measured, against the proxy a
user would otherwise put there (nginx) and against the floor (no proxy). All
three legs run in one run, on this host, against the same two replicas of
`shop-catalog:1` (`GET /items`; `--image` for another), with the same wrk settings:

* direct:  wrk straight to the replicas' IPs on their internal network. Two wrk
  processes run at once, one per replica, each with half the connections and
  threads, so the replicas carry the same load as behind a proxy that
  balances over both. Requests/s is their sum; p50 and p99 are the
  request-weighted means of the two (the replicas are identical, so their
  distributions nearly coincide; each one's figures are printed as well);
* nginx:   an nginx this script starts (`daemon off`, by pid), `worker_processes
  auto` like HAProxy's default of one thread per core, an `upstream` of both
  replicas with keep-alive, on another loopback port;
* gateway: Flotilla's gateway at the spec's `gateway.listen` (127.0.0.1:free port),
  routing `bench.localhost/` to the service.

Prints requests/s, p50 and p99 for each, the ratio gateway/nginx (throughput)
and gateway p50 minus direct p50, with the aims beside them: gateway
throughput >= nginx, and < 0.2 ms added at p50 over direct. A leg whose wrk
saw socket errors or non-2xx answers is marked INVALID and not judged; the
exit status is 1 when a leg failed or is INVALID.

    .venv/bin/python benchmarks/gateway.py [--duration 10] [--connections 32] [--threads 2]

Needs root's Docker Engine with the shop images (scripts/setup.sh), and wrk
and nginx (Debian packages, installed by scripts/setup.sh). Flotilla runs with
a private FLOTILLA_HOME in a temp dir; at the end the app is brought down, the
daemon and nginx are stopped by pid, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = "benchgw"
HOST = "bench.localhost"
PATH = "/items"
DEFAULT_IMAGE = "shop-catalog:1"
REPLICA_PORT = 8000
AIM_THROUGHPUT_RATIO = 1.0  # gateway req/s / nginx req/s >= this
AIM_ADDED_P50_MS = 0.2  # gateway p50 - direct p50 < this
STOP_WAIT_SECONDS = 10
READY_WAIT_SECONDS = 10

SPEC = """\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  echo:
    image: {image}
    port: {replica_port}
    replicas: 2
    health: {{path: /healthz, interval: 2s, timeout: 1s}}
    routes:
      - {{host: {host}, path: /}}
"""

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
    upstream echo {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name {host};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


class BenchError(Exception):
    """A leg or a step could not run; the message says which and why."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str  # "" when wrk saw no socket error and no non-2xx/3xx answer

    @property
    def note(self) -> str:
        return f"INVALID: {self.errors}" if self.errors else ""


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


def wrk_argv(url: str, *, threads: int, connections: int, seconds: float) -> list[str]:
    return ["wrk", "-t", str(threads), "-c", str(max(connections, threads)), "-d", f"{seconds:g}s",
            "--latency", "-H", f"Host: {HOST}", url]


def run_wrk_many(urls: list[str], *, threads: int, connections: int, seconds: float) -> list[WrkResult]:
    """wrk against each url at once, threads and connections split evenly between them."""
    each_t, each_c = max(1, threads // len(urls)), max(1, connections // len(urls))
    procs = [subprocess.Popen(wrk_argv(u, threads=each_t, connections=each_c, seconds=seconds),
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
    """Sum of requests/s; request-weighted means of p50 and p99 (see the module doc)."""
    total = sum(r.requests for r in results) or 1
    return WrkResult(
        requests_per_s=sum(r.requests_per_s for r in results),
        p50_ms=sum(r.p50_ms * r.requests for r in results) / total,
        p99_ms=sum(r.p99_ms * r.requests for r in results) / total,
        requests=sum(r.requests for r in results),
        errors="; ".join(r.errors for r in results if r.errors),
    )


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


def http_probe(url: str, *, timeout: float = 2.0) -> str | None:
    """None if `url` answers 200 with Host: HOST, else what went wrong."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Host": HOST})
    try:
        with opener.open(request, timeout=timeout) as response:
            return None if response.status == 200 else f"answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{getattr(exc, 'reason', exc)}"


def wait_answering(url: str, *, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while (problem := http_probe(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return problem


# -- Flotilla -----------------------------------------------------------------


class FlotillaApp:
    """The bench app in a private FLOTILLA_HOME, driven through the CLI."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.env = {**os.environ, "FLOTILLA_HOME": str(self.home), "PYTHONPATH": str(REPO / "src")}

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flotilla", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def up(self, spec: Path) -> None:
        proc = self.cli("up", "-f", str(spec), "--timeout", "120")
        for line in proc.stderr.splitlines():
            print(f"  flotilla up: {line}", flush=True)
        if proc.returncode != 0:
            raise BenchError(f"flotilla up exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")

    def replica_ips(self) -> list[str]:
        proc = self.cli("ps", APP, "--json")
        if proc.returncode != 0:
            raise BenchError(f"flotilla ps exited {proc.returncode}: {proc.stderr.strip()}")
        ips = sorted(row["ip"] for row in json.loads(proc.stdout) if row.get("ip"))
        if len(ips) != 2:
            raise BenchError(f"expected 2 replica IPs from `flotilla ps {APP} --json`, got {ips}")
        return ips

    def down(self) -> None:
        proc = self.cli("down", APP, timeout=120)
        if proc.returncode != 0:
            print(f"warning: flotilla down {APP} exited {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
        try:
            pid = int((self.home / "daemon.pid").read_text())
        except (OSError, ValueError):
            return
        stop_pid(pid)


# -- nginx --------------------------------------------------------------------


def start_nginx(tmp: Path, *, port: int, ips: list[str]) -> subprocess.Popen:
    servers = "\n".join(f"        server {ip}:{REPLICA_PORT};" for ip in ips)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, servers=servers, port=port, host=HOST))
    log = tmp / "nginx-error.log"
    with open(log, "a") as stderr:
        proc = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(tmp), "-e", str(log)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    problem = wait_answering(f"http://127.0.0.1:{port}{PATH}", seconds=READY_WAIT_SECONDS)
    if problem:
        stop_process(proc)
        raise BenchError(f"nginx did not answer on 127.0.0.1:{port}: {problem}\n{log.read_text()}")
    return proc


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BenchError("nginx is not installed (scripts/setup.sh installs the Debian package)")
    return found


# -- the run ------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk per leg (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured wrk seconds before each leg (default 2)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"the replicas' image (default {DEFAULT_IMAGE})")
    return parser.parse_args(argv)


def measure(name: str, urls: list[str], args: argparse.Namespace) -> WrkResult:
    print(f"{name}: wrk -t {args.threads} -c {args.connections} -d {args.duration:g}s on {', '.join(urls)}",
          flush=True)
    if args.warmup > 0:
        run_wrk_many(urls, threads=args.threads, connections=args.connections, seconds=args.warmup)
    parts = run_wrk_many(urls, threads=args.threads, connections=args.connections, seconds=args.duration)
    if len(parts) > 1:
        for url, part in zip(urls, parts, strict=True):
            print(f"  {url}: {fmt_row(part)}", flush=True)
    return combine(parts)


def measure_gateway(port: int, args: argparse.Namespace) -> WrkResult:
    url = f"http://127.0.0.1:{port}{PATH}"
    problem = wait_answering(url, seconds=READY_WAIT_SECONDS)
    if problem:
        raise BenchError(
            f"the gateway does not answer on 127.0.0.1:{port} (GET {PATH}, Host: {HOST}): {problem}. "
            f"`flotilla up` of a spec with routes should have started it there (gateway.listen)")
    return measure("gateway", [url], args)


def fmt_row(result: WrkResult) -> str:
    return (f"{result.requests_per_s:10.0f} req/s  p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms"
            + (f"  {result.note}" if result.note else ""))


def usable(*legs) -> bool:
    return all(isinstance(leg, WrkResult) for leg in legs)


def verdict(met: bool, *legs: WrkResult) -> str:
    if any(leg.errors for leg in legs):
        return "not judged: a leg is INVALID"
    return "met" if met else "NOT met"


def report(results: dict[str, WrkResult | BenchError], args: argparse.Namespace) -> bool:
    """Print the table and the ratios; True if every leg ran cleanly."""
    print(f"\nGET {PATH} (Host: {HOST}), 2 replicas of {args.image}; "
          f"wrk -t {args.threads} -c {args.connections} -d {args.duration:g}s per leg")
    print(f"  {'leg':8} {'requests/s':>16}  {'p50':>11}  {'p99':>11}")
    for name, result in results.items():
        shown = fmt_row(result) if isinstance(result, WrkResult) else f"FAILED: {result}"
        print(f"  {name:8} {shown}")
    gateway, nginx, direct = (results.get(n) for n in ("gateway", "nginx", "direct"))
    if usable(gateway, nginx):
        ratio = gateway.requests_per_s / nginx.requests_per_s
        print(f"  throughput gateway/nginx:   {ratio:6.2f}    "
              f"(aim: >= {AIM_THROUGHPUT_RATIO:.2f}; {verdict(ratio >= AIM_THROUGHPUT_RATIO, gateway, nginx)})")
    if usable(gateway, direct):
        added = gateway.p50_ms - direct.p50_ms
        print(f"  p50 gateway - direct:       {added:6.3f} ms "
              f"(aim: < {AIM_ADDED_P50_MS} ms; {verdict(added < AIM_ADDED_P50_MS, gateway, direct)})")
    if usable(nginx, direct):
        print(f"  p50 nginx - direct:         {nginx.p50_ms - direct.p50_ms:6.3f} ms (for reference)")
    return all(isinstance(r, WrkResult) and not r.errors for r in results.values())


def run_legs(tmp: Path, app: FlotillaApp, gateway_port: int, args: argparse.Namespace) -> dict:
    spec = tmp / "flotilla.yaml"
    spec.write_text(SPEC.format(app=APP, port=gateway_port, image=args.image, replica_port=REPLICA_PORT, host=HOST))
    print(f"flotilla up -f {spec} (FLOTILLA_HOME={app.home})", flush=True)
    app.up(spec)
    ips = app.replica_ips()
    results: dict[str, WrkResult | BenchError] = {}
    results["direct"] = measure("direct", [f"http://{ip}:{REPLICA_PORT}{PATH}" for ip in ips], args)
    nginx_port = free_port()
    nginx = start_nginx(tmp, port=nginx_port, ips=ips)
    try:
        results["nginx"] = measure("nginx", [f"http://127.0.0.1:{nginx_port}{PATH}"], args)
    finally:
        stop_process(nginx)
    try:
        results["gateway"] = measure_gateway(gateway_port, args)
    except BenchError as exc:
        results["gateway"] = exc
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("benchmark failed: wrk is not installed (scripts/setup.sh installs the Debian package)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gw-") as name:
        tmp = Path(name)
        app = FlotillaApp(tmp)
        try:
            results = run_legs(tmp, app, free_port(), args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            app.down()
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
