"""Benchmark: scaling a service from 1 to 20 replicas, Flotilla against Docker Swarm.

Both run on this host, in one run, on the same image, for several rounds:

* Flotilla: from invoking `flotilla scale APP web=20` until the daemon reports
  all 20 replicas running the current config AND passing their HTTP health
  check (a stricter finish line than Swarm's);
* Swarm: from invoking `docker service scale SVC=20` until `docker service ls`
  shows 20/20 tasks running (the image has no HEALTHCHECK, so Swarm counts a
  task as soon as its container runs).

Between rounds both go back to 1 replica. Prints each round, the medians and
the ratio Flotilla/Swarm (lower is better; the aim is at most 0.5).

    .venv/bin/python benchmarks/scale.py [--rounds 3] [--replicas 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from flotilla.daemon.client import DaemonClient  # noqa: E402
from flotilla.daemon.paths import Home  # noqa: E402

IMAGE = "shop-catalog:1"
APP = "benchscale"
SWARM_SERVICE = "flotilla-bench-scale"
SPEC = f"""\
app: {APP}
services:
  web:
    image: {IMAGE}
    port: 8000
    replicas: 1
    health: {{path: /healthz, interval: 2s, timeout: 1s}}
"""


def sh(*args: str, env: dict | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout.strip()


def wait_until(predicate, *, timeout: float = 120.0, interval: float = 0.02) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark: timed out waiting for convergence")
        time.sleep(interval)
    return time.monotonic()


class FlotillaSide:
    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "FLOTILLA_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
        self.home = Home(home)

    def flotilla(self, *args: str) -> str:
        return sh(sys.executable, "-m", "flotilla", *args, env=self.env)

    def setup(self, spec_path: Path) -> None:
        self.flotilla("up", "-f", str(spec_path), "--timeout", "120")
        self.client = DaemonClient.connect(self.home)

    def converged(self) -> bool:
        return self.client.request("GET", f"/v1/apps/{APP}")["converged"]

    def scale(self, count: int) -> float:
        start = time.monotonic()
        self.flotilla("scale", APP, f"web={count}")
        time.sleep(0.05)  # let the daemon see the new count before polling
        return wait_until(self.converged) - start

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", "down", APP], env=self.env, capture_output=True)
        pid = self.home.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)


class SwarmSide:
    def setup(self) -> None:
        self.we_started_swarm = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") != "active"
        if self.we_started_swarm:
            sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
        sh("docker", "service", "create", "-d", "--name", SWARM_SERVICE, "--replicas", "1", IMAGE)
        wait_until(lambda: self.running() == "1/1", interval=0.1)

    def running(self) -> str:
        return sh("docker", "service", "ls", "--filter", f"name={SWARM_SERVICE}", "--format", "{{.Replicas}}")

    def scale(self, count: int) -> float:
        start = time.monotonic()
        sh("docker", "service", "scale", "-d", f"{SWARM_SERVICE}={count}")
        return wait_until(lambda: self.running() == f"{count}/{count}") - start

    def teardown(self) -> None:
        subprocess.run(["docker", "service", "rm", SWARM_SERVICE], capture_output=True)
        if getattr(self, "we_started_swarm", False):
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        spec = Path(tmp) / "flotilla.yaml"
        spec.write_text(SPEC)
        ours, swarm = FlotillaSide(Path(tmp) / "home"), SwarmSide()
        try:
            ours.setup(spec)
            swarm.setup()
            results = run_rounds(ours, swarm, rounds=args.rounds, replicas=args.replicas)
        finally:
            ours.teardown()
            swarm.teardown()
    report(results, replicas=args.replicas)


def run_rounds(ours: FlotillaSide, swarm: SwarmSide, *, rounds: int, replicas: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"flotilla": [], "swarm": []}
    for number in range(1, rounds + 1):
        for name, side in (("flotilla", ours), ("swarm", swarm)):
            results[name].append(side.scale(replicas))
            side.scale(1)
        print(f"round {number}: flotilla {results['flotilla'][-1]:.2f}s, swarm {results['swarm'][-1]:.2f}s", flush=True)
    return results


def report(results: dict[str, list[float]], *, replicas: int) -> None:
    ours, theirs = statistics.median(results["flotilla"]), statistics.median(results["swarm"])
    print(f"scale 1 -> {replicas}, median of {len(results['flotilla'])} rounds:")
    print(f"  flotilla (all healthy): {ours:.2f}s")
    print(f"  swarm    (all running): {theirs:.2f}s")
    print(f"  ratio flotilla/swarm:   {ours / theirs:.2f}  (aim: <= 0.50)")


if __name__ == "__main__":
    main()
