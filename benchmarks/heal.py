"""Benchmark: healing a killed replica, Flotilla against Docker's own restart policy.

Both run on this host, in one run, on the same image (shop-catalog:1, with an
init process, on an internal network), for several rounds. Each round kills
one replica the way a crash would: SIGKILL to the container's init process,
sent from the host (``docker kill`` would not do for the baseline: Docker
never restarts a container it was told to kill). Measured from the kill:

* Flotilla: until the replacement replica answers ``GET /healthz`` with 200 at
  its address, and until the daemon reports the app converged again (the
  replacement healthy by its own probe: what the end-to-end test bounds);
* Docker: a plain container with ``--restart=always``, until it answers
  ``GET /healthz`` with 200 again.

Every round kills a replica that never failed before, on both sides, so
neither Flotilla's crash-loop back-off nor Docker's growing restart delay (it
starts at 100 ms) comes into it. Prints each round, the medians and the ratio
against Docker's (lower is better; the aim is a healthy replacement within 2 s).
Flotilla's app is ``benchheal``, removed with ``flotilla down``; the baseline's
containers and network are labelled ``io.flotilla.benchmark=heal`` (not as an
app, so the daemon leaves them alone) and removed by that label. Both go at
the end, pass or fail.

    .venv/bin/python benchmarks/heal.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from flotilla.daemon.client import DaemonClient  # noqa: E402
from flotilla.daemon.paths import Home  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

APP = "benchheal"
IMAGE = "shop-catalog:1"
PORT = 8000
ROUND_TIMEOUT = 60.0  # seconds a heal may take before the benchmark gives up
BASELINE_NETWORK = f"{APP}-restart-policy"
BASELINE_LABEL = {"io.flotilla.benchmark": "heal"}


def spec(replicas: int) -> str:
    return f"""\
app: {APP}
services:
  web:
    image: {IMAGE}
    port: {PORT}
    replicas: {replicas}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
"""


def answers_healthz(ip: str | None) -> bool:
    if not ip:
        return False
    conn = http.client.HTTPConnection(ip, PORT, timeout=0.25)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def ip_on(container, network: str) -> str | None:
    return (container.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress") or None


def crash(container) -> float:
    """SIGKILL the container's init process from the host, as a crash would; returns when it was sent."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return killed_at


class FlotillaSide:
    def __init__(self, tmp: Path, replicas: int) -> None:
        self.tmp, self.replicas = tmp, replicas
        self.home = Home(tmp / "home")
        self.env = {**os.environ, "FLOTILLA_HOME": str(self.home.root), "PYTHONPATH": str(REPO / "src")}
        self.docker = docker.from_env(timeout=60)
        self.network = f"flotilla-{APP}-internal"

    def flotilla(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", *args], env=self.env, check=True,
                       capture_output=True, text=True, timeout=300)

    def setup(self) -> None:
        path = self.tmp / "flotilla.yaml"
        path.write_text(spec(self.replicas))
        self.flotilla("up", "-f", str(path), "--timeout", "120")
        self.client = DaemonClient.connect(self.home)

    def replica(self, slot: int, *, not_id: str | None = None):
        found = self.docker.containers.list(filters={
            "label": [f"io.flotilla.app={APP}", "io.flotilla.service=web", f"io.flotilla.replica={slot}"],
            "status": "running"})
        return next((c for c in found if c.id != not_id), None)

    def converged_without(self, old_id: str) -> bool:
        status = self.client.request("GET", f"/v1/apps/{APP}")
        return status["converged"] and old_id not in {r["container_id"] for r in status["replicas"]}

    def heal(self, slot: int) -> tuple[float, float]:
        """Kill replica ``slot``; seconds until its replacement answers, and until the daemon says healthy."""
        wait_for(lambda: self.client.request("GET", f"/v1/apps/{APP}")["converged"], timeout=ROUND_TIMEOUT,
                 what="the app converged before the kill")
        victim = self.replica(slot)
        killed_at = crash(victim)

        def replacement_answers() -> bool:
            fresh = self.replica(slot, not_id=victim.id)
            return bool(fresh) and answers_healthz(ip_on(fresh, self.network))

        wait_for(replacement_answers, timeout=ROUND_TIMEOUT, interval=0.01, what=f"web-{slot}'s replacement")
        answering = time.monotonic() - killed_at
        wait_for(lambda: self.converged_without(victim.id), timeout=ROUND_TIMEOUT, interval=0.01,
                 what="the daemon to report the replacement healthy")
        return answering, time.monotonic() - killed_at

    def teardown(self) -> None:
        subprocess.run([sys.executable, "-m", "flotilla", "down", APP], env=self.env, capture_output=True,
                       timeout=120)
        pid = self.home.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)


class RestartPolicySide:
    """The baseline: plain containers of the same image that Docker itself restarts (``--restart=always``)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.docker = docker.from_env(timeout=60)
        self.containers: list = []

    def setup(self) -> None:
        self.docker.networks.create(BASELINE_NETWORK, internal=True, labels=BASELINE_LABEL)
        for slot in range(1, self.replicas + 1):
            self.containers.append(self.docker.containers.run(
                IMAGE, detach=True, name=f"{APP}-restart-{slot}", network=BASELINE_NETWORK, init=True,
                restart_policy={"Name": "always"}, labels=BASELINE_LABEL,
                environment={"FLOTILLA_APP": APP, "FLOTILLA_SERVICE": "web", "FLOTILLA_REPLICA": str(slot)}))
        for container in self.containers:
            wait_for(lambda c=container: self.answering(c), timeout=ROUND_TIMEOUT, what=f"{container.name} to start")

    def answering(self, container) -> bool:
        container.reload()
        return answers_healthz(ip_on(container, BASELINE_NETWORK))

    def heal(self, slot: int) -> float:
        """Kill container ``slot``; seconds until Docker has restarted it and it answers."""
        container = self.containers[slot - 1]
        killed_at = crash(container)
        wait_for(lambda: self.answering(container), timeout=ROUND_TIMEOUT, interval=0.01,
                 what=f"{container.name} restarted by Docker")
        return time.monotonic() - killed_at

    def teardown(self) -> None:
        label = {"label": "io.flotilla.benchmark=heal"}
        for container in self.docker.containers.list(all=True, filters=label):
            container.remove(force=True)
        for network in self.docker.networks.list(filters=label):
            network.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        ours, baseline = FlotillaSide(Path(tmp), args.rounds), RestartPolicySide(args.rounds)
        try:
            ours.setup()
            baseline.setup()
            results = run_rounds(ours, baseline, rounds=args.rounds)
        finally:
            ours.teardown()
            baseline.teardown()
    report(results)


def run_rounds(ours: FlotillaSide, baseline: RestartPolicySide, *, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"answering": [], "healthy": [], "docker": []}
    for slot in range(1, rounds + 1):
        answering, healthy = ours.heal(slot)
        results["answering"].append(answering)
        results["healthy"].append(healthy)
        results["docker"].append(baseline.heal(slot))
        print(f"round {slot}: flotilla answering {answering:.2f}s, healthy {healthy:.2f}s; "
              f"docker restart answering {results['docker'][-1]:.2f}s", flush=True)
    return results


def report(results: dict[str, list[float]]) -> None:
    answering, healthy, restart = (statistics.median(results[n]) for n in ("answering", "healthy", "docker"))
    print(f"heal of a killed replica, median of {len(results['docker'])} rounds:")
    print(f"  flotilla, replacement answering:       {answering:.2f}s")
    print(f"  flotilla, replacement healthy (probe): {healthy:.2f}s   (aim: within 2 s)")
    print(f"  docker --restart=always, answering:    {restart:.2f}s")
    print(f"  ratio flotilla/docker (answering):     {answering / restart:.2f}")
    print(f"  ratio flotilla healthy/docker:         {healthy / restart:.2f}")


if __name__ == "__main__":
    main()
