"""Warm standby against real Docker and HAProxy: standby replicas run and are probed, get no request,
and a scale-up routes them at once, without starting a container for them."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.cli import app_status, ps
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker


def spec(app: str, port: int) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  catalog:
    image: shop-catalog:1
    port: 8000
    replicas: 1
    standby: 2
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes:
      - {{host: shop.localhost, path: /}}
"""


def served_by(port: int, requests: int) -> set[str]:
    seen = set()
    for _ in range(requests):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/items", headers={"Host": "shop.localhost"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            seen.add(json.load(answer)["served_by"]["replica"])
    return seen


def by_replica(flotilla, app: str) -> dict[str, dict]:
    return {row["replica"]: row for row in ps(flotilla, app)}


def test_standby_replicas_wait_out_of_rotation_and_a_scale_up_routes_them_without_a_start(
        flotilla, app_name, tmp_path):
    port = free_port()
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec(app_name, port))), "--timeout", "90")
    rows = by_replica(flotilla, app_name)
    assert sorted(rows) == ["catalog-1", "catalog-2", "catalog-3"]
    assert [rows[r]["standby"] for r in sorted(rows)] == [False, True, True]
    assert all(row["healthy"] for row in rows.values())  # probed like any replica
    assert served_by(port, 20) == {"catalog-1"}  # but given nothing

    warm = {r: rows[r]["container_id"] for r in ("catalog-2", "catalog-3")}
    flotilla.run("scale", app_name, "catalog=3")
    wait_for(lambda: served_by(port, 30) == {"catalog-1", "catalog-2", "catalog-3"}, timeout=10,
             what="the standby replicas to serve")
    after = by_replica(flotilla, app_name)
    assert {r: after[r]["container_id"] for r in warm} == warm  # the same containers: routed, not started
    wait_for(lambda: app_status(flotilla, app_name)["converged"], timeout=60, what="two new standby replicas")
    after = by_replica(flotilla, app_name)
    assert sorted(r for r, row in after.items() if row["standby"]) == ["catalog-4", "catalog-5"]

    flotilla.run("scale", app_name, "catalog=1")  # back: serving slots become standby, 4 and 5 go
    wait_for(lambda: sorted(by_replica(flotilla, app_name)) == ["catalog-1", "catalog-2", "catalog-3"],
             timeout=60, what="the scale-down to 1 + 2 standby")
    wait_for(lambda: served_by(port, 20) == {"catalog-1"}, timeout=10, what="standby out of rotation again")
