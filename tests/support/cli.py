"""What a test reads about an app it brought up: its replicas, its status, its containers.

Why it exists: most integration tests ask the same questions after a change
(which replicas are there, has the app converged, what does a replica see
from inside the app's network) and must ask them the way a user would: through
``flotilla ps --json``, the daemon's API that the CLI itself uses, and
``docker exec``. One copy of each question here, instead of one per test module.
"""

from __future__ import annotations

from tests.support.waiting import wait_for


def ps(flotilla, app: str) -> list[dict]:
    """One row per replica, as ``flotilla ps APP --json`` prints them."""
    return flotilla.json("ps", app)


def container_ids(flotilla, app: str) -> set[str]:
    """The ids of the app's replica containers, from ``flotilla ps``."""
    return {r["container_id"] for r in ps(flotilla, app)}


def app_status(flotilla, app: str) -> dict:
    """The daemon's status of ``app`` (what ``flotilla up --wait`` watches): converged, replicas, services, caches."""
    return flotilla.client().request("GET", f"/v1/apps/{app}")


def converged(flotilla, app: str) -> bool:
    """Whether every replica of ``app`` runs the current config and is healthy."""
    return bool(app_status(flotilla, app)["converged"])


def in_container(docker_client, container_id: str, code: str) -> str:
    """Run Python ``code`` inside the container (``docker exec``) and return what it printed."""
    result = docker_client.containers.get(container_id).exec_run(["python3", "-c", code])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


def labelled_containers(docker_client, app: str) -> list:
    """Every container labelled for ``app``, running or not, straight from Docker."""
    return docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app}"})


def labelled_container_count(docker_client, app: str) -> int:
    """How many containers are labelled for ``app``, in one cheap call (ids only), for tight polls."""
    return len(docker_client.api.containers(all=True, quiet=True, filters={"label": f"io.flotilla.app={app}"}))


def task_containers(docker_client, app: str) -> list[str]:
    """The names of the app's task containers (``flotilla run``, job runs, before_deploy), running or not.

    One listing call: ``containers.list`` inspects each container it found, and
    fails when one is removed in between, which is what these tests wait for.
    """
    found = docker_client.api.containers(all=True, filters={"label": [f"io.flotilla.app={app}",
                                                                      "io.flotilla.role=task"]})
    return [c["Names"][0].lstrip("/") for c in found]


def killed_run_leaves_no_container(cli, docker_client, app: str) -> None:
    """Once ``cli`` (a ``flotilla run`` process) has its container, SIGKILL it: the daemon removes the container."""
    try:
        wait_for(lambda: task_containers(docker_client, app), timeout=30, what="the run's container")
        cli.kill()
        cli.wait(timeout=10)
        wait_for(lambda: not task_containers(docker_client, app), timeout=20, what="the container removed")
    finally:
        cli.kill()
        cli.wait(timeout=10)
