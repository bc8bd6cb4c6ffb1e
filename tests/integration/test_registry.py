"""Images from a real registry, pinned by digest; failures that change nothing; logins nobody sees.

Why: a company deploys what CI pushed. Here Debian's docker-registry runs on
127.0.0.1 with htpasswd (tests/support/registry.py); the test pushes an image,
removes the local copy, and Flotilla pulls it with a login kept in its vault.
Then the tag moves on the registry: a scale-up and a healed replica still run
the first digest, and only ``up`` with ``pull: always`` rolls to the new one,
with no failed request through the gateway. A stopped registry, a rotated
password and an unknown tag each give one sentence and leave the app as it
was. Last, the password is searched for everywhere it must not be.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.cli import container_ids, converged, ps
from tests.support.load import shop_traffic, wait_for_answers
from tests.support.ports import free_port
from tests.support.registry import Registry, why_unavailable
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker
BASE = "shop-catalog:1"


@pytest.fixture
def registry(tmp_path):
    problem = why_unavailable()
    if problem:
        pytest.skip(problem)
    reg = Registry(tmp_path / "registry", user="ci", password=f"pw-{uuid.uuid4().hex}")
    reg.start()
    yield reg
    reg.stop()


def spec_text(app: str, image: str, port: int, *, replicas: int = 2, pull: str | None = None) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
{f"pull: {pull}" if pull else ""}
services:
  catalog:
    image: {image}
    port: 8000
    replicas: {replicas}
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes:
      - {{host: shop.localhost, path: /}}
"""


def build_version(docker_client, tmp_path: Path, ref: str, version: str) -> str:
    """An image FROM the catalog with its own label (so its own id), tagged ``ref``; its id."""
    context = tmp_path / f"ctx-{version}"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {BASE}\nLABEL io.flotilla.test.version={version}\n")
    image, _ = docker_client.images.build(path=str(context), tag=ref, rm=True)
    return image.id


def push_and_forget(docker_client, registry: Registry, tmp_path: Path, ref: str, version: str) -> str:
    """Build, push, and remove the local copy; the image id that was pushed."""
    image_id = build_version(docker_client, tmp_path, ref, version)
    registry.push(docker_client, ref)
    docker_client.images.remove(ref)
    return image_id


def image_ids(docker_client, flotilla, app: str) -> set[str]:
    return {docker_client.api.inspect_container(c)["Image"] for c in container_ids(flotilla, app)}


def up(flotilla, spec: Path, outputs: list[str], *, check: bool = True):
    result = flotilla.run("up", "-f", str(spec), "--timeout", "90", check=check)
    outputs.extend([result.stdout, result.stderr])
    return result


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("flotilla: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_pull_pin_roll_and_failures_that_change_nothing(flotilla, app_name, tmp_path, docker_client, registry):
    outputs: list[str] = []
    ref = f"{registry.host}/{app_name}/catalog:1"
    first = push_and_forget(docker_client, registry, tmp_path, ref, f"1-{app_name}")
    assert not docker_client.images.list(name=ref)

    wrong = flotilla.run("registry", "login", registry.host, "-u", "ci", input_text="not-the-password",
                         check=False)
    outputs += [wrong.stdout, wrong.stderr]
    assert wrong.returncode != 0 and f"registry {registry.host} refused the login" in one_sentence(wrong.stderr)
    assert flotilla.json("registry", "ls") == []
    kept = registry.password
    login = flotilla.run("registry", "login", registry.host, "-u", "ci", input_text=kept)
    outputs += [login.stdout, login.stderr]
    assert [r["registry"] for r in flotilla.json("registry", "ls")] == [registry.host]

    port = free_port()
    spec = flotilla.write_spec(tmp_path, spec_text(app_name, ref, port))
    pulled = up(flotilla, spec, outputs)
    assert f"{ref} pulling" in pulled.stderr and f"{ref} pulled {ref}@sha256:" in pulled.stderr
    assert image_ids(docker_client, flotilla, app_name) == {first}
    rows = ps(flotilla, app_name)
    assert all(r["image"].startswith(f"{ref}@sha256:") for r in rows), rows
    table = flotilla.run("ps", app_name).stdout
    assert f"{ref}@sha256:" in table

    # The tag moves on the registry: what runs does not, until `up` with pull: always.
    second = push_and_forget(docker_client, registry, tmp_path, ref, f"2-{app_name}")
    assert second != first
    flotilla.run("scale", app_name, "catalog=3", "--wait", "--timeout", "60")
    victim = sorted(container_ids(flotilla, app_name))[0]
    docker_client.api.kill(victim)
    wait_for(lambda: victim not in container_ids(flotilla, app_name) and converged(flotilla, app_name),
             timeout=60, interval=0.2, what="the killed replica replaced")
    assert image_ids(docker_client, flotilla, app_name) == {first}
    assert len(container_ids(flotilla, app_name)) == 3
    unchanged = up(flotilla, spec, outputs)  # pull: missing, and the pinned image is here: nothing to do
    assert image_ids(docker_client, flotilla, app_name) == {first}, unchanged.stderr

    always = flotilla.write_spec(tmp_path, spec_text(app_name, ref, port, replicas=3, pull="always"), "always.yaml")
    plan = flotilla.run("plan", "-f", str(always)).stdout  # asks the registry, pulls nothing
    assert f"~ image catalog: {ref} (was {ref}@sha256:" in plan
    assert image_ids(docker_client, flotilla, app_name) == {first}
    with shop_traffic(port) as load:
        wait_for_answers(load, 200)
        rolled = up(flotilla, always, outputs)
        wait_for_answers(load, 200)
    result = load.stop()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    assert image_ids(docker_client, flotilla, app_name) == {second}
    assert "~ image catalog:" in rolled.stderr and "(was " in rolled.stderr
    events = json.dumps(flotilla.json("events", app_name))
    assert "image changed: catalog" in events

    running = container_ids(flotilla, app_name)
    # An unknown tag, a rotated password, a stopped registry: one sentence each, nothing changes.
    unknown = flotilla.write_spec(tmp_path, spec_text(app_name, f"{registry.host}/{app_name}/catalog:nope", port,
                                                      replicas=3), "unknown.yaml")
    failed = up(flotilla, unknown, outputs, check=False)
    assert failed.returncode != 0
    assert "has no such repository or tag" in one_sentence(failed.stderr)
    registry.stop()
    registry.set_password(f"rotated-{uuid.uuid4().hex}")
    registry.start()
    failed = up(flotilla, always, outputs, check=False)
    assert "refused the credentials stored for it" in one_sentence(failed.stderr)
    registry.stop()
    failed = up(flotilla, always, outputs, check=False)
    assert f"registry {registry.host} cannot be reached" in one_sentence(failed.stderr)
    assert container_ids(flotilla, app_name) == running
    assert image_ids(docker_client, flotilla, app_name) == {second}
    assert converged(flotilla, app_name)

    logout = flotilla.run("registry", "logout", registry.host)
    outputs += [logout.stdout, logout.stderr, flotilla.run("ps", app_name).stdout,
                flotilla.run("events", app_name).stdout, flotilla.run("logs", app_name).stdout]
    flotilla.run("down", app_name)
    assert_nowhere(docker_client, flotilla, outputs, kept)


def assert_nowhere(docker_client, flotilla, outputs: list[str], secret: str) -> None:
    """The password Flotilla kept is in no file under Docker's root, the home or ~/.docker, and in no output."""
    docker_root = docker_client.info()["DockerRootDir"]
    for root in (docker_root, flotilla.home, Path.home() / ".docker"):
        found = subprocess.run(["grep", "-r", "-l", "-F", "-a", secret, str(root)], capture_output=True,
                               text=True)
        assert found.stdout.split() == [], root
    assert not any(secret in out for out in outputs)
