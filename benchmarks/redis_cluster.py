"""Benchmark: a Flotilla Redis Cluster against one plain redis-server, and its failover time.

Brings up an app with a 3 x 1 ``redis-cluster`` cache, then in one run:

* throughput: ``redis-benchmark --cluster`` against the cluster and
  ``redis-benchmark`` against one plain ``redis-server`` (same image, same
  network, same settings but cluster mode, both without persistence), each
  run from a container on the app's network; prints requests/s of SET and
  GET and the ratio cluster / single;
* failover: ``--kills`` times, the current master of shard 0 is killed
  (``docker kill``) while a client writes keys of that shard; the time from
  the kill to the first write that succeeds again (MOVED followed to the
  promoted replica) is measured. Between kills the cluster is left to heal
  (the old master returns as a replica). Prints p50 and max.

    .venv/bin/python benchmarks/redis_cluster.py [--kills 5] [--requests 100000] [--clients 50]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import redis
import redis.crc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from flotilla.daemon.client import DaemonClient  # noqa: E402
from flotilla.daemon.paths import Home  # noqa: E402
from tests.support.sessions import SessionClient, docker_resolver  # noqa: E402

APP = "benchredis"
IMAGE = os.environ.get("FLOTILLA_REDIS_IMAGE", "flotilla/redis:bookworm")
SPEC = f"""\
app: {APP}
caches:
  sessions: {{type: redis-cluster, shards: 3, replicas: 1, memory: 256M, persistence: none, image: {IMAGE}}}
services:
  client:
    image: shop-catalog:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    caches: [sessions]
"""
NETWORK = f"flotilla-{APP}-internal"
_RPS = re.compile(r'"(SET|GET)","([\d.]+)"')


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = Home(tmp / "home")
        self.env = {**os.environ, "FLOTILLA_HOME": str(self.home.root), "PYTHONPATH": str(REPO / "src")}
        self.docker = docker.from_env(timeout=120)
        self.plain = None

    def flotilla(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "flotilla", *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=300).stdout

    def up(self) -> None:
        path = self.tmp / "flotilla.yaml"
        path.write_text(SPEC)
        self.flotilla("up", "-f", str(path), "--timeout", "180")
        self.client = DaemonClient.connect(self.home)
        self.password = self.flotilla("secrets", "get", APP, "sessions-redis-password", "--reveal").strip()

    def cache(self) -> dict:
        return self.client.request("GET", f"/v1/apps/{APP}")["caches"][0]

    def master_of_shard0(self) -> dict:
        return next(n for n in self.cache()["nodes"] if n["role"] == "master" and n["shard"] == 0 and n["slot_count"])

    # -- throughput ---------------------------------------------------------------------

    def start_plain(self) -> str:
        self.plain = self.docker.containers.run(
            IMAGE, ["sh", "-c", 'exec redis-server --save "" --appendonly no --requirepass "$PW"'],
            detach=True, network=NETWORK, environment={"PW": self.password}, name=f"{APP}-plain-redis",
            labels={"io.flotilla.app": APP, "io.flotilla.role": "benchmark"})
        time.sleep(1.0)
        return self.plain.name

    def redis_benchmark(self, host: str, *, cluster: bool, requests: int, clients: int) -> dict[str, float]:
        argv = ["redis-benchmark", "-h", host, "-p", "6379", "-t", "set,get", "-n", str(requests),
                "-c", str(clients), "-d", "256", "-r", "100000", "--csv", *(["--cluster"] if cluster else [])]
        script = 'exec "$@" -a "$PW"'  # the password from the environment, not from this argv
        output = self.docker.containers.run(
            IMAGE, ["sh", "-c", script, "redis-benchmark", *argv], remove=True, network=NETWORK,
            environment={"PW": self.password},
            labels={"io.flotilla.app": APP, "io.flotilla.role": "benchmark"}).decode()
        found = {kind: float(rps) for kind, rps in _RPS.findall(output)}
        if set(found) != {"SET", "GET"}:
            raise SystemExit(f"benchmark: could not read redis-benchmark's output:\n{output}")
        return found

    # -- failover -------------------------------------------------------------------------

    def failover_once(self) -> float:
        self.wait(lambda: self.cache()["ready"], what="the cache to be ready")
        master = self.master_of_shard0()
        slots = master["slots"]
        writer = SessionClient(seeds=["sessions-1-0", "sessions-2-0", "sessions-0-0"], password=self.password,
                               resolve=docker_resolver(self.docker, APP), retry_window=30.0, timeout=0.5)
        keys = [k for k in (f"probe:{i}" for i in range(5000)) if _in(slots, redis.crc.key_slot(k.encode()))][:50]
        writer.write(keys[0], "warm", wait_ms=100)
        container = self.docker.containers.list(
            filters={"label": [f"io.flotilla.app={APP}", f"io.flotilla.service={master['name']}"]})[0]
        killed = time.monotonic()
        container.kill()
        time.sleep(0.05)
        writer.write(keys[1], "after", replicas=0, wait_ms=1)  # retried until the shard takes writes again
        took = time.monotonic() - killed
        writer.close()
        self.wait(lambda: self.master_of_shard0()["name"] != master["name"] and self.cache()["ready"],
                  what="the promoted replica and the old master back as its replica", timeout=60)
        return took

    def wait(self, predicate, *, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"benchmark: timed out waiting for {what}")
            time.sleep(0.1)

    def teardown(self) -> None:
        if self.plain is not None:
            self.plain.remove(force=True)
        subprocess.run([sys.executable, "-m", "flotilla", "down", APP], env=self.env, capture_output=True)
        pid = self.home.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)


def _in(ranges: list[list[int]], slot: int) -> bool:
    return any(a <= slot <= b for a, b in ranges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="masters to kill for the failover time")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per redis-benchmark test")
    parser.add_argument("--clients", type=int, default=50, help="redis-benchmark's parallel connections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            bench.up()
            plain = bench.redis_benchmark(bench.start_plain(), cluster=False, requests=args.requests,
                                          clients=args.clients)
            cluster = bench.redis_benchmark("sessions-0-0", cluster=True, requests=args.requests,
                                            clients=args.clients)
            failovers = []
            for number in range(1, args.kills + 1):
                failovers.append(bench.failover_once())
                print(f"kill {number}: writes back after {failovers[-1]:.2f}s", flush=True)
        finally:
            bench.teardown()
    report(plain, cluster, failovers, args)


def report(plain: dict, cluster: dict, failovers: list[float], args) -> None:
    print(f"redis-benchmark, {args.requests} requests x SET and GET, {args.clients} connections, 256-byte values:")
    for kind in ("SET", "GET"):
        print(f"  {kind}: cluster 3x1 {cluster[kind]:>9.0f} req/s   single redis-server {plain[kind]:>9.0f} req/s"
              f"   ratio {cluster[kind] / plain[kind]:.2f}")
    print(f"failover of a master, {len(failovers)} kills: writes back after p50 {statistics.median(failovers):.2f}s, "
          f"max {max(failovers):.2f}s   (aim: within 3 s)")


if __name__ == "__main__":
    main()
