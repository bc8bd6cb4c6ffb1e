"""Names of the objects Flotilla creates, derived from the spec alone.

Names are deterministic: the same app, service, slot and config always give
the same container name, so creating a replica twice (say, after the daemon
was killed mid-plan) meets a name conflict instead of making a duplicate.
"""


def internal_network(app: str) -> str:
    """The app's private network: every replica, no route out, no host ports."""
    return f"flotilla-{app}-internal"


def egress_network(app: str) -> str:
    """Joined only by services with ``egress: true``: their way out of the host."""
    return f"flotilla-{app}-egress"


def replica_name(service: str, index: int) -> str:
    """What a replica is called by users and by itself: ``web-3``."""
    return f"{service}-{index}"


def container_name(*, app: str, service: str, index: int, config_hash: str) -> str:
    return f"{app}-{service}-{index}-{config_hash[:6]}"
