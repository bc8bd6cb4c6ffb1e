"""A service that does not list a cache cannot reach it: the attack of issue 13, break 1, tried again.

Before, every replica shared the app's network with the cache's nodes, and the
cluster bus (16379) has no password: a rogue ``redis-server`` started in a
service that did not list the cache ran ``CLUSTER MEET``, joined, took a slot,
and the keeper then made a Redis node of that service. Now each cache has a
network of its own that only its nodes and its consumers join. Here the
attacker knows every node's address (read from Docker) and tries anyway.
"""

from __future__ import annotations

import pytest

from tests.integration.test_redis_cluster import cache, cache_network, cluster_check, node_container, password, up
from tests.support.cli import app_status
from tests.support.specs import cache_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

ROGUE_PORT = 7000


def spec(app: str) -> str:
    """The cache and its consumer, beside a service that does not list the cache."""
    return cache_spec(app, persistence="none") + """\
  intruder:
    image: flotilla/redis:bookworm
    command: [sleep, infinity]
"""


def sh(container, script: str) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", script])
    return result.exit_code, result.output.decode(errors="replace")


def addresses(docker_client, app: str, service: str) -> list[str]:
    """Every address the service's container has, on any network."""
    networks = node_container(docker_client, app, service).attrs["NetworkSettings"]["Networks"]
    return [net["IPAddress"] for net in networks.values() if net.get("IPAddress")]


def cluster_node_ids(docker_client, app: str, secret: str) -> set[str]:
    result = node_container(docker_client, app, "sessions-0-0").exec_run(
        ["redis-cli", "cluster", "nodes"], environment={"REDISCLI_AUTH": secret})
    return {line.split()[0] for line in result.output.decode().splitlines() if line.strip()}


def test_a_rogue_node_in_a_service_that_does_not_list_the_cache_reaches_no_node(
        flotilla, app_name, tmp_path, docker_client):
    up(flotilla, tmp_path, spec(app_name))
    secret = password(flotilla, app_name)
    nodes_before = cluster_node_ids(docker_client, app_name, secret)
    assert len(nodes_before) == 6
    intruder = node_container(docker_client, app_name, "intruder")
    assert cache_network(app_name) not in intruder.attrs["NetworkSettings"]["Networks"]
    node_ips = [ip for s in range(3) for o in range(2)
                for ip in addresses(docker_client, app_name, f"sessions-{s}-{o}")]

    code, out = sh(intruder, f"redis-server --port {ROGUE_PORT} --cluster-enabled yes --dir /tmp "
                             "--cluster-config-file rogue.conf --cluster-node-timeout 1000 --daemonize yes "
                             f"&& sleep 0.5 && redis-cli -p {ROGUE_PORT} ping")
    assert code == 0 and "PONG" in out, out  # the rogue runs
    for ip in node_ips:  # it asks to meet every node, on its client port and so on its bus port
        code, out = sh(intruder, f"redis-cli -p {ROGUE_PORT} cluster meet {ip} 6379")
        assert "OK" in out, out  # MEET only starts a handshake; whether it succeeds is checked below
    code, out = sh(intruder, f"sleep 3; redis-cli -p {ROGUE_PORT} cluster nodes")  # 3 node timeouts
    rogue_view = [line for line in out.splitlines() if line.strip() and "myself" not in line]
    assert not [line for line in rogue_view if "handshake" not in line and "noaddr" not in line], rogue_view

    assert cluster_node_ids(docker_client, app_name, secret) == nodes_before  # no stranger got in
    for name in ("sessions-0-0", "sessions-2-1"):
        code, out = sh(intruder, f"getent hosts {name}")
        assert code != 0, f"{name} resolves from a service that does not list the cache: {out}"
    for ip in node_ips:
        for port in (6379, 16379):
            code, out = sh(intruder, f"timeout 2 redis-cli -h {ip} -p {port} ping")
            assert code != 0 and "PONG" not in out, f"{ip}:{port} answered the intruder: {out}"
    state = cache(flotilla, app_name)
    assert state["ready"], state["reason"]
    assert node_container(docker_client, app_name, "intruder").id == intruder.id  # left alone
    assert node_container(docker_client, app_name, "intruder").image.tags == intruder.image.tags
    events = flotilla.json("events", app_name)
    assert not [e for e in events if e["kind"] == "cache" and "forget" in e["message"]], events
    cluster_check(flotilla, app_name, docker_client)


def consumer_spec(app: str) -> str:
    return f"""\
app: {app}
caches:
  sessions: {{type: redis-cluster, shards: 3, replicas: 1, memory: 48M, persistence: none}}
services:
  cart:
    image: flotilla/redis:bookworm
    command: [sleep, infinity]
    caches: [sessions]
"""


def test_a_rogue_node_started_by_a_consumer_is_forgotten_never_counted_never_made_a_service(
        flotilla, app_name, tmp_path, docker_client):
    """A consumer can reach the bus; the keeper must still not take a stranger's word."""
    up(flotilla, tmp_path, consumer_spec(app_name))
    secret = password(flotilla, app_name)
    nodes_before = cluster_node_ids(docker_client, app_name, secret)
    cart = node_container(docker_client, app_name, "cart")
    target = addresses(docker_client, app_name, "sessions-0-0")[0]
    # it calls itself `cart`, meets a node and claims slot 0 with a newer epoch
    code, out = sh(cart, f"redis-server --port {ROGUE_PORT} --cluster-enabled yes --dir /tmp "
                         "--cluster-config-file rogue.conf --cluster-node-timeout 1000 --daemonize yes "
                         "--cluster-announce-hostname cart --cluster-preferred-endpoint-type hostname "
                         f"&& sleep 0.5 && redis-cli -p {ROGUE_PORT} cluster meet {target} 6379 && sleep 2 "
                         f"&& redis-cli -p {ROGUE_PORT} cluster setslot 0 node $(redis-cli -p {ROGUE_PORT} "
                         f"cluster myid) && redis-cli -p {ROGUE_PORT} cluster bumpepoch")
    assert code == 0, out
    rogue_id = sh(cart, f"redis-cli -p {ROGUE_PORT} cluster myid")[1].strip()

    def forgotten() -> bool:
        found = [e for e in flotilla.json("events", app_name)
                 if e["kind"] == "cache" and rogue_id[:8] in e["message"]]
        return bool(found) and rogue_id not in cluster_node_ids(docker_client, app_name, secret)

    wait_for(forgotten, timeout=20, what="the keeper forgetting the rogue node")
    wait_for(lambda: cache(flotilla, app_name)["ready"], timeout=30, what="the cache ready again")
    state = cache(flotilla, app_name)
    assert rogue_id not in {n["node_id"] for n in state["nodes"]}  # never counted
    assert cluster_node_ids(docker_client, app_name, secret) == nodes_before
    after = node_container(docker_client, app_name, "cart")
    assert (after.id, after.attrs["Config"]["Cmd"]) == (cart.id, cart.attrs["Config"]["Cmd"])  # still cart
    names = {s["name"] for s in app_status(flotilla, app_name)["services"]}
    assert names == {"cart", *(f"sessions-{s}-{o}" for s in range(3) for o in range(2))}
    cluster_check(flotilla, app_name, docker_client)
