"""The redis-cluster cache end to end: real Docker, real Redis 7, the daemon keeping it.

Formation (3x1, 3x2, checked by ``redis-cli --cluster check``), a master
killed under a session workload, every node restarted at new IPs, shards
3 -> 4 -> 3 under a workload, and no Redis port reachable from outside.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.conftest import BASE_IMAGE
from tests.support.cli import app_status
from tests.support.sessions import SessionClient, Workload, docker_resolver, missing, write_sessions
from tests.support.specs import cache_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

# Timing aims are measured by benchmarks, against baselines from the same run; the
# bounds here are margins that hold on a loaded 2-core machine (3x the aim or more).
FAILOVER_AIM = 3.0  # seconds until writes succeed again after a master dies: benchmarks/redis_cluster.py
FAILOVER_BOUND = 10.0  # once measured at 3.02 s under load
RECOVERY_AIM = 30.0  # seconds until cluster_state:ok after every node restarted: no benchmark yet, printed here
RECOVERY_BOUND = 3 * RECOVERY_AIM


def up(flotilla, tmp_path, text: str, timeout: float = 120) -> str:
    spec = flotilla.write_spec(tmp_path, text)
    return flotilla.run("up", "-f", str(spec), "--timeout", str(timeout), timeout=timeout + 30).stdout


def cache_network(app: str) -> str:
    return f"flotilla-{app}-cache-sessions"


def cache(flotilla, app: str) -> dict:
    return next(c for c in app_status(flotilla, app)["caches"] if c["name"] == "sessions")


def password(flotilla, app: str) -> str:
    return flotilla.run("secrets", "get", app, "sessions-redis-password", "--reveal").stdout.strip()


def session_client(flotilla, app: str, docker_client, **kwargs) -> SessionClient:
    return SessionClient(seeds=["sessions-0-0", "sessions-1-0", "sessions-2-0"], password=password(flotilla, app),
                         resolve=docker_resolver(docker_client, app), **kwargs)


def node_container(docker_client, app: str, node: str):
    found = docker_client.containers.list(
        filters={"label": [f"io.flotilla.app={app}", f"io.flotilla.service={node}"], "status": "running"})
    assert len(found) == 1, f"{node}: {len(found)} running containers"
    return found[0]


def cluster_check(flotilla, app: str, docker_client) -> str:
    node = node_container(docker_client, app, "sessions-0-0")
    result = node.exec_run(["redis-cli", "--cluster", "check", "sessions-0-0:6379"],
                           environment={"REDISCLI_AUTH": password(flotilla, app)})
    output = result.output.decode()
    assert result.exit_code == 0 and "[ERR]" not in output and "[WARNING]" not in output, output
    assert "[OK] All 16384 slots covered." in output, output
    return output


def masters(state: dict) -> dict[int, dict]:
    return {n["shard"]: n for n in state["nodes"] if n["role"] == "master" and n["slot_count"]}


@pytest.mark.parametrize(("shards", "replicas"), [(3, 1), (3, 2)])
def test_formation_is_checked_by_redis_cli_and_idempotent(flotilla, app_name, tmp_path, docker_client,
                                                          shards, replicas):
    up(flotilla, tmp_path, cache_spec(app_name, shards=shards, replicas=replicas))
    state = cache(flotilla, app_name)
    assert state["ready"], state["reason"]
    assert all(n["ready"] and n["link"] == "up" for n in state["nodes"]), state["nodes"]
    output = cluster_check(flotilla, app_name, docker_client)
    assert output.count("M: ") == shards and output.count("S: ") == shards * replicas
    by_shard = masters(state)
    assert sorted(by_shard) == list(range(shards))
    assert sorted(n["slot_count"] for n in by_shard.values()) == [5461, 5461, 5462]
    for shard, master in by_shard.items():
        followers = [n for n in state["nodes"] if n["master"] == master["name"] and n["link"] == "up"]
        assert len(followers) == replicas and all(n["shard"] == shard for n in followers)
    # the consumer is wired to every node by name, the password only as a secret
    env = node_container_env(docker_client, app_name, "cart")
    assert env["SESSIONS_REDIS_NODES"].count(":6379") == shards * (1 + replicas)
    assert "SESSIONS_REDIS_PASSWORD" not in env  # injected at start, never in the container's config
    # running `up` again changes nothing
    before = last_event(flotilla, app_name)
    assert "up to date, nothing to change" in up_stderr(flotilla, tmp_path, cache_spec(
        app_name, shards=shards, replicas=replicas))
    time.sleep(2)  # not a synchronisation: time passes, to show the second `up` set nothing in motion
    assert not [e for e in events_since(flotilla, app_name, before) if e["kind"] in ("cache", "create", "remove")]


def node_container_env(docker_client, app: str, service: str) -> dict[str, str]:
    container = docker_client.containers.list(
        filters={"label": [f"io.flotilla.app={app}", f"io.flotilla.service={service}"]})[0]
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def up_stderr(flotilla, tmp_path, text: str) -> str:
    spec = flotilla.write_spec(tmp_path, text)
    return flotilla.run("up", "-f", str(spec), "--timeout", "60").stderr


def last_event(flotilla, app: str) -> int:
    found = flotilla.json("events", app, "--limit", "1")
    return found[-1]["id"] if found else 0


def events_since(flotilla, app: str, since: int) -> list[dict]:
    return flotilla.json("events", app, "--since", str(since))


def test_killed_master_fails_over_without_losing_acknowledged_sessions(flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, cache_spec(app_name))
    client = session_client(flotilla, app_name, docker_client)
    sessions = write_sessions(client, 10_000)
    victim = masters(cache(flotilla, app_name))[0]
    assert victim["name"] == "sessions-0-0"
    workload = Workload(session_client(flotilla, app_name, docker_client, retry_window=5.0)).start()
    wait_for(lambda: len(workload.acked) >= 50, timeout=30, what="the workload's first 50 acknowledged writes")
    killed_at = time.monotonic()
    node_container(docker_client, app_name, victim["name"]).kill()

    def promoted() -> bool:
        state = cache(flotilla, app_name)
        shard0 = masters(state).get(0)
        old = next((n for n in state["nodes"] if n["name"] == victim["name"] and n["reachable"]), None)
        return bool(shard0 and shard0["name"] == "sessions-0-1" and old and old["role"] == "replica"
                    and old["link"] == "up" and state["ready"])

    wait_for(promoted, timeout=40, what="the replica promoted and the old master back as its replica")
    healed_at = len(workload.acked)
    wait_for(lambda: len(workload.acked) >= healed_at + 50, timeout=30, what="50 more writes on the healed shard")
    workload.stop()
    gap = workload.longest_gap(after=killed_at - 0.5)
    print(f"writes paused for {gap:.2f}s after the kill (aim: {FAILOVER_AIM:.0f} s)")  # shown with -s
    assert gap <= FAILOVER_BOUND, f"writes failed for {gap:.2f}s after the master died"
    assert not workload.failures, workload.failures[:5]
    assert not workload.wrong_reads, workload.wrong_reads[:5]
    assert len(workload.acked) > 100
    assert missing(client, sessions) == []
    assert missing(client, workload.acked) == []
    cluster_check(flotilla, app_name, docker_client)


def test_every_node_restarted_at_new_ips_recovers_with_its_data(flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, cache_spec(app_name))
    client = session_client(flotilla, app_name, docker_client)
    sessions = write_sessions(client, 2_000)
    nodes = [n["name"] for n in cache(flotilla, app_name)["nodes"]]
    containers = [node_container(docker_client, app_name, n) for n in nodes]
    old_ips = {c.attrs["NetworkSettings"]["Networks"][cache_network(app_name)]["IPAddress"]
               for c in containers}
    with concurrent.futures.ThreadPoolExecutor(len(containers)) as pool:
        list(pool.map(lambda c: c.stop(timeout=5), containers))
    stopped_at = time.monotonic()
    # Docker hands freed addresses out again; taking them first makes every node come back elsewhere.
    squatters = [squat(docker_client, app_name) for _ in old_ips]

    def recovered() -> bool:
        state = cache(flotilla, app_name)
        ips = {n["ip"] for n in state["nodes"] if n["reachable"]}
        return state["ready"] and len(ips) == len(nodes) and not ips & old_ips

    wait_for(recovered, timeout=RECOVERY_BOUND, what="cluster_state:ok at new IPs", interval=0.25)
    took = time.monotonic() - stopped_at
    print(f"recovered in {took:.1f}s (aim: {RECOVERY_AIM:.0f} s)")
    info = node_container(docker_client, app_name, "sessions-1-0").exec_run(
        ["redis-cli", "cluster", "info"], environment={"REDISCLI_AUTH": password(flotilla, app_name)})
    assert "cluster_state:ok" in info.output.decode()
    client.close()
    assert missing(client, sessions) == []
    cluster_check(flotilla, app_name, docker_client)
    for squatter in squatters:
        squatter.remove(force=True)


def squat(docker_client, app: str):
    """A container that holds one address on the cache's network and does nothing."""
    return docker_client.containers.run(
        BASE_IMAGE, ["sleep", "600"], detach=True, network=cache_network(app),
        labels={"io.flotilla.app": app, "io.flotilla.role": "test-squatter"})


def test_shards_grow_and_shrink_under_a_session_workload(flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, cache_spec(app_name))
    client = session_client(flotilla, app_name, docker_client)
    sessions = write_sessions(client, 5_000)
    workload = Workload(session_client(flotilla, app_name, docker_client, retry_window=5.0)).start()
    up(flotilla, tmp_path, cache_spec(app_name, shards=4), timeout=180)
    state = cache(flotilla, app_name)
    assert sorted(n["slot_count"] for n in masters(state).values()) == [4096] * 4
    cluster_check(flotilla, app_name, docker_client)
    assert missing(client, sessions) == []

    up(flotilla, tmp_path, cache_spec(app_name, shards=3), timeout=180)
    workload.stop()
    state = cache(flotilla, app_name)
    assert sorted(n["slot_count"] for n in masters(state).values()) == [5461, 5461, 5462]
    assert not [n for n in state["nodes"] if n["name"].startswith("sessions-3-")]
    assert not docker_client.volumes.list(filters={"label": f"io.flotilla.app={app_name}", "name": "sessions-3-"})
    cluster_check(flotilla, app_name, docker_client)
    assert not workload.failures, workload.failures[:5]
    assert not workload.wrong_reads, workload.wrong_reads[:5]
    assert len(workload.acked) > 100
    assert missing(client, sessions) == []
    assert missing(client, workload.acked) == []


def test_a_node_that_lost_its_volume_comes_back_as_a_replica(flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, cache_spec(app_name))
    client = session_client(flotilla, app_name, docker_client)
    sessions = write_sessions(client, 2_000)
    victim = masters(cache(flotilla, app_name))[1]
    old_id = victim["node_id"]
    node_container(docker_client, app_name, victim["name"]).remove(force=True)
    docker_client.volumes.get(f"flotilla-{app_name}-{victim['name']}-1-data").remove(force=True)

    def rejoined() -> bool:
        state = cache(flotilla, app_name)
        node = next((n for n in state["nodes"] if n["name"] == victim["name"] and n["reachable"]), None)
        return bool(state["ready"] and node and node["node_id"] != old_id and node["role"] == "replica")

    wait_for(rejoined, timeout=40, what=f"{victim['name']} back, empty, as a replica of its shard")
    state = cache(flotilla, app_name)
    assert old_id not in {n["node_id"] for n in state["nodes"]}  # the lost id was forgotten
    assert masters(state)[1]["name"] == "sessions-1-1"
    assert missing(client, sessions) == []
    cluster_check(flotilla, app_name, docker_client)


def test_a_setting_change_restarts_the_nodes_one_at_a_time(flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, cache_spec(app_name))
    client = session_client(flotilla, app_name, docker_client)
    sessions = write_sessions(client, 2_000)
    before = {n: node_container(docker_client, app_name, n).id for n in (
        "sessions-0-0", "sessions-0-1", "sessions-1-0", "sessions-1-1", "sessions-2-0", "sessions-2-1")}
    since = last_event(flotilla, app_name)
    workload = Workload(session_client(flotilla, app_name, docker_client, retry_window=5.0)).start()
    up(flotilla, tmp_path, cache_spec(app_name).replace("memory: 48M", "memory: 64M"), timeout=180)
    workload.stop()
    after = {n: node_container(docker_client, app_name, n).id for n in before}
    assert not set(before.values()) & set(after.values())  # every node restarted, with its volume
    node_events = [e for e in events_since(flotilla, app_name, since)
                   if e["kind"] in ("create", "remove") and e["subject"].startswith("sessions-")]
    down_at_once, most = 0, 0
    for event in node_events:  # never two nodes down at once
        down_at_once += 1 if event["kind"] == "remove" else -1
        most = max(most, down_at_once)
    assert most == 1, [f"{e['kind']} {e['subject']}" for e in node_events]
    assert not workload.failures, workload.failures[:5]
    assert missing(client, sessions) == [] and missing(client, workload.acked) == []
    cluster_check(flotilla, app_name, docker_client)


def test_no_redis_port_answers_from_outside(flotilla, app_name, tmp_path, docker_client):
    from tests.support.netns import outside_host

    up(flotilla, tmp_path, cache_spec(app_name))
    state = cache(flotilla, app_name)
    ips = [n["ip"] for n in state["nodes"]]
    with outside_host() as outside:
        subnet = docker_client.networks.get(cache_network(app_name)).attrs["IPAM"]["Config"][0]["Subnet"]
        outside.add_route(subnet, via=outside.host_ip)
        for ip in ips:
            for port in (6379, 16379):
                assert not outside.tcp_connect(ip, port), f"{ip}:{port} answered from outside"
        assert not outside.tcp_connect(outside.host_ip, 6379)
    for node in state["nodes"]:
        container = node_container(docker_client, app_name, node["name"])
        assert not any(container.attrs["NetworkSettings"]["Ports"].values() or [None])
    # the nodes do answer on the app's side, so the checks above are not vacuous
    client = session_client(flotilla, app_name, docker_client)
    assert client.write("probe", "1") and client.read("probe") == "1"
