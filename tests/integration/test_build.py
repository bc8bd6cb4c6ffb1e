"""`build:` of the shop demo's services from their Dockerfiles, tagged by their inputs.

Why: Compose, Kamal, Coolify and Dokku build from source; Flotilla does too,
and an image named by the hash of its inputs means an unchanged source
builds nothing and changes nothing, while a one-byte change rolls only the
service whose image really changed (Docker's layer cache gives the others
the same image id). A failing build changes nothing and says which step
failed with what output. `images prune` then removes what Flotilla built
that no deploy uses, and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.cli import ps
from tests.support.ports import free_port

pytestmark = pytest.mark.docker
SERVICES = ("web", "catalog", "cart")


def build_spec(app: str, port: int, *, context: str = "./shop") -> str:
    services = "".join(f"""\
  {name}:
    image: {app}-{name}
    build: {{context: {context}, dockerfile: {name}/Dockerfile}}
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
""" + ("    routes: [{host: shop.localhost, path: /}]\n" if name == "web" else "") for name in SERVICES)
    return f'app: {app}\ngateway: {{listen: "127.0.0.1:{port}"}}\nservices:\n{services}'


def ids_by_service(flotilla, app: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {name: set() for name in SERVICES}
    for row in ps(flotilla, app):
        found[row["service"]].add(row["container_id"])
    return found


def test_build_from_source_rolls_only_what_changed(flotilla, app_name, tmp_path, docker_client):
    shutil.copytree(REPO / "examples" / "shop", tmp_path / "shop")
    spec = flotilla.write_spec(tmp_path, build_spec(app_name, free_port()))
    first = flotilla.run("up", "--build", "-f", str(spec), "--timeout", "90")
    for name in SERVICES:
        assert f"{app_name}/{name} building {app_name}-{name}:src-" in first.stderr
        assert f"{app_name}/{name} Step 1/" in first.stderr  # the build's own output, streamed
    before = ids_by_service(flotilla, app_name)
    tags = {r["service"]: r["image"] for r in ps(flotilla, app_name)}

    built = flotilla.run("build", "-f", str(spec))  # builds nothing, deploys nothing
    assert built.stderr.count("up to date: ") == 3 and "building" not in built.stderr
    assert sorted(built.stdout.split()) == sorted([f"{app_name}/{n}:" for n in SERVICES] + [
        t.partition("@")[0] for t in tags.values()])
    again = flotilla.run("up", "--build", "-f", str(spec), "--timeout", "90")
    assert "building" not in again.stderr and again.stderr.count("up to date: ") == 3
    assert "up to date, nothing to change" in again.stderr
    assert ids_by_service(flotilla, app_name) == before

    app_py = tmp_path / "shop" / "catalog" / "app.py"
    app_py.write_bytes(app_py.read_bytes() + b"#")
    flotilla.run("up", "--build", "-f", str(spec), "--timeout", "90")
    after = ids_by_service(flotilla, app_name)
    assert after["web"] == before["web"] and after["cart"] == before["cart"]
    assert not after["catalog"] & before["catalog"] and len(after["catalog"]) == 1
    assert {r["service"]: r["image"] for r in ps(flotilla, app_name)}["catalog"] != tags["catalog"]

    dockerfile = tmp_path / "shop" / "cart" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("EXPOSE 8000", "RUN echo boom-output && exit 3"))
    failed = flotilla.run("up", "--build", "-f", str(spec), "--timeout", "90", check=False)
    assert failed.returncode != 0
    message = [line for line in failed.stderr.splitlines() if line.startswith("flotilla: ")]
    assert len(message) == 1 and "building" in message[0] and "RUN echo boom-output" in message[0], failed.stderr
    assert "boom-output" in message[0].split("the step printed:")[1]
    assert ids_by_service(flotilla, app_name) == after

    assert_prune_takes_only_what_no_deploy_uses(flotilla, app_name, docker_client, tags)


def assert_prune_takes_only_what_no_deploy_uses(flotilla, app: str, docker_client, first_tags: dict) -> None:
    old_catalog = first_tags["catalog"].partition("@")[0]
    pruned = flotilla.json("images", "prune")
    assert [i["image"] for i in pruned["removed"]] == [old_catalog]
    assert not docker_client.images.list(name=old_catalog)
    for image in ("shop-web:1", "shop-catalog:1", "shop-cart:1", "flotilla/python:bookworm"):
        assert docker_client.images.list(name=image), image
    flotilla.run("down", app)
    pruned = flotilla.json("images", "prune")
    assert {i["image"].rpartition(":")[0] for i in pruned["removed"]} == {f"{app}-{n}" for n in SERVICES}
    for name in SERVICES:
        assert not docker_client.images.list(name=f"{app}-{name}")


def test_build_is_refused_for_a_relative_context_through_the_api(flotilla, app_name, tmp_path):
    """The daemon builds only absolute contexts (the CLI resolves them against the spec file)."""
    from flotilla.errors import ImageError

    data = {"app": app_name, "services": {"web": {"image": f"{app_name}-web", "build": {"context": "shop"}}}}
    with pytest.raises(ImageError, match="is not an absolute path"):
        flotilla.client().with_progress("POST", "/v1/build", body={"spec": data}, on_progress=lambda _p: None)
    assert Path(tmp_path).exists()
