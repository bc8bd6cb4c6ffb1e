"""Benchmark: how fast Flotilla's autoscaler reacts to load steps, and the cold start from zero.

A service whose replicas each serve at most 2 requests at once (100 ms of
work each) is autoscaled on concurrency (target 2 per replica). Each round
starts from 1 idle replica, then a bounded load on loopback jumps to a rate
that needs N replicas (N = ceil(rate x 0.1 s / 2)). Measured per round, all
in this run against this host's clock:

* decision: from the load step to the autoscaler's first scale-up event;
* capacity: from the load step to the first new replica in the gateway;
* peak: the most replicas desired during the step, against N (overshoot).

Then the same service with min 0 is left idle until it is at zero, and one
request is timed (cold start: held at the gateway while a replica starts).
Prints p50 and p95 over the rounds, and the aims beside them.

    .venv/bin/python benchmarks/autoscale.py [--rounds 5] [--rate 60]
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from flotilla.daemon.client import DaemonClient  # noqa: E402
from flotilla.daemon.paths import Home  # noqa: E402
from tests.support.load import LoadGenerator  # noqa: E402

APP = "benchscale-auto"
WORK_MS = 100
PER_REPLICA = 2


def spec(port: int, *, minimum: int) -> str:
    return f"""\
app: {APP}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  worker:
    image: shop-catalog:1
    port: 8000
    replicas: 1
    env: {{LOG_LEVEL: warning, MAX_CONCURRENCY: "{PER_REPLICA}"}}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes: [{{host: work.localhost, path: /}}]
    autoscale: {{min: {minimum}, max: 12, target: {{concurrency: {PER_REPLICA}}}, scale_down_delay: 5s}}
"""


class Bench:
    def __init__(self, home: Path, port: int) -> None:
        self.env = {**os.environ, "FLOTILLA_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
        self.home = Home(home)
        self.port = port

    def flotilla(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "flotilla", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def status(self) -> dict:
        return self.client.request("GET", f"/v1/apps/{APP}")

    def desired(self) -> int:
        return self.status()["services"][0]["desired"]

    def in_gateway(self) -> set[str]:
        return {r["container_id"] for r in self.status()["replicas"] if r["gateway"] == "ready"}

    def up(self, text: str, tmp: Path) -> None:
        path = tmp / "flotilla.yaml"
        path.write_text(text)
        self.flotilla("up", "-f", str(path), "--timeout", "120")
        self.client = DaemonClient.connect(self.home)

    def wait(self, predicate, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit("benchmark: timed out")
            time.sleep(0.05)

    def round(self, rate: float) -> dict:
        self.wait(lambda: self.desired() == 1 and len(self.in_gateway()) == 1)
        before = self.in_gateway()
        last_event = self.client.request("GET", f"/v1/apps/{APP}/events", query={"limit": 1})["events"][-1]["id"]
        step_wall, step = time.time(), time.monotonic()
        capacity, peak = None, 1
        with LoadGenerator(host="127.0.0.1", port=self.port, host_header="work.localhost", rate=rate,
                           max_seconds=12, paths=(f"/debug/work?ms={WORK_MS}",), post_every=0, timeout=30):
            while time.monotonic() - step < 12:
                peak = max(peak, self.desired())
                if capacity is None and self.in_gateway() - before:
                    capacity = time.monotonic() - step
                time.sleep(0.05)
        events = self.client.request("GET", f"/v1/apps/{APP}/events", query={"since": last_event})["events"]
        ups = [e for e in events if e["kind"] == "autoscale"]
        decision = ups[0]["time"] - step_wall if ups else None
        return {"decision": decision, "capacity": capacity, "peak": peak}

    def cold_start(self) -> float:
        self.wait(lambda: self.desired() == 0 and not self.status()["replicas"], timeout=120)
        time.sleep(1)
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/whoami", headers={"Host": "work.localhost"})
        status = conn.getresponse().status
        conn.close()
        if status != 200:
            raise SystemExit(f"benchmark: the request from zero got HTTP {status}")
        return time.monotonic() - started

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", "down", APP], env=self.env, capture_output=True)
        pid = self.home.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=60.0, help="requests/s of each load step")
    args = parser.parse_args()
    needed = math.ceil(args.rate * WORK_MS / 1000 / PER_REPLICA)
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        bench = Bench(Path(tmp) / "home", free_port())
        try:
            bench.up(spec(bench.port, minimum=1), Path(tmp))
            rounds = [bench.round(args.rate) for _ in range(args.rounds)]
            for number, r in enumerate(rounds, start=1):
                print(f"round {number}: decision {r['decision']:.2f}s, capacity {r['capacity']:.2f}s, peak {r['peak']}",
                      flush=True)
            bench.up(spec(bench.port, minimum=0), Path(tmp))
            colds = [bench.cold_start() for _ in range(3)]
        finally:
            bench.teardown()
    report(rounds, colds, needed=needed, rate=args.rate)


def report(rounds: list[dict], colds: list[float], *, needed: int, rate: float) -> None:
    decisions = [r["decision"] for r in rounds if r["decision"] is not None]
    capacities = [r["capacity"] for r in rounds if r["capacity"] is not None]
    peaks = [r["peak"] for r in rounds]
    print(f"load steps of {rate:g} req/s x {WORK_MS} ms, {PER_REPLICA} per replica: {needed} replicas needed")
    print(f"  decision  p50 {pct(decisions, .5):.2f}s  p95 {pct(decisions, .95):.2f}s   (aim: within 2 s)")
    print(f"  capacity  p50 {pct(capacities, .5):.2f}s  p95 {pct(capacities, .95):.2f}s   (aim: within 3 s)")
    print(f"  peak      max {max(peaks)} replicas for {needed} needed: {max(peaks) / needed:.2f}x  (aim: under 1.5x)")
    print(f"  cold start from zero: p50 {statistics.median(colds):.2f}s, max {max(colds):.2f}s   (aim: under 2 s)")


if __name__ == "__main__":
    main()
