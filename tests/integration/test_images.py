"""The shop demo's images, run by hand with the docker CLI, no Flotilla code involved.

Why: the demo and the end-to-end tests stand on these images (built by
scripts/build-images.sh). Here each one runs on a private, internal network
that this module creates, and is reached from another container on it, the
way replicas reach each other under Flotilla: by service name, through Docker
DNS. A failure here points at an image, not at the platform.

Everything created carries the label io.flotilla.test=images-<run id> and is
removed by that label at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.docker

SERVICES = ("web", "catalog", "cart")
IMAGES = {service: f"shop-{service}:1" for service in SERVICES}
CLIENT_IMAGE = os.environ.get("FLOTILLA_PYTHON_IMAGE", "flotilla/python:bookworm")
PORT = 8000

# Runs inside the client container: one HTTP request, the answer as JSON on stdout.
FETCH = r"""
import json, sys, urllib.error, urllib.request
method, url, body = sys.argv[1:4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(url, data=body.encode() or None, method=method)
if body:
    request.add_header("Content-Type", "application/json")
try:
    with opener.open(request, timeout=5) as response:
        status, raw = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, raw = exc.code, exc.read()
print(json.dumps({"status": status, "body": raw.decode()}))
"""


def docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def why_docker_is_unusable() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (scripts/setup.sh installs it)"
    info = docker("info", check=False, timeout=30)
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"Docker Engine is not reachable (docker info: {detail}); scripts/setup.sh starts it"
    missing = [
        image
        for image in (*IMAGES.values(), CLIENT_IMAGE)
        if docker("image", "inspect", image, check=False).returncode != 0
    ]
    if missing:
        return f"images missing: {', '.join(missing)}; run scripts/build-images.sh"
    return None


@dataclass
class Answer:
    status: int
    body: str

    def json(self):
        return json.loads(self.body)


@dataclass
class ShopNetwork:
    """A private network with one container per shop service and a client."""

    run_id: str
    network: str
    label: str
    containers: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> str:
        return self.containers["client"]

    def name(self, role: str) -> str:
        return f"flotilla-test-images-{self.run_id}-{role}"

    def run(self, role: str, image: str, *, alias: str | None = None, env: dict | None = None,
            command: tuple[str, ...] = ()) -> str:
        args = ["run", "-d", "--name", self.name(role), "--network", self.network,
                "--label", self.label, "--dns-search", "."]
        if alias:
            args += ["--network-alias", alias]
        for key, value in {"FLOTILLA_REPLICA": "1", **(env or {})}.items():
            args += ["-e", f"{key}={value}"]
        docker(*args, image, *command)
        self.containers[role] = self.name(role)
        return self.name(role)

    def fetch(self, url: str, *, method: str = "GET", payload=None) -> Answer:
        body = "" if payload is None else json.dumps(payload)
        done = docker("exec", self.client, "python3", "-c", FETCH, method, url, body, timeout=30)
        return Answer(**json.loads(done.stdout))

    def wait_healthy(self, container: str, *, timeout: float = 20) -> None:
        """Poll the container's /healthz by its name (names resolve like aliases)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                answer = self.fetch(f"http://{container}:{PORT}/healthz")
                if answer.status == 200:
                    return
                last = f"status {answer.status}"
            except subprocess.CalledProcessError as exc:
                last = exc.stderr.strip() or exc.stdout.strip()
            time.sleep(0.2)
        logs = docker("logs", "--tail", "20", container, check=False)
        pytest.fail(f"{container} not healthy after {timeout}s ({last}); its logs:\n{logs.stdout}{logs.stderr}")

    def cleanup(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def shop():
    reason = why_docker_is_unusable()
    if reason:
        pytest.skip(reason)
    run_id = uuid.uuid4().hex[:8]
    net = ShopNetwork(
        run_id=run_id,
        network=f"flotilla-test-images-{run_id}",
        label=f"io.flotilla.test=images-{run_id}",
    )
    try:
        # --internal: nothing on it can reach beyond the containers we put there.
        docker("network", "create", "--internal", "--label", net.label, net.network)
        net.run("client", CLIENT_IMAGE, command=("sleep", "infinity"))
        for service in SERVICES:
            net.run(service, IMAGES[service], alias=service)
        for service in SERVICES:
            net.wait_healthy(net.name(service))
        yield net
    finally:
        net.cleanup()


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_labelled_with_its_source_hash_and_runs_unprivileged(shop, service):
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGES[service]).stdout)
    source_hash = (config.get("Labels") or {}).get("io.flotilla.source-hash", "")
    assert len(source_hash) == 64 and int(source_hash, 16) >= 0, config.get("Labels")
    assert config["User"] == "65534:65534"


@pytest.mark.parametrize("service", SERVICES)
def test_healthz_answers_ok_by_service_name(shop, service):
    answer = shop.fetch(f"http://{service}:{PORT}/healthz")
    assert (answer.status, answer.body) == (200, "ok")


@pytest.mark.parametrize("service", SERVICES)
def test_whoami_names_service_replica_and_container(shop, service):
    hostname = docker("inspect", "-f", "{{.Config.Hostname}}", shop.name(service)).stdout.strip()
    answer = shop.fetch(f"http://{service}:{PORT}/whoami")
    assert answer.status == 200
    assert answer.json() == {"service": service, "replica": "1", "hostname": hostname}


def test_cart_checks_items_with_catalog_by_name(shop):
    added = shop.fetch(f"http://cart:{PORT}/cart/alice", method="POST", payload={"item": "mug", "qty": 2})
    assert added.status == 200, added.body
    assert added.json()["items"] == [{"item": "mug", "qty": 2}]

    unknown = shop.fetch(f"http://cart:{PORT}/cart/alice", method="POST", payload={"item": "nope", "qty": 1})
    assert unknown.status == 404, unknown.body
    assert unknown.json()["error"] == "no such item"

    assert shop.fetch(f"http://cart:{PORT}/cart/alice").json()["items"] == [{"item": "mug", "qty": 2}]
    catalog_log = docker("logs", shop.name("catalog")).stdout
    assert '"GET /items/mug" 200' in catalog_log
    assert '"GET /items/nope" 404' in catalog_log


def test_web_composes_catalog_and_cart(shop):
    shop.fetch(f"http://cart:{PORT}/cart/bob", method="POST", payload={"item": "kettle", "qty": 1})
    page = shop.fetch(f"http://web:{PORT}/?user=bob&format=json")
    assert page.status == 200, page.body
    data = page.json()
    assert data["user"] == "bob"
    assert {product["id"] for product in data["products"]} >= {"mug", "kettle"}
    assert data["cart"] == [{"item": "kettle", "qty": 1}]
    assert {name: who["service"] for name, who in data["served_by"].items()} == {
        "web": "web", "catalog": "catalog", "cart": "cart"}

    html = shop.fetch(f"http://web:{PORT}/?user=bob&format=html")
    assert html.status == 200 and "Gooseneck kettle" in html.body

    proxied = shop.fetch(f"http://web:{PORT}/api/items/mug")
    assert proxied.status == 200 and proxied.json()["item"]["id"] == "mug"


def test_web_answers_502_naming_the_upstream_that_failed(shop):
    # Port 9 on our own catalog container: nothing listens, so the call is refused.
    shop.run("web-broken", IMAGES["web"], env={"CATALOG_URL": f"http://{shop.name('catalog')}:9"})
    shop.wait_healthy(shop.name("web-broken"))
    answer = shop.fetch(f"http://{shop.name('web-broken')}:{PORT}/?format=json")
    assert answer.status == 502, answer.body
    assert answer.json()["upstream"] == "catalog"


def test_every_request_is_logged_on_stdout(shop):
    def log_lines() -> list[str]:
        return docker("logs", shop.name("web")).stdout.splitlines()

    before = len(log_lines())
    shop.fetch(f"http://web:{PORT}/whoami?probe=logging")
    deadline = time.monotonic() + 5
    while len(lines := log_lines()) == before and time.monotonic() < deadline:
        time.sleep(0.1)  # the log driver may lag the write by a moment
    assert len(lines) == before + 1
    assert '"GET /whoami?probe=logging" 200' in lines[-1]


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_stops_the_container_well_before_dockers_stop_timeout(shop, service):
    container = shop.run(f"{service}-stop", IMAGES[service])
    shop.wait_healthy(container)
    started = time.monotonic()
    docker("kill", "--signal", "TERM", container)
    exit_code = docker("wait", container, timeout=10).stdout.strip()
    took = time.monotonic() - started
    # The aim is well under 2 s; an image that ignored SIGTERM would take Docker's 10 s stop
    # timeout and its SIGKILL. 5 s is the margin for a loaded 2-core machine between the two.
    assert took < 5.0, f"{service} took {took:.2f}s to stop on SIGTERM (aim: under 2 s)"
    assert exit_code == "0"
    assert "got SIGTERM, stopping" in docker("logs", container).stdout
