"""The labels that mark what Flotilla owns, on every engine.

Flotilla touches no object without ``io.flotilla.app``; the other labels let
a restarted daemon rebuild its whole picture from what is running.
"""

APP = "io.flotilla.app"
SERVICE = "io.flotilla.service"
REPLICA = "io.flotilla.replica"
CONFIG_HASH = "io.flotilla.config-hash"
MANAGED_BY = "io.flotilla.managed-by"
ROLE = "io.flotilla.role"  # "replica", "network", and later "gateway", "cache-node"


def owned(app: str, *, role: str) -> dict[str, str]:
    """The labels every object of ``app`` carries."""
    return {APP: app, MANAGED_BY: "flotilla", ROLE: role}
