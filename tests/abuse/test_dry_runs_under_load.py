"""``flotilla plan`` under load changes nothing: 0 failed requests, health and gateway untouched.

Before, a dry run pointed the running replicas' probes at the dry-run spec's
port and health path until the app's next pass; two failed probes took them
out of the gateway, and 12 dry runs under load failed 13 of 300 requests.
"""

from __future__ import annotations

import pytest

from tests.support.cli import ps
from tests.support.load import shop_traffic, wait_for_answers
from tests.support.ports import free_port
from tests.support.specs import routed_spec

pytestmark = pytest.mark.docker
DRY_RUNS = 12


def test_dry_runs_of_another_port_and_health_path_fail_no_request(flotilla, app_name, tmp_path):
    port = free_port()
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, routed_spec(app_name, port))), "--timeout", "90")
    before = {r["container_id"]: (r["healthy"], r["gateway"]) for r in ps(flotilla, app_name)}
    moved = routed_spec(app_name, port, replicas=4).replace("port: 8000", "port: 9000").replace(
        "path: /healthz", "path: /nothing-here")
    dry = flotilla.write_spec(tmp_path, moved, "moved.yaml")
    with shop_traffic(port) as load:
        wait_for_answers(load, 100)
        for _ in range(DRY_RUNS):
            planned = flotilla.run("plan", "-f", str(dry))
            assert "web-3" in planned.stdout  # it did plan changes
            wait_for_answers(load, 25)
        wait_for_answers(load, 100)  # two failed probes' worth of time, and more
    result = load.stop()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    after = {r["container_id"]: (r["healthy"], r["gateway"]) for r in ps(flotilla, app_name)}
    assert after == before
    assert all(healthy for healthy, _ in after.values())
