"""A cache in the spec becomes node services and consumer wiring (pure, no Docker)."""

from __future__ import annotations

from flotilla.addons.redis_cluster.nodes import (
    DEFAULT_IMAGE,
    RESTART_DELAY,
    cache_of,
    node_command,
    with_cache_nodes,
)
from flotilla.spec import config_hash, parse_spec
from flotilla.spec.models import VolumeSpec

SPEC = """\
app: shop
caches:
  sessions: {type: redis-cluster, shards: 3, replicas: 1, memory: 64M, persistence: aof}
services:
  web:
    image: shop-web:1
    port: 8000
    env: {LOG_LEVEL: info}
    caches: [sessions]
  catalog: {image: shop-catalog:1, port: 8000}
"""


def spec(text: str = SPEC):
    return parse_spec(text, filename="flotilla.yaml", environ={})


def test_every_node_of_the_shape_becomes_a_one_replica_service():
    expanded = with_cache_nodes(spec())
    nodes = sorted(n for n, s in expanded.services.items() if cache_of(s) == "sessions")
    assert nodes == ["sessions-0-0", "sessions-0-1", "sessions-1-0", "sessions-1-1", "sessions-2-0", "sessions-2-1"]
    node = expanded.services["sessions-1-0"]
    assert node.replicas == 1 and node.port == 6379 and node.image == DEFAULT_IMAGE
    assert node.volumes == {"data": VolumeSpec(path="/data")} and node.restart_delay == RESTART_DELAY
    assert node.secrets == {"REDIS_PASSWORD": "sessions-redis-password"}
    assert node.resources.memory > 64 * 2**20  # room above maxmemory
    assert not node.routes


def test_consumers_get_the_nodes_by_name_and_the_password_as_a_secret():
    web = with_cache_nodes(spec()).services["web"]
    assert web.env["SESSIONS_REDIS_NODES"].split(",") == [
        f"sessions-{s}-{o}:6379" for s in range(3) for o in range(2)
    ]
    assert web.env["LOG_LEVEL"] == "info"
    assert web.secrets == {"SESSIONS_REDIS_PASSWORD": "sessions-redis-password"}
    assert "SESSIONS_REDIS_NODES" not in with_cache_nodes(spec()).services["catalog"].env


def test_the_password_never_appears_on_the_command_line():
    command = node_command("sessions-0-0", spec().caches["sessions"])
    assert "$REDIS_PASSWORD" in command[2]  # read by the shell from the injected secret
    assert "--cluster-announce-hostname" in command and "sessions-0-0" in command
    assert command[command.index("--cluster-node-timeout") + 1] == "1000"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_settings_change_the_node_hash_and_replica_count_does_not():
    base = with_cache_nodes(spec())
    bigger = with_cache_nodes(spec(SPEC.replace("memory: 64M", "memory: 96M")))
    more = with_cache_nodes(spec(SPEC.replace("shards: 3", "shards: 4")))
    assert config_hash(base, "sessions-0-0") != config_hash(bigger, "sessions-0-0")
    assert "sessions-3-1" in more.services
    # the consumer's list of nodes changed, so it rolls; node 0-0 itself does not
    assert config_hash(base, "sessions-0-0") == config_hash(more, "sessions-0-0")
    assert config_hash(base, "web") != config_hash(more, "web")


def test_kept_nodes_stay_while_their_slots_move_away():
    smaller = spec(SPEC.replace("replicas: 1", "replicas: 0"))
    kept = with_cache_nodes(smaller, keep={"sessions": frozenset({"sessions-3-0", "sessions-0-0"})})
    assert "sessions-3-0" in kept.services and "sessions-0-1" not in kept.services
    assert "sessions-3-0" not in kept.services["web"].env["SESSIONS_REDIS_NODES"]
    assert kept.services["sessions-0-0"].restart_delay == 0  # no replica to take over


def test_an_image_setting_and_the_spec_image_pick_the_redis_image():
    assert with_cache_nodes(spec(), image="redis:7").services["sessions-0-0"].image == "redis:7"
    pinned = spec(SPEC.replace("persistence: aof", "persistence: aof, image: my/redis:7.2"))
    assert with_cache_nodes(pinned, image="redis:7").services["sessions-0-0"].image == "my/redis:7.2"


def test_a_spec_without_caches_is_returned_as_is():
    plain = spec("app: shop\nservices:\n  web: {image: x}\n")
    assert with_cache_nodes(plain) is plain
