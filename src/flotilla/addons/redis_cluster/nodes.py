"""A cache in the spec, turned into what the rest of Flotilla already runs: services.

Each node of a ``redis-cluster`` cache becomes a one-replica service named
after the node (``sessions-0-1``), so the planner, the Docker engine, the
health prober and secret injection start, heal and replace nodes like any
replica. A node lives on its cache's own network only (``naming.cache_network``,
internal), reached there by that name; the services that list the cache join
that network too, and no other service can reach a node at all.
What makes a node a node is all here: the ``redis-server`` command line, its
own volume for ``nodes.conf`` and data, a restart delay that lets a dead
master's replica take over before the master comes back, and the password
(a vault secret) read by ``requirepass`` and ``masterauth``. Services that
list the cache get ``<NAME>_REDIS_NODES`` and ``<NAME>_REDIS_PASSWORD``.

Pure: the same spec always gives the same services, so config hashes (and
with them replacements) change exactly when the cache's settings do.
"""

from __future__ import annotations

from collections.abc import Mapping

from flotilla.addons.redis_cluster.topology import node_names
from flotilla.naming import (
    CACHE_ADDON_PREFIX,
    cache_of_addon,
    cache_password_secret,
    cache_variables,
    is_cache_node,
)
from flotilla.spec import AppSpec, CacheSpec, ServiceSpec
from flotilla.spec.models import HealthSpec, ResourcesSpec, VolumeSpec
from flotilla.spec.units import MIB

REDIS_PORT = 6379
DEFAULT_IMAGE = "flotilla/redis:bookworm"
IMAGE_SETTING = "FLOTILLA_REDIS_IMAGE"
DATA_DIR = "/data"
# Measured on one host: 1000 ms fails over in about 2.3 s; Redis' default 15 s in about 23 s.
NODE_TIMEOUT_MS = 1000
# A dead node's successor starts no sooner than this, so that when a master
# dies its replica is promoted first and the master returns as a replica.
RESTART_DELAY = 5.0
MEMORY_HEADROOM = 64 * MIB  # the container's limit above maxmemory (buffers, AOF rewrite)
ADDON_PREFIX = CACHE_ADDON_PREFIX
PASSWORD_VARIABLE = "REDIS_PASSWORD"  # inside a node's container only
# The password reaches redis-server on standard input, never on its command line.
_START_SCRIPT = (
    f'exec redis-server "$@" - <<EOF\nrequirepass ${PASSWORD_VARIABLE}\nmasterauth ${PASSWORD_VARIABLE}\nEOF\n'
)
_PERSISTENCE = {
    "aof": ("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
    "rdb": ("--appendonly", "no", "--save", "3600 1 300 100 60 10000"),
    "none": ("--appendonly", "no", "--save", ""),
}


def cache_of(service: ServiceSpec) -> str | None:
    """The cache a node service belongs to; None for any other service."""
    return cache_of_addon(service.addon)


def node_addresses(cache: str, spec: CacheSpec) -> str:
    """``<NAME>_REDIS_NODES``: every node of the shape as ``name:port``."""
    names = node_names(cache, shards=spec.shards, replicas=spec.replicas)
    return ",".join(f"{n.name}:{REDIS_PORT}" for n in names)


def node_command(node: str, spec: CacheSpec) -> tuple[str, ...]:
    args = (
        "--port", str(REDIS_PORT),
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--cluster-announce-hostname", node,
        "--cluster-preferred-endpoint-type", "hostname",
        # One shard failing over should not stop the others from serving.
        "--cluster-require-full-coverage", "no",
        "--dir", DATA_DIR,
        "--maxmemory", str(spec.memory),
        "--maxmemory-policy", "allkeys-lru",
        *_PERSISTENCE[spec.persistence],
    )
    return ("sh", "-c", _START_SCRIPT, "redis-node", *args)


def node_service(cache: str, spec: CacheSpec, *, node: str, image: str) -> ServiceSpec:
    return ServiceSpec(
        image=spec.image or image,
        command=node_command(node, spec),
        port=REDIS_PORT,
        replicas=1,
        health=HealthSpec(interval=1.0, timeout=1.0),
        resources=ResourcesSpec(memory=spec.memory + MEMORY_HEADROOM),
        secrets={PASSWORD_VARIABLE: cache_password_secret(cache)},
        volumes={"data": VolumeSpec(path=DATA_DIR)},
        restart_delay=RESTART_DELAY if spec.replicas else 0.0,
        addon=ADDON_PREFIX + cache,
        # Hardened like any replica (no capability, no-new-privileges, pids limit, no
        # core dumps), and the root read-only: redis-server writes only its /data volume.
        # The user stays the image's, uid 0 inside but with no capability, which Docker's
        # remapping makes a host uid of no one's: a new volume belongs to root unless the
        # image has a /data of its user's own, and the Debian-built image has none, so a
        # non-root redis could not write nodes.conf there.
        read_only=True,
    )


def _consumer(service: ServiceSpec, caches: Mapping[str, CacheSpec]) -> ServiceSpec:
    if not service.caches:
        return service
    env = {cache_variables(c)[0]: node_addresses(c, caches[c]) for c in service.caches}
    secrets = {cache_variables(c)[1]: cache_password_secret(c) for c in service.caches}
    return service.model_copy(update={"env": {**service.env, **env}, "secrets": {**service.secrets, **secrets}})


def with_cache_nodes(
    spec: AppSpec, *, image: str = DEFAULT_IMAGE, keep: Mapping[str, frozenset[str]] | None = None
) -> AppSpec:
    """``spec`` with a service per cache node and its consumers wired to the caches.

    ``keep`` names nodes outside a cache's shape that must stay for now (a
    master whose slots are still being moved away when shards shrink). Only
    names of the cache's node shape are kept, and never one the spec declares:
    whatever the keeper was told, it cannot turn a service into a Redis node.
    """
    if not spec.caches:
        return spec
    keep = keep or {}
    services = {name: _consumer(svc, spec.caches) for name, svc in spec.services.items()}
    for cache, cache_spec in spec.caches.items():
        shape = [n.name for n in node_names(cache, shards=cache_spec.shards, replicas=cache_spec.replicas)]
        extra = {n for n in keep.get(cache, ()) if is_cache_node(cache, n)} - set(shape) - set(spec.services)
        for node in [*shape, *sorted(extra)]:
            services[node] = node_service(cache, cache_spec, node=node, image=image)
    return spec.model_copy(update={"services": services})
