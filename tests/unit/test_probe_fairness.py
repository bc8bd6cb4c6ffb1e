"""Slow replicas of one app cannot starve another app's probes (daemon/health.py).

Pure: the probe function is a stand-in that blocks on an event for one app's
replicas, so 'slow' is a condition, not a wait on the clock.
"""

from __future__ import annotations

import threading

import pytest

from flotilla.daemon.health import PROBES_PER_APP, HealthProber, ProbeTarget, _status_code


def target(app: str, n: int) -> ProbeTarget:
    return ProbeTarget(container_id=f"{app}-{n}", app=app, replica=f"web-{n}", ip="10.0.0.1", port=8000,
                       kind="http", path="/healthz", interval=1.0, timeout=1.0)


def test_sixteen_hung_probes_of_one_app_leave_workers_for_another():
    release, other_probed = threading.Event(), threading.Event()
    started: list[str] = []

    def probe(t: ProbeTarget):
        started.append(t.app)
        if t.app == "slow":
            release.wait(30)
            return False, "hung"
        other_probed.set()
        return True, "HTTP 200"

    prober = HealthProber(on_change=lambda *a: None, clock=lambda: 0.0, probe_fn=probe, workers=16)
    prober.set_targets("slow", [target("slow", n) for n in range(16)])
    stop = threading.Event()
    loop = threading.Thread(target=prober.run, args=(stop,), daemon=True)
    loop.start()
    try:
        prober.add_target(target("fast", 1))
        assert other_probed.wait(10), "the other app's new replica was never probed"
        assert started.count("slow") == PROBES_PER_APP, "one app holds at most its share of the workers"
        assert prober.healthy("fast-1") is True
    finally:
        release.set()
        stop.set()
        loop.join(5)


@pytest.mark.parametrize(("line", "status"), [(b"HTTP/1.1 204 No Content", 204), (b"HTTP/1.0 503", 503),
                                              (b"HTTP/1.1 200 OK\r", 200)])
def test_the_status_line_gives_the_status(line, status):
    assert _status_code(line) == status


@pytest.mark.parametrize("line", [b"", b"SSH-2.0-OpenSSH", b"HTTP/1.1 abc", b"\x00\xff"])
def test_anything_else_is_a_bad_response(line):
    with pytest.raises(ValueError, match="not an HTTP status line"):
        _status_code(line)
