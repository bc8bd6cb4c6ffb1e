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
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proxy_harness import (  # noqa: E402
    NGINX_PROXY,
    BenchError,
    FlotillaApp,
    Load,
    WrkResult,
    fmt_row,
    free_port,
    measure,
    require_wrk,
    start_nginx,
    stop_process,
    usable,
    verdict,
    wait_answering,
)

APP = "benchgw"
HOST = "bench.localhost"
PATH = "/items"
DEFAULT_IMAGE = "shop-catalog:1"
REPLICA_PORT = 8000
AIM_THROUGHPUT_RATIO = 1.0  # gateway req/s / nginx req/s >= this
AIM_ADDED_P50_MS = 0.2  # gateway p50 - direct p50 < this
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

NGINX_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        server_name {host};
{location}
    }}"""


# -- nginx --------------------------------------------------------------------


def run_nginx(tmp: Path, *, port: int, ips: list[str]) -> subprocess.Popen:
    return start_nginx(tmp, upstreams=[f"{ip}:{REPLICA_PORT}" for ip in ips],
                       http=NGINX_SERVER.format(port=port, host=HOST, location=NGINX_PROXY),
                       url=f"http://127.0.0.1:{port}{PATH}", host=HOST)


# -- the run ------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk per leg (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured wrk seconds before each leg (default 2)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"the replicas' image (default {DEFAULT_IMAGE})")
    return parser.parse_args(argv)


def load_of(args: argparse.Namespace) -> Load:
    return Load(host=HOST, threads=args.threads, connections=args.connections, seconds=args.duration,
                warmup=args.warmup)


def measure_gateway(port: int, args: argparse.Namespace) -> WrkResult:
    url = f"http://127.0.0.1:{port}{PATH}"
    problem = wait_answering(url, host=HOST, seconds=READY_WAIT_SECONDS)
    if problem:
        raise BenchError(
            f"the gateway does not answer on 127.0.0.1:{port} (GET {PATH}, Host: {HOST}): {problem}. "
            f"`flotilla up` of a spec with routes should have started it there (gateway.listen)")
    return measure("gateway", [url], load=load_of(args))


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
    ips = app.replica_ips(expected=2)
    results: dict[str, WrkResult | BenchError] = {}
    results["direct"] = measure("direct", [f"http://{ip}:{REPLICA_PORT}{PATH}" for ip in ips], load=load_of(args))
    nginx_port = free_port()
    nginx = run_nginx(tmp, port=nginx_port, ips=ips)
    try:
        results["nginx"] = measure("nginx", [f"http://127.0.0.1:{nginx_port}{PATH}"], load=load_of(args))
    finally:
        stop_process(nginx)
    try:
        results["gateway"] = measure_gateway(gateway_port, args)
    except BenchError as exc:
        results["gateway"] = exc
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gw-") as name:
        tmp = Path(name)
        app = FlotillaApp(tmp, app=APP)
        try:
            require_wrk()
            results = run_legs(tmp, app, free_port(), args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            app.down()
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
