"""Two Flotilla homes on one Docker host: neither touches what the other owns.

Every object a daemon makes carries ``io.flotilla.home`` (its home's id); a
daemon observes, changes and removes only objects with its own. An app name
that another home already uses is refused at ``up`` and ``plan``, naming the
owner; ``down`` from the wrong home finds nothing to remove; and each home's
secrets live in their own directory of the shared tmpfs.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import BASE_IMAGE

pytestmark = pytest.mark.docker


def sleeper(app: str, replicas: int) -> str:
    return f"""\
app: {app}
services:
  worker:
    image: {BASE_IMAGE}
    command: ["sleep", "600"]
    replicas: {replicas}
"""


def replica_ids(docker_client, app: str) -> set[str]:
    found = docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app}"})
    return {c.id for c in found}


def test_a_second_home_never_touches_the_first_homes_app(flotilla, second_flotilla, app_name, tmp_path,
                                                        docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, sleeper(app_name, 2))))
    owned = replica_ids(docker_client, app_name)
    assert len(owned) == 2
    labels = docker_client.containers.get(next(iter(owned))).labels
    assert labels["io.flotilla.home-path"] == str(flotilla.home.resolve())

    other_spec = str(second_flotilla.write_spec(tmp_path, sleeper(app_name, 5), name="other.yaml"))
    for command in ("plan", "up"):
        refused = second_flotilla.run(command, "-f", other_spec, check=False)
        assert refused.returncode == 4, refused.stderr
        assert f"app {app_name} on this Docker host belongs to another Flotilla home ({flotilla.home.resolve()})" \
            in refused.stderr
    gone = second_flotilla.run("down", app_name, check=False)
    assert gone.returncode == 3 and "no app named" in gone.stderr
    assert second_flotilla.json("ps") == [], "the second home sees nothing of the first home's app"

    neighbour = f"n{uuid.uuid4().hex[:8]}"
    second_flotilla.apps.add(neighbour)
    second_flotilla.run("up", "-f", str(second_flotilla.write_spec(tmp_path, sleeper(neighbour, 1), name="n.yaml")))
    assert replica_ids(docker_client, app_name) == owned, "the first home's replicas are untouched"
    assert all(c.status == "running" for c in map(docker_client.containers.get, owned))
    assert {r["container_id"] for r in flotilla.json("ps", app_name)} == owned
    assert {r["app"] for r in second_flotilla.json("ps")} == {neighbour}
