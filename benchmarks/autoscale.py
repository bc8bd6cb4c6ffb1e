"""Benchmark: Flotilla's autoscaler on 4x load steps, against the Kubernetes HPA's algorithm on the same trace.

The replicas are worker pools (tests/support/bounded_worker.py): at most 4
requests at once, 503 after 5 s waiting inside, 200 ms of work each. The
service has ``concurrency: 4`` (the gateway gives a replica at most 4 and
queues the rest, 10 s at most) and is autoscaled on a concurrency target of 3.
Each round starts from 1 replica under 15 req/s, then steps to 60 req/s
(4x): 60 x 0.2 s = 12 in flight, a need of N = ceil(12 / 3) = 4 replicas.
Measured per round, all in this run against this host's clock:

* decision: from the load step to the autoscaler's first scale-up event;
* capacity: from the load step to the first new replica in the gateway;
* peak: the most replicas desired during the step, against N (overshoot);
* where the capacity time goes, for the first replica the step added: decision,
  Docker's ``create`` and ``start`` events (from the daemon's event stream),
  the start call returned (Flotilla's ``create`` event), first healthy probe
  (its ``health`` event), in the gateway (polled every 0.1 s);
* failed: requests that did not get a 200 (the load generator's own count).

The gateway's request rate is recorded each second of every step, and the
Kubernetes HPA's algorithm (15 s sync period, metrics averaged over 15 s,
10% tolerance, the default scale-up policy: the larger of +100% and +4 pods
per 15 s, no stabilisation up) is replayed on that same trace, its new pods
serving after the capacity time Flotilla measured here, with the same 4 per
pod and 10 s queue: both on identical input, in one run.

Then the same service with min 0 is left idle until it is at zero, and one
request is timed (cold start: held at the gateway while a replica starts).

With ``--standby N`` the service keeps N warm replicas out of rotation
(docs/spec.md), so new capacity is a change of the gateway's servers; the
cold start is still measured without them.

    .venv/bin/python benchmarks/autoscale.py [--rounds 5] [--standby 3]
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
from tests.support.bounded_worker import IMAGE, PORT, bounded_worker_command  # noqa: E402
from tests.support.load import LoadGenerator  # noqa: E402

APP = "benchscale-auto"
WORK_MS = 200
LIMIT = 4  # requests one replica serves at once (its pool, and the gateway's concurrency)
TARGET = 3  # the autoscaler's concurrency target per replica
QUEUE_TIMEOUT = 10.0
BASE_RATE = 15.0
STEP_SECONDS = 15


def spec(port: int, *, minimum: int, standby: int = 0) -> str:
    return f"""\
app: {APP}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  worker:
    image: {IMAGE}
    command: {bounded_worker_command()}
    port: {PORT}
    replicas: 1
    env: {{SLOTS: "{LIMIT}", WAIT: "5"}}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes: [{{host: work.localhost, path: /}}]
    concurrency: {LIMIT}
    queue_timeout: {QUEUE_TIMEOUT:g}s
    autoscale: {{min: {minimum}, max: 12, target: {{concurrency: {TARGET}}}, scale_down_delay: 5s}}
    standby: {standby}
"""


class Bench:
    standby = 0  # warm replicas: the first added replica is a promoted one, nothing is created for it

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
        return _in_gateway(self.status())

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

    def load(self, rate: float, seconds: float) -> LoadGenerator:
        return LoadGenerator(host="127.0.0.1", port=self.port, host_header="work.localhost", rate=rate,
                             max_seconds=seconds, paths=(f"/work?ms={WORK_MS}",), post_every=0, timeout=30,
                             workers=480)

    def arrivals(self) -> float:
        rows = self.client.request("GET", f"/v1/apps/{APP}/metrics")["services"]
        return next((r["arrival_rps"] for r in rows if r["service"] == "worker"), 0.0)

    def round(self, rate: float) -> dict:
        self.wait(lambda: self.desired() == 1 and len(self.in_gateway()) == 1)
        with self.load(BASE_RATE, 3) as base:
            base_result = base.wait()
        before = self.in_gateway()
        last_event = self.client.request("GET", f"/v1/apps/{APP}/events", query={"limit": 1})["events"][-1]["id"]
        step_wall, step = time.time(), time.monotonic()
        capacity, peak, trace, next_sample = None, 1, [], step + 1
        with self.load(rate, STEP_SECONDS) as load:
            while time.monotonic() - step < STEP_SECONDS:  # one status call per 0.1 s: more starves the load
                status = self.status()
                peak = max(peak, status["services"][0]["desired"])
                if capacity is None and _in_gateway(status) - before:
                    capacity = time.monotonic() - step
                if time.monotonic() >= next_sample:
                    trace.append(self.arrivals())
                    next_sample += 1
                time.sleep(0.1)
            result = load.wait()
        events = self.client.request("GET", f"/v1/apps/{APP}/events", query={"since": last_event})["events"]
        ups = [e for e in events if e["kind"] == "autoscale"]
        decision = ups[0]["time"] - step_wall if ups else None
        gateway = step_wall + capacity if capacity is not None else None
        return {"decision": decision, "capacity": capacity, "peak": peak, "trace": [BASE_RATE] * 5 + trace,
                "failed": result.failed + base_result.failed, "sent": result.sent + base_result.sent,
                "lag": result.max_lag, "decisions": [(e["time"] - step_wall, e["message"]) for e in ups],
                "stages": (promoted(events, gateway=gateway) if self.standby
                           else stages(events, docker_events(step_wall), gateway=gateway)),
                "reason": ups[0]["message"] if ups else ""}

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


STAGES = ("decision", "docker create", "docker start", "start returned", "healthy", "in gateway")


def docker_events(since: float) -> list[dict]:
    """Docker's own create/start events of the app's replicas since ``since`` (wall clock)."""
    import docker  # the benchmark's dependency only

    api = docker.APIClient()
    try:
        found = api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "container", "label": f"io.flotilla.app={APP}",
                                    "event": ["create", "start"]})
        return list(found)
    finally:
        api.close()


def promoted(events: list[dict], *, gateway: float | None) -> dict[str, float]:
    """With warm standby, the only stage: from the first decision to a standby replica in the gateway."""
    ups = [e for e in events if e["kind"] == "autoscale"]
    if not ups or gateway is None:
        return {}
    return {"decision": 0.0, "in gateway": gateway - ups[0]["time"]}


def stages(events: list[dict], docker: list[dict], *, gateway: float | None) -> dict[str, float]:
    """When each stage of the first added replica ended, in seconds after the first decision."""
    ups = [e for e in events if e["kind"] == "autoscale"]
    created = [e for e in events if e["kind"] == "create" and ups and e["time"] >= ups[0]["time"]]
    if not created:
        return {}
    replica, decided = created[0]["subject"], ups[0]["time"]  # e.g. "worker-2"
    index = replica.rsplit("-", 1)[-1]
    times = {"decision": decided, "start returned": created[0]["time"]}
    for kind in ("create", "start"):
        found = [d["timeNano"] / 1e9 for d in docker if d.get("status", d.get("Action")) == kind
                 and d["Actor"]["Attributes"].get("io.flotilla.replica") == index and d["timeNano"] / 1e9 >= decided]
        if found:
            times[f"docker {kind}"] = min(found)
    healthy = [e["time"] for e in events if e["kind"] == "health" and e["subject"] == replica
               and e["message"].startswith("healthy") and e["time"] >= decided]
    if healthy:
        times["healthy"] = healthy[0]
    if gateway is not None:
        times["in gateway"] = gateway
    return {stage: times[stage] - decided for stage in STAGES if stage in times}


def breakdown(rounds: list[dict]) -> str:
    """Median time of each stage after the one before it, over the rounds."""
    parts, before = [], "decision"
    for stage in STAGES[1:]:
        gaps = [r["stages"][stage] - r["stages"][before] for r in rounds
                if stage in r["stages"] and before in r["stages"]]
        if gaps:
            parts.append(f"{stage} +{statistics.median(gaps):.2f}s")
            before = stage
    return ", ".join(parts) or "no replica was added"


def _in_gateway(status: dict) -> set[str]:
    return {r["container_id"] for r in status["replicas"] if r["gateway"] == "ready"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# -- the Kubernetes HPA's algorithm, replayed on the recorded trace -----------------------------

HPA_SYNC = 15  # --horizontal-pod-autoscaler-sync-period
HPA_METRICS = 15  # metrics-server's resolution: the value is the mean of the last 15 s
HPA_TOLERANCE = 0.10


def hpa_replay(trace: list[float], *, start_delay: float) -> dict:
    """The HPA on a per-second trace of arrivals: decision, capacity, peak and failed requests.

    Its metric is concurrency per pod (what a KEDA/Prometheus trigger on in-flight requests gives):
    the mean over the last 15 s of (in flight + queued) / pods, from a queue model of the same pods
    (4 at once each, FIFO, 10 s queue timeout). New pods serve ``start_delay`` s after the decision.
    """
    pods, pending, backlog, failed, peak, decision = 1, [], [], 0.0, 1, None
    history: list[float] = []
    step_at = next((i for i, r in enumerate(trace) if r > BASE_RATE * 1.5), 0)
    for second, rate in enumerate(trace):
        pods = max([pods] + [n for at, n in pending if at <= second])
        backlog.append([second, rate])  # a cohort of arrivals, oldest first
        failed += _expire(backlog, now=second)
        in_queue = sum(c[1] for c in backlog)
        _serve(backlog, per_second=pods * LIMIT / (WORK_MS / 1000))
        history.append(min(in_queue, pods * LIMIT) + max(0.0, in_queue - pods * LIMIT / (WORK_MS / 1000)))
        if second % HPA_SYNC == HPA_SYNC - 1:
            wanted = _hpa_desired(pods, history[-HPA_METRICS:])
            if wanted > pods and decision is None and second >= step_at:
                decision = second - step_at + 1
            if wanted != pods:
                pending.append((second + start_delay, wanted)) if wanted > pods else None
                peak = max(peak, wanted)
    capacity = decision + start_delay if decision is not None else None
    return {"decision": decision, "capacity": capacity, "peak": peak, "failed": round(failed)}


def _hpa_desired(pods: int, window: list[float]) -> int:
    per_pod = (sum(window) / len(window)) * (WORK_MS / 1000) / pods if window else 0.0
    ratio = per_pod / TARGET
    if abs(ratio - 1) <= HPA_TOLERANCE:
        return pods
    wanted = math.ceil(pods * ratio)
    return min(wanted, max(2 * pods, pods + 4), 12)  # default scale-up policy, and the spec's max


def _expire(backlog: list[list[float]], *, now: int) -> float:
    gone = 0.0
    while backlog and now - backlog[0][0] >= QUEUE_TIMEOUT:
        gone += backlog.pop(0)[1]
    return gone


def _serve(backlog: list[list[float]], *, per_second: float) -> None:
    while backlog and per_second > 0:
        taken = min(per_second, backlog[0][1])
        backlog[0][1] -= taken
        per_second -= taken
        if backlog[0][1] <= 1e-9:
            backlog.pop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=BASE_RATE * 4, help="requests/s of each load step")
    parser.add_argument("--standby", type=int, default=0,
                        help="warm standby replicas (docs/spec.md): a scale-up routes them at once")
    args = parser.parse_args()
    needed = math.ceil(args.rate * WORK_MS / 1000 / TARGET)
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-") as tmp:
        bench = Bench(Path(tmp) / "home", free_port())
        bench.standby = args.standby
        try:
            bench.up(spec(bench.port, minimum=1, standby=args.standby), Path(tmp))
            rounds = []
            for number in range(1, args.rounds + 1):
                r = bench.round(args.rate)
                rounds.append(r)
                print(f"round {number}: decision {r['decision']:.2f}s, capacity {r['capacity']:.2f}s, "
                      f"peak {r['peak']}, failed {r['failed']} of {r['sent']}: {r['reason']}", flush=True)
                print(f"  arrivals per second at the gateway (the load generator's most late: {r['lag']:.2f}s):",
                      " ".join(f"{x:.0f}" for x in r["trace"][5:]), flush=True)
                print("  stages after the decision:", ", ".join(f"{k} {v:.2f}s" for k, v in r["stages"].items()))
                for at, message in r["decisions"]:
                    print(f"  {at:5.2f}s {message}", flush=True)
            bench.up(spec(bench.port, minimum=0), Path(tmp))
            colds = [bench.cold_start() for _ in range(3)]
        finally:
            bench.teardown()
    report(rounds, colds, needed=needed, rate=args.rate)


def report(rounds: list[dict], colds: list[float], *, needed: int, rate: float) -> None:
    decisions = [r["decision"] for r in rounds if r["decision"] is not None]
    capacities = [r["capacity"] for r in rounds if r["capacity"] is not None]
    peaks = [r["peak"] for r in rounds]
    failed, sent = sum(r["failed"] for r in rounds), sum(r["sent"] for r in rounds)
    start = statistics.median(c - d for c, d in zip(capacities, decisions)) if capacities else 2.0
    hpa = [hpa_replay(r["trace"] + [rate] * 45, start_delay=start) for r in rounds]  # the step held for 1 min
    print(f"{len(rounds)} steps of {BASE_RATE:g} -> {rate:g} req/s x {WORK_MS} ms, {LIMIT} per replica at most, "
          f"target {TARGET}: {needed} replicas needed")
    print(f"                 Flotilla            HPA replay (same trace, pods start in {start:.2f}s)")
    print(f"  decision p95   {pct(decisions, .95):6.2f}s   {_p95(hpa, 'decision'):>14}    (aim: <= 1 s)")
    print(f"  capacity p95   {pct(capacities, .95):6.2f}s   {_p95(hpa, 'capacity'):>14}    (aim: <= 2 s)")
    print(f"  peak / need    {max(peaks) / needed:6.2f}x   {max(h['peak'] for h in hpa) / needed:13.2f}x    "
          f"(aim: <= 1.25x; {max(peaks)} for {needed})")
    print(f"  decision -> serving, medians: {breakdown(rounds)}")
    print(f"  failed         {failed:>6} of {sent}   {sum(h['failed'] for h in hpa):>8}    (aim: 0)")
    print(f"  cold start from zero: p50 {statistics.median(colds):.2f}s, max {max(colds):.2f}s   (aim: under 2 s)")


def _p95(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{pct(values, .95):.2f}s" if values else "never"


if __name__ == "__main__":
    main()
