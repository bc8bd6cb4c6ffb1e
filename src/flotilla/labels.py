"""The labels that mark what Flotilla owns, on every engine.

Flotilla touches no object without ``io.flotilla.app``; the other labels let
a restarted daemon rebuild its whole picture from what is running. On one
Docker host, ``io.flotilla.home`` says which daemon (which ``FLOTILLA_HOME``)
owns an object: a daemon reads, changes and removes only its own.
"""

APP = "io.flotilla.app"
SERVICE = "io.flotilla.service"
REPLICA = "io.flotilla.replica"
CONFIG_HASH = "io.flotilla.config-hash"
MANAGED_BY = "io.flotilla.managed-by"
ROLE = "io.flotilla.role"  # "replica", "network", and later "gateway", "cache-node"
VOLUME = "io.flotilla.volume"  # on a volume: its name in the spec (``data``)
# On a volume of a service of the spec (not an add-on's): kept by `down` and by a service's
# removal from the spec; only `down --volumes` (or a restore) deletes it.
RETAIN = "io.flotilla.retain"
HOME = "io.flotilla.home"  # the owning daemon's home id (daemon/paths.py Home.identity)
HOME_PATH = "io.flotilla.home-path"  # that home's path, for messages only
# A task container (role "task", daemon/tasks.py): what kind ("run", "job", "before_deploy"), which job,
# the schedule time it runs for, and when it started (Unix seconds), so a restarted daemon adopts it.
TASK = "io.flotilla.task"
JOB = "io.flotilla.job"
DUE = "io.flotilla.due"
STARTED = "io.flotilla.started"


def owned(app: str, *, role: str, home: str | None = None, home_path: str | None = None) -> dict[str, str]:
    """The labels every object of ``app`` carries (with its owning home, on a shared Docker host)."""
    base = {APP: app, MANAGED_BY: "flotilla", ROLE: role}
    return {**base, HOME: home, HOME_PATH: home_path or ""} if home else base
