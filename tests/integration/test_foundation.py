"""The foundation end to end, through the CLI, on the real Docker Engine."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from tests.conftest import BASE_IMAGE
from tests.support.cli import (
    app_status,
    container_ids,
    converged,
    in_container,
    labelled_container_count,
    labelled_containers,
    ps,
)
from tests.support.specs import shop_demo
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker


def shop_without_cache(app: str, *, replicas: int = 2) -> str:
    """The demo's spec as ``app`` on a free gateway port, without its sessions cache: no Redis, so fast."""
    spec = shop_demo(app)
    spec.pop("caches", None)
    for service in spec["services"].values():
        service.pop("caches", None)
        service["replicas"] = replicas
    return yaml.safe_dump(spec, sort_keys=False)


def catalog_only(app: str, replicas: int = 1, extra: str = "") -> str:
    return f"""\
app: {app}
services:
  catalog:
    image: shop-catalog:1
    port: 8000
    replicas: {replicas}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
{extra}"""


def test_demo_comes_up_and_services_find_each_other_by_name(flotilla, app_name, tmp_path, docker_client):
    spec = flotilla.write_spec(tmp_path, shop_without_cache(app_name))
    up = flotilla.run("up", "-f", str(spec), "--timeout", "90")
    assert f"{app_name} is up: 6 replica(s) healthy" in up.stdout
    assert "ready: web 2/2, catalog 2/2, cart 2/2" in up.stderr
    rows = ps(flotilla, app_name)
    assert sorted(r["replica"] for r in rows) == ["cart-1", "cart-2", "catalog-1", "catalog-2", "web-1", "web-2"]
    assert all(r["healthy"] and r["state"] == "running" and r["ip"] for r in rows)
    web = next(r for r in rows if r["service"] == "web")
    seen = in_container(docker_client, web["container_id"], """
import json, urllib.request
seen = set()
for _ in range(20):
    seen.add(json.load(urllib.request.urlopen("http://catalog:8000/whoami", timeout=2))["replica"])
print(json.dumps(sorted(seen)))
""")
    assert len(json.loads(seen)) >= 2, seen
    page = in_container(docker_client, web["container_id"], """
import urllib.request
print(urllib.request.urlopen("http://web:8000/?user=ann", timeout=5).read().decode())
""")
    assert "catalog" in page.lower()


def test_an_unknown_name_fails_fast_inside_the_app(flotilla, app_name, tmp_path, docker_client):
    """Docker's DNS never answers for an unknown name on an internal network; the
    resolver must give up in about a second, not 10 (a client looking up a
    replica that is being replaced would stall that long)."""
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name))))
    replica = ps(flotilla, app_name)[0]
    took = float(in_container(docker_client, replica["container_id"], """
import socket, time
started = time.monotonic()
try:
    socket.getaddrinfo("no-such-service", 8000)
except socket.gaierror:
    pass
print(time.monotonic() - started)
"""))
    # The aim is about 1 s (resolv.conf's timeout:1 attempts:1); without those options a
    # lookup takes 10 s or more. 5 s is the margin that holds on a loaded 2-core machine
    # and still tells the two apart.
    assert took < 5.0, f"an unknown name took {took:.1f}s to fail"


def test_replicas_know_who_they_are_and_publish_no_port(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name))))
    row = ps(flotilla, app_name)[0]
    container = docker_client.containers.get(row["container_id"])
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert (env["FLOTILLA_APP"], env["FLOTILLA_SERVICE"], env["FLOTILLA_REPLICA"]) == (app_name, "catalog", "catalog-1")
    assert container.attrs["HostConfig"]["PortBindings"] in (None, {})
    assert container.attrs["NetworkSettings"]["Ports"] in (None, {}) or all(
        v is None for v in container.attrs["NetworkSettings"]["Ports"].values()
    )
    labels = container.labels
    assert labels["io.flotilla.app"] == app_name and labels["io.flotilla.service"] == "catalog"
    assert labels["io.flotilla.replica"] == "1" and len(labels["io.flotilla.config-hash"]) == 12
    network = docker_client.networks.get(f"flotilla-{app_name}-internal")
    assert network.attrs["Internal"] is True


def test_resource_limits_reach_the_container(flotilla, app_name, tmp_path, docker_client):
    spec = catalog_only(app_name) + "    resources: {cpus: 0.5, memory: 96M}\n"
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)))
    host = docker_client.containers.get(ps(flotilla, app_name)[0]["container_id"]).attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 96 * 1024 * 1024


def test_scale_one_to_five_to_two_converges(flotilla, app_name, tmp_path):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 1))))
    for count in (5, 2):
        flotilla.run("scale", app_name, f"catalog={count}", "--wait", "--timeout", "60")
        rows = ps(flotilla, app_name)
        assert sorted(r["replica"] for r in rows) == [f"catalog-{i}" for i in range(1, count + 1)]
        assert all(r["healthy"] for r in rows)


# The aim is 2 s from the kill to a healthy replacement; benchmarks/heal.py measures it,
# against Docker's own restart policy. The bound here is 4x the aim, a margin that holds
# on a loaded 2-core machine while still failing a heal that waits for anything slow.
HEAL_BOUND = 8.0


def test_killed_replica_is_replaced_and_healthy_within_the_heal_bound(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 2))))
    victim = ps(flotilla, app_name)[0]
    killed_at = time.monotonic()
    docker_client.containers.get(victim["container_id"]).kill()

    def healed():
        status = app_status(flotilla, app_name)
        replicas = status["replicas"]
        return status["converged"] and victim["container_id"] not in {r["container_id"] for r in replicas}

    wait_for(healed, timeout=HEAL_BOUND, interval=0.02, what="the killed replica to be replaced and healthy")
    elapsed = time.monotonic() - killed_at
    print(f"healed in {elapsed:.2f}s (aim: 2 s)")  # shown with -s
    assert elapsed < HEAL_BOUND
    crashes = [e for e in flotilla.json("events", app_name) if e["kind"] == "crash"]
    assert crashes and "exited with code 137" in crashes[-1]["message"]


def test_crash_loop_backs_off_and_up_reports_it(flotilla, app_name, tmp_path):
    spec = f"""\
app: {app_name}
services:
  broken:
    image: {BASE_IMAGE}
    command: ["python3", "-c", "print('cannot open config'); raise SystemExit(3)"]
"""
    started = time.monotonic()
    result = flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), "--timeout", "60", check=False)
    assert result.returncode == 1, result.stderr
    # Three failures with their back-off take about 5 s; `up` must report them then, not
    # at its 60 s timeout. 30 s is the margin for a loaded 2-core machine.
    assert time.monotonic() - started < 30
    assert "broken-1 (3 failures) keep crashing" in result.stderr
    assert "exited with code 3" in result.stderr and "cannot open config" in result.stderr
    creates = [e for e in flotilla.json("events", app_name) if e["kind"] == "create"]
    time.sleep(3)  # not a synchronisation: time passes, to show the back-off creates (almost) nothing
    later = [e for e in flotilla.json("events", app_name) if e["kind"] == "create"]
    assert len(later) - len(creates) <= 2, "a crash loop must back off, not restart in a hot loop"
    holds = [e for e in flotilla.json("events", app_name) if e["kind"] == "hold"]
    assert any("crash loop" in e["message"] for e in holds)


# Sixteen, not eight: the daemon creates replicas several at a time, and creations it has
# sent to Docker complete after it dies. With 15 to create, killing it as the first new
# one appears leaves a scale that is provably unfinished when the daemon is gone.
SCALE_TARGET = 16


def test_daemon_killed_during_scale_to_sixteen_converges_to_exactly_sixteen(
    flotilla, app_name, tmp_path, docker_client
):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 1))))
    flotilla.run("scale", app_name, f"catalog={SCALE_TARGET}")
    wait_for(lambda: labelled_container_count(docker_client, app_name) > 1, timeout=30, interval=0.01,
             what="the first new replica's container")
    flotilla.kill_daemon(signal.SIGKILL)
    at_kill = labelled_container_count(docker_client, app_name)  # the daemon is gone: no more are coming
    print(f"{at_kill} of {SCALE_TARGET} containers when the daemon died")  # shown with -s
    assert 1 < at_kill < SCALE_TARGET, f"{at_kill} containers when the daemon died: the kill was not mid-scale"
    flotilla.run("ps", app_name)  # restarts the daemon
    wait_for(lambda: converged(flotilla, app_name), timeout=90, what="convergence after the restart")
    containers = labelled_containers(docker_client, app_name)
    assert len(containers) == SCALE_TARGET, f"{at_kill} at the kill"
    assert sorted(int(c.labels["io.flotilla.replica"]) for c in containers) == list(range(1, SCALE_TARGET + 1))
    assert all(c.status == "running" for c in containers)


def test_running_services_keep_serving_while_the_daemon_is_down(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 2))))
    rows = ps(flotilla, app_name)
    flotilla.kill_daemon(signal.SIGKILL)
    for row in rows:
        assert "catalog" in in_container(docker_client, row["container_id"], """
import urllib.request
print(urllib.request.urlopen("http://catalog:8000/whoami", timeout=2).read().decode())
""")
    assert container_ids(flotilla, app_name) == {r["container_id"] for r in rows}  # adopted, not recreated


def test_down_removes_the_app_and_nothing_else(flotilla, app_name, tmp_path, docker_client):
    bystander = docker_client.containers.run(BASE_IMAGE, ["sleep", "300"], detach=True, name=f"{app_name}-bystander")
    try:
        flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, shop_without_cache(app_name, replicas=1))))
        result = flotilla.json("down", app_name)
        assert len(result["containers"]) == 3
        assert sorted(result["networks"]) == [f"flotilla-{app_name}-internal"]
        label = {"label": f"io.flotilla.app={app_name}"}
        assert docker_client.containers.list(all=True, filters=label) == []
        assert docker_client.networks.list(filters=label) == []
        bystander.reload()
        assert bystander.status == "running"
        again = flotilla.run("down", app_name, check=False)
        assert again.returncode == 3 and f"no app named '{app_name}'" in again.stderr
    finally:
        bystander.remove(force=True)


def test_a_broken_spec_changes_nothing(flotilla, app_name, tmp_path):
    good = flotilla.write_spec(tmp_path, catalog_only(app_name, 2))
    flotilla.run("up", "-f", str(good))
    running = container_ids(flotilla, app_name)
    broken = flotilla.write_spec(tmp_path, catalog_only(app_name, 3).replace("port: 8000", "port: 80000"), "bad.yaml")
    result = flotilla.run("up", "-f", str(broken), check=False)
    assert result.returncode == 2
    assert f"{broken}:5:11: services.catalog.port: must be between 1 and 65535, got 80000" in result.stderr
    missing = flotilla.write_spec(tmp_path, "pull: never\n" + catalog_only(app_name, 3).replace(
        "shop-catalog:1", "nope:404"), "m.yaml")  # never: nothing may ask docker.io from this machine
    result = flotilla.run("up", "-f", str(missing), check=False)
    assert result.returncode == 2
    assert "services.catalog.image: image 'nope:404' is not on this host" in result.stderr
    time.sleep(1)  # not a synchronisation: time passes, to show the refused specs changed nothing later either
    assert container_ids(flotilla, app_name) == running


def test_config_change_rolls_one_replica_at_a_time(flotilla, app_name, tmp_path):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 3))))
    old = container_ids(flotilla, app_name)
    changed = catalog_only(app_name, 3) + "    env: {COLOR: blue}\n"
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, changed)), "--timeout", "90")
    rows = ps(flotilla, app_name)
    assert not old & {r["container_id"] for r in rows}
    assert all(r["current"] and r["healthy"] for r in rows)
    events = [e for e in flotilla.json("events", app_name) if e["kind"] in ("create", "remove")]
    rollout = events[-6:]
    # Each slot: its replacement starts, then its old replica goes; never two slots at once.
    assert [e["kind"] for e in rollout] == ["create", "remove"] * 3
    assert [e["subject"] for e in rollout] == [
        "catalog-1", "catalog-1", "catalog-2", "catalog-2", "catalog-3", "catalog-3"]


def test_discovery_api_lists_healthy_endpoints(flotilla, app_name, tmp_path):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 2))))
    found = flotilla.client().request("GET", f"/v1/apps/{app_name}/services/catalog/endpoints")["endpoints"]
    rows = ps(flotilla, app_name)
    assert sorted((e["ip"], e["port"]) for e in found) == sorted((r["ip"], 8000) for r in rows)


def test_logs_are_prefixed_by_replica(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, catalog_only(app_name, 2))))
    for row in ps(flotilla, app_name):
        in_container(docker_client, row["container_id"], """
import urllib.request
urllib.request.urlopen("http://127.0.0.1:8000/items", timeout=2).read()
""")
    out = flotilla.run("logs", app_name, "catalog").stdout
    prefixes = {line.split(" | ", 1)[0].strip() for line in out.splitlines() if " | " in line}
    assert prefixes == {"catalog-1", "catalog-2"}


def test_dead_docker_gives_one_clear_sentence(flotilla, app_name, tmp_path):
    spec = flotilla.write_spec(tmp_path, catalog_only(app_name))
    result = flotilla.run(
        "up", "-f", str(spec), check=False, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    )
    assert result.returncode == 5
    assert "Docker Engine is not reachable" in result.stderr
    assert "Traceback" not in result.stderr
