"""Benchmark: the cost of one app's reconcile pass as the number of apps on a daemon grows.

Before the daemon was split into parts, every pass of one app re-parsed and
re-observed every app to re-sync the gateway, so a pass cost O(apps). Now a
pass observes and plans its own app only; what is left that grows with the
apps is rendering the gateway's configuration text (one HAProxy config for
all apps). This measures a pass of one app on the in-memory engine
(tests/support/memory_engine.py: no Docker, so only Flotilla's own work is
timed), with the real gateway renderer standing in for HAProxy, once beside
no other app and once beside N others, and prints the ratio (1.0 = the pass
does not grow with the apps).

    .venv/bin/python benchmarks/reconcile.py [--apps 100] [--passes 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from flotilla.daemon.apps import AppRepository  # noqa: E402
from flotilla.daemon.cache_states import CacheStates  # noqa: E402
from flotilla.daemon.events import EventLog  # noqa: E402
from flotilla.daemon.reconciler import Reconciler  # noqa: E402
from flotilla.daemon.runtime import RuntimeSpecs  # noqa: E402
from flotilla.daemon.snapshots import Snapshots  # noqa: E402
from flotilla.daemon.store import Store  # noqa: E402
from flotilla.daemon.traffic import Traffic  # noqa: E402
from flotilla.daemon.wakeups import Wakeups  # noqa: E402
from flotilla.gateway.config import build_gateway_config, render_config  # noqa: E402
from flotilla.gateway.metrics import MetricsWindow  # noqa: E402
from flotilla.spec import parse_spec  # noqa: E402
from tests.support.memory_engine import FixedHealth, MemoryEngine  # noqa: E402


class RenderingGateway:
    """The gateway manager's pure half: build and render the whole config, load nothing."""

    def apply(self, specs, desired):
        render_config(build_gateway_config(specs, {}), runtime_socket="/run/bench.sock")
        return []


def spec(n: int):
    return parse_spec(f"""\
app: app{n}
services:
  web:
    image: web:1
    port: 8000
    replicas: 3
    routes: [{{host: app{n}.localhost}}]
  worker: {{image: worker:1, replicas: 2}}
""", filename="bench.yaml", environ={})


def daemon(db: Path, apps: int) -> tuple[Reconciler, MemoryEngine, FixedHealth]:
    engine, store, health = MemoryEngine(), Store(db, clock=time.time), FixedHealth()
    repo = AppRepository(store)
    snapshots = Snapshots(engine=engine, prober=health)
    states = CacheStates()
    reconciler = Reconciler(
        engine=engine, apps=repo, snapshots=snapshots, events=EventLog(store), wakeups=Wakeups(clock=time.time),
        runtime=RuntimeSpecs(cache_states=states, snapshots=snapshots, cache_image="redis"),
        crash_history=store, cache_states=states, clock=time.time,
        traffic=Traffic(gateway=RenderingGateway(), metrics=MetricsWindow(), clock=time.monotonic),
    )
    for n in range(apps + 1):
        repo.put(spec(n))
        for _ in range(3):  # converge: every app runs, so a pass of app0 changes nothing
            reconciler.reconcile(f"app{n}")
    return reconciler, engine, health


def pass_time(setup: tuple[Reconciler, MemoryEngine, FixedHealth], passes: int, *, flapping: bool) -> float:
    """Median seconds of one pass of app0; with ``flapping``, one of its replicas changes health every pass."""
    reconciler, engine, health = setup
    flapper = engine.running("app0", "web")[0].container_id
    times = []
    for _ in range(passes):
        if flapping:
            health.unhealthy ^= {flapper}
        started = time.perf_counter()
        reconciler.reconcile("app0")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        alone = daemon(Path(tmp) / "alone.db", 0)
        crowded = daemon(Path(tmp) / "crowded.db", args.apps)
        for flapping, what in ((False, "settled (routes unchanged)"), (True, "a replica's health changes")):
            one = pass_time(alone, args.passes, flapping=flapping)
            many = pass_time(crowded, args.passes, flapping=flapping)
            print(f"{what}: one app's pass alone {one * 1000:.2f} ms, beside {args.apps} apps "
                  f"{many * 1000:.2f} ms, ratio {many / one:.2f}")
    print(f"(medians of {args.passes} passes; ratio 1.0: the pass does not grow with the apps)")


if __name__ == "__main__":
    main()
