"""Names of the objects Flotilla creates, derived from the spec alone.

Names are deterministic: the same app, service, slot and config always give
the same container name, so creating a replica twice (say, after the daemon
was killed mid-plan) meets a name conflict instead of making a duplicate.
"""

import hashlib
import re
from pathlib import Path


def internal_network(app: str) -> str:
    """The app's private network: every replica, no route out, no host ports."""
    return f"flotilla-{app}-internal"


def egress_network(app: str) -> str:
    """Joined only by services with ``egress: true``: their way out of the host."""
    return f"flotilla-{app}-egress"


def cache_network(app: str, cache: str) -> str:
    """A cache's own network: its nodes and the services that list it, nothing else; no route out."""
    return f"flotilla-{app}-cache-{cache}"


def cache_of_network(app: str, network: str) -> str | None:
    """The cache whose own network ``network`` is (``flotilla-shop-cache-sessions`` -> ``sessions``); else None."""
    prefix = f"flotilla-{app}-cache-"
    if network.startswith(prefix) and len(network) > len(prefix):
        return network[len(prefix):]
    return None


CACHE_ADDON_PREFIX = "cache:"


def cache_addon(cache: str) -> str:
    """What marks a service as a node of ``cache`` (its ``addon``, and its planner group): ``cache:sessions``."""
    return CACHE_ADDON_PREFIX + cache


def cache_of_addon(addon: str | None) -> str | None:
    """The cache a service with ``addon`` is a node of; None for a service no cache made."""
    if addon and addon.startswith(CACHE_ADDON_PREFIX):
        return addon[len(CACHE_ADDON_PREFIX):]
    return None


def replica_name(service: str, index: int) -> str:
    """What a replica is called by users and by itself: ``web-3``."""
    return f"{service}-{index}"


def container_name(*, app: str, service: str, index: int, config_hash: str) -> str:
    return f"{app}-{service}-{index}-{config_hash[:6]}"


def cache_node(cache: str, *, shard: int, ordinal: int) -> str:
    """A cache node, also its service and DNS name: ``sessions-0-1`` is shard 0, ordinal 1."""
    return f"{cache}-{shard}-{ordinal}"


def cache_node_place(cache: str, name: str) -> tuple[int, int] | None:
    """``(shard, ordinal)`` of a node of ``cache`` by its name (``sessions-3-1`` -> (3, 1)); None for other names."""
    match = re.fullmatch(rf"{re.escape(cache)}-(\d+)-(\d+)", name)
    return (int(match[1]), int(match[2])) if match else None


def is_cache_node(cache: str, name: str) -> bool:
    """Whether ``name`` has the shape of a node of ``cache`` (``sessions-3-1``)."""
    return cache_node_place(cache, name) is not None


def cache_variables(cache: str) -> tuple[str, str]:
    """What a service listing ``cache`` receives: ``(SESSIONS_REDIS_NODES, SESSIONS_REDIS_PASSWORD)``."""
    prefix = cache.upper().replace("-", "_")
    return f"{prefix}_REDIS_NODES", f"{prefix}_REDIS_PASSWORD"


def cache_password_secret(cache: str) -> str:
    """The vault secret holding a cache's password (generated when absent)."""
    return f"{cache}-redis-password"


def volume_name(*, app: str, service: str, index: int, volume: str) -> str:
    """A replica slot's own volume; it outlives the slot's containers, not the slot."""
    return f"flotilla-{app}-{service}-{index}-{volume}"


def home_identity(home: Path) -> str:
    """A daemon home's id on a shared host: its owner label on Docker and its directory on the secrets tmpfs."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]


TASK_MARK = "_task_"  # "_" is in no service name, so no replica name has it


def task_name(*, app: str, kind: str, subject: str, suffix: str) -> str:
    """A task container's name (daemon/tasks.py): ``shop_task_job-report-1764745200``."""
    return f"{app}{TASK_MARK}{kind}-{subject}-{suffix}"


def is_task_name(app: str, name: str) -> bool:
    return name.startswith(f"{app}{TASK_MARK}")
