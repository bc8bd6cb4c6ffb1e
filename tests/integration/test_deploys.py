"""Deploy history, rollback, failed rollouts and hung replicas, against real Docker and HAProxy.

Every revision runs an image of its own: a one-line Dockerfile on top of
shop-catalog:1 (a label, so a new image ID; or a command that crashes, or one
that never listens), built here and removed after. Load runs through the
gateway while the app changes, and must see no failed request.
"""

from __future__ import annotations

import io
import signal
import subprocess
import time

import pytest

from tests.support.cli import in_container, ps
from tests.support.load import LoadGenerator, shop_traffic, wait_for_answers
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

CRASHES = '["python3", "-c", "import sys; print(\'catalog: no database configured\', flush=True); sys.exit(3)"]'
NEVER_LISTENS = '["python3", "-c", "import time; print(\'warming up forever\', flush=True); time.sleep(3600)"]'


@pytest.fixture
def images(docker_client, app_name):
    """``build(tag, cmd=None)``: an image FROM shop-catalog:1 named ``APP-rev:TAG``; all removed at the end."""
    made = []

    def build(tag: str, cmd: str | None = None) -> str:
        name = f"{app_name}-rev:{tag}"
        lines = ["FROM shop-catalog:1", f"LABEL io.flotilla.test-revision={tag}"] + ([f"CMD {cmd}"] if cmd else [])
        docker_client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=name, rm=True)
        made.append(name)
        return name

    yield build
    for name in made:
        subprocess.run(["docker", "image", "rm", "-f", name], capture_output=True)


def spec(app: str, port: int, image: str, *, env: str = "", health: str = "", deadline: str = "15s") -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  web:
    image: {image}
    port: 8000
    replicas: 2
    health: {{path: /healthz, interval: 1s, timeout: 500ms{health}}}
    deploy: {{deadline: {deadline}}}
    env: {{LOG_LEVEL: warning{env}}}
    routes:
      - {{host: shop.localhost, path: /}}
"""


def up(flotilla, tmp_path, text: str, name: str, *, check: bool = True):
    return flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, text, name)), "--timeout", "90", check=check)


def history(flotilla, app: str) -> dict:
    return flotilla.json("history", app)


def running_images(flotilla, docker_client, app: str) -> set[str]:
    """The tags (of this test's images) whose image the app's running replicas run (replicas run by image ID)."""
    import docker

    ids = set()
    for row in ps(flotilla, app):
        try:
            ids.add(docker_client.containers.get(row["container_id"]).image.id)
        except docker.errors.NotFound:  # removed between ps and now
            continue
    return {tag for image in docker_client.images.list() for tag in image.tags if image.id in ids}


def clean(result) -> str:
    return result.summary() + "\n" + "\n".join(result.failures[:10])


def test_rollback_returns_to_revision_2_under_load_as_revision_4(flotilla, app_name, tmp_path, images,
                                                                 docker_client):
    port = free_port()
    tags = [images(str(n)) for n in (1, 2, 3)]
    for n, image in enumerate(tags, start=1):
        up(flotilla, tmp_path, spec(app_name, port, image), f"v{n}.yaml")
    listed = history(flotilla, app_name)
    assert [(r["revision"], r["outcome"]) for r in listed["revisions"]] == [
        (1, "rolled out"), (2, "rolled out"), (3, "rolled out")]
    assert listed["revisions"][1]["images"][tags[1]].startswith("sha256:")
    with shop_traffic(port, rate=100) as load:
        wait_for_answers(load, 100)
        flotilla.run("rollback", app_name, "2", "--timeout", "90")
        wait_for_answers(load, 100)
    result = load.stop()
    print(f"rollback under load: {result.summary()}")
    assert result.failed == 0, clean(result)
    listed = history(flotilla, app_name)
    assert listed["current"] == 4
    last = listed["revisions"][-1]
    assert (last["revision"], last["command"], last["outcome"]) == (4, "rollback to 2", "rolled out")
    assert running_images(flotilla, docker_client, app_name) == {tags[1]}
    shown = flotilla.run("history", app_name, "4").stdout
    assert f'-        "image": "{tags[2]}"' in shown and f'+        "image": "{tags[1]}"' in shown


@pytest.mark.parametrize("bad", ["crashes", "never_healthy"])
def test_a_bad_image_undoes_itself_while_the_old_replicas_serve(flotilla, app_name, tmp_path, images,
                                                                docker_client, bad):
    port = free_port()
    good = images("good")
    broken = images(bad, CRASHES if bad == "crashes" else NEVER_LISTENS)
    up(flotilla, tmp_path, spec(app_name, port, good, deadline="6s"), "v1.yaml")
    with shop_traffic(port, rate=100) as load:
        wait_for_answers(load, 100)
        failed = up(flotilla, tmp_path, spec(app_name, port, broken, deadline="6s"), "v2.yaml", check=False)
        wait_for_answers(load, 100)
    result = load.stop()
    print(f"{bad} image under load: {result.summary()}")
    assert failed.returncode != 0, failed.stdout + failed.stderr
    expected = "no database configured" if bad == "crashes" else "within the deploy deadline of 6s"
    assert "the rollout of revision 2" in failed.stderr and expected in failed.stderr, failed.stderr
    assert "revision 1 is running again" in failed.stderr, failed.stderr
    assert result.failed == 0, clean(result)
    listed = history(flotilla, app_name)
    assert listed["current"] == 1 and listed["revisions"][1]["outcome"] == "rolled back"
    wait_for(lambda: running_images(flotilla, docker_client, app_name) == {good}, timeout=30,
             what="only the good image running")


def test_a_daemon_killed_mid_rollout_undoes_it_when_it_comes_back(flotilla, app_name, tmp_path, images,
                                                                  docker_client):
    port = free_port()
    good, sick = images("good"), images("sick", NEVER_LISTENS)
    up(flotilla, tmp_path, spec(app_name, port, good, deadline="6s"), "v1.yaml")
    flotilla.run("up", "-d", "-f", str(flotilla.write_spec(tmp_path, spec(app_name, port, sick, deadline="6s"),
                                                           "v2.yaml")))
    wait_for(lambda: sick in running_images(flotilla, docker_client, app_name), timeout=30, what="the new replica")
    flotilla.kill_daemon(signal.SIGKILL)
    time.sleep(7)  # past the deadline while no daemon runs
    wait_for(lambda: history(flotilla, app_name)["revisions"][1]["outcome"] == "rolled back", timeout=30,
             what="the restarted daemon undoing revision 2")
    wait_for(lambda: running_images(flotilla, docker_client, app_name) == {good}, timeout=30,
             what="only the good image running")
    assert history(flotilla, app_name)["current"] == 1


def test_a_hung_replica_is_replaced_within_replace_after_plus_a_probe_interval(flotilla, app_name, tmp_path,
                                                                                docker_client):
    port = free_port()
    text = spec(app_name, port, "shop-catalog:1", env=", CATALOG_DEBUG_HANG: '1'", health=", replace_after: 3s")
    up(flotilla, tmp_path, text, "v1.yaml")
    hung = ps(flotilla, app_name)[0]
    # GETs only: a request already sent to the replica when it hangs ends, when the replica is killed, with
    # an empty response, which the gateway retries elsewhere for an idempotent method and never for a POST.
    with LoadGenerator(host="127.0.0.1", port=port, host_header="shop.localhost", rate=50, max_seconds=60,
                       paths=("/items", "/whoami"), post_every=0) as load:
        wait_for_answers(load, 50)
        try:
            in_container(docker_client, hung["container_id"], HANG)
        except AssertionError as exc:
            pytest.fail(f"shop-catalog:1 has no POST /debug/hang (built from older sources?): run "
                        f"scripts/build-images.sh from this tree\n{exc}")
        hung_at = time.time()
        wait_for(lambda: hung["container_id"] not in {r["container_id"] for r in ps(flotilla, app_name)},
                 timeout=20, interval=0.1, what="the hung replica replaced")
        wait_for(lambda: sum(r["healthy"] for r in ps(flotilla, app_name)) == 2, timeout=30, what="2 healthy")
        wait_for_answers(load, 100)
    result = load.stop()
    (event,) = [e for e in flotilla.json("events", app_name)
                if e["kind"] == "health" and "unresponsive" in e["message"]]
    replaced_after = event["time"] - hung_at
    # the next probe (at most an interval later) is the first to fail; replace_after runs from it
    print(f"hung replica replaced {replaced_after:.2f}s after it hung; {clean(result)}")
    assert replaced_after <= 3 + 1 + 0.5, replaced_after  # 0.5 s: the daemon's wake-up on a loaded machine
    assert result.failed == 0, clean(result)


HANG = ("import urllib.request; urllib.request.urlopen(urllib.request.Request("
        "'http://127.0.0.1:8000/debug/hang', method='POST'), timeout=5); print('hung')")



def test_restart_replaces_each_replica_one_at_a_time_under_load(flotilla, app_name, tmp_path):
    port = free_port()
    up(flotilla, tmp_path, spec(app_name, port, "shop-catalog:1"), "v1.yaml")
    before = {r["container_id"] for r in ps(flotilla, app_name)}
    with shop_traffic(port, rate=100) as load:
        wait_for_answers(load, 100)
        flotilla.run("restart", app_name, "web", "--timeout", "90")
        wait_for_answers(load, 100)
    result = load.stop()
    print(f"restart under load: {result.summary()}")
    after = {r["container_id"] for r in ps(flotilla, app_name)}
    assert len(after) == 2 and not before & after
    assert result.failed == 0, clean(result)
    assert len(history(flotilla, app_name)["revisions"]) == 1, "a restart is not a revision"


def test_rollback_to_kubernetes_re_applies_the_stored_revisions_manifests(flotilla, app_name, tmp_path, images):
    from tests.integration.test_kubernetes_apply import kubeconfig
    from tests.kubernetes.fake_apiserver import FakeApiServer

    port = free_port()
    up(flotilla, tmp_path, spec(app_name, port, "shop-catalog:1"), "v1.yaml")
    up(flotilla, tmp_path, spec(app_name, port, images("2")), "v2.yaml")
    api = FakeApiServer()
    config = kubeconfig(tmp_path / "kubeconfig", api.start())
    try:
        flotilla.run("rollback", app_name, "--target", "kubernetes", "--kubeconfig", str(config),
                     "--context", "fake", "--detach")
        (deployment,) = [o for (_, kind, _, name), o in api.objects.items() if kind == "Deployment" and name == "web"]
    finally:
        api.stop()
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "shop-catalog:1"
    assert deployment["spec"]["progressDeadlineSeconds"] == 15
