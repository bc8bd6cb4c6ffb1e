"""Benchmark: scaling a service from 1 to 20 replicas, Flotilla against Docker Swarm.

Both run on this host, in one run, on the same image, for several rounds:

* Flotilla: from invoking `flotilla scale APP web=20` until the daemon reports
  all 20 replicas running the current config AND passing their HTTP health
  check (a stricter finish line than Swarm's);
* Flotilla with warm standby (`standby: 19`, docs/spec.md): from the same
  command until the gateway has all 20 replicas in rotation (the 19 standby
  ones were started and probed before; the 19 new standby replicas that
  start behind them are waited for before the next side runs, untimed);
* Swarm: from invoking `docker service scale SVC=20` until `docker service ls`
  shows 20/20 tasks running (the image has no HEALTHCHECK, so Swarm counts a
  task as soon as its container runs).

Between rounds both go back to 1 replica. A third line is the floor both
share: creating and starting the same number of containers straight through
the Docker API, 8 at a time, waiting for nothing. Prints each round, the
medians and the ratios (lower is better; the aim is Flotilla/Swarm <= 0.5).

    .venv/bin/python benchmarks/scale.py [--rounds 3] [--replicas 20] [--no-swarm]
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
sys.path.insert(0, str(REPO))

from flotilla.daemon.client import DaemonClient  # noqa: E402
from flotilla.daemon.paths import Home  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

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
STANDBY_APP = "benchstandby"


def standby_spec(*, standby: int, port: int) -> str:
    return f"""\
app: {STANDBY_APP}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  web:
    image: {IMAGE}
    port: 8000
    replicas: 1
    standby: {standby}
    health: {{path: /healthz, interval: 2s, timeout: 1s}}
    routes:
      - {{host: standby.localhost}}
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
    app = APP

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "FLOTILLA_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
        self.home = Home(home)

    def flotilla(self, *args: str) -> str:
        return sh(sys.executable, "-m", "flotilla", *args, env=self.env)

    def setup(self, spec_path: Path) -> None:
        self.flotilla("up", "-f", str(spec_path), "--timeout", "120")
        self.client = DaemonClient.connect(self.home)

    def converged(self) -> bool:
        return self.client.request("GET", f"/v1/apps/{self.app}")["converged"]

    def scale(self, count: int) -> float:
        start = time.monotonic()
        self.flotilla("scale", self.app, f"web={count}")
        time.sleep(0.05)  # let the daemon see the new count before polling
        return wait_until(self.converged) - start

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", "down", self.app], env=self.env, capture_output=True)
        pid = self.home.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)


class StandbySide(FlotillaSide):
    """The same daemon, another app: `standby: replicas - 1`, timed until the gateway routes them all."""

    app = STANDBY_APP

    def __init__(self, flotilla: FlotillaSide) -> None:  # one daemon serves both Flotilla sides
        self.env, self.home = flotilla.env, flotilla.home

    def in_rotation(self) -> int:
        routes = self.client.request("GET", f"/v1/apps/{self.app}/routes")["routes"]
        return routes[0]["replicas_in_gateway"] if routes else 0

    def scale(self, count: int) -> float:
        start = time.monotonic()
        self.flotilla("scale", self.app, f"web={count}")
        served = wait_until(lambda: self.in_rotation() == count) - start
        time.sleep(0.05)
        wait_until(self.converged)  # the new standby replicas, untimed, before the next side runs
        return served

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", "down", self.app], env=self.env, capture_output=True)


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


class RawDockerSide:
    """The floor: N-1 plain `create` + `start` calls, 8 in parallel, no health wait."""

    NETWORK = "flotilla-bench-raw"

    def setup(self) -> None:
        import docker

        self.client = docker.from_env()
        self.network = self.client.networks.create(self.NETWORK, internal=True)

    def scale(self, count: int) -> float:
        from concurrent.futures import ThreadPoolExecutor

        api = self.client.api
        existing = api.containers(all=True, filters={"label": "flotilla-bench-raw"})
        start = time.monotonic()
        if count > 1:
            def one(i: int) -> None:
                created = api.create_container(
                    IMAGE, name=f"flotilla-bench-raw-{i}", labels={"flotilla-bench-raw": "1"},
                    host_config=api.create_host_config(network_mode=self.NETWORK, init=True),
                )
                api.start(created["Id"])

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(2, count + 1)))
        else:
            for container in existing:
                api.remove_container(container["Id"], force=True)
        return time.monotonic() - start

    def teardown(self) -> None:
        if hasattr(self, "network"):
            self.scale(1)
            self.network.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--no-swarm", action="store_true",
                        help="leave Swarm out (an engine that must not become a swarm manager); no ratio to it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        spec, warm = Path(tmp) / "flotilla.yaml", Path(tmp) / "standby.yaml"
        spec.write_text(SPEC)
        warm.write_text(standby_spec(standby=args.replicas - 1, port=free_port()))
        flotilla = FlotillaSide(Path(tmp) / "home")
        sides = {"flotilla": flotilla, "standby": StandbySide(flotilla), "swarm": SwarmSide(),
                 "docker": RawDockerSide()}
        if args.no_swarm:
            del sides["swarm"]
        try:
            sides["flotilla"].setup(spec)
            sides["standby"].setup(warm)
            for name in ("swarm", "docker"):
                if name in sides:
                    sides[name].setup()
            results = run_rounds(sides, rounds=args.rounds, replicas=args.replicas)
        finally:
            for side in sides.values():
                side.teardown()
    report(results, replicas=args.replicas)


def run_rounds(sides: dict, *, rounds: int, replicas: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in sides}
    for number in range(1, rounds + 1):
        for name, side in sides.items():
            results[name].append(side.scale(replicas))
            side.scale(1)
        print(f"round {number}: " + ", ".join(f"{n} {r[-1]:.2f}s" for n, r in results.items()), flush=True)
    return results


def report(results: dict[str, list[float]], *, replicas: int) -> None:
    ours, warm, floor = (statistics.median(results[n]) for n in ("flotilla", "standby", "docker"))
    print(f"scale 1 -> {replicas}, median of {len(results['flotilla'])} rounds:")
    print(f"  flotilla (all healthy):               {ours:.2f}s")
    print(f"  {f'flotilla, standby {replicas - 1} (all routed):':<37} {warm:.2f}s")
    if "swarm" in results:
        swarm = statistics.median(results["swarm"])
        print(f"  swarm    (all running):               {swarm:.2f}s")
    print(f"  docker create+start only (floor):     {floor:.2f}s")
    if "swarm" in results:
        print(f"  ratio flotilla/swarm:                 {ours / swarm:.2f}  (aim: <= 0.50)")
        print(f"  ratio flotilla with standby/swarm:    {warm / swarm:.2f}  (aim: <= 0.50)")
    print(f"  ratio flotilla/floor:                 {ours / floor:.2f}")
    print(f"  ratio flotilla with standby/floor:    {warm / floor:.2f}")


if __name__ == "__main__":
    main()
