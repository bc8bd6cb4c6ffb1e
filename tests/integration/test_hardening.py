"""Issue 13, breaks 10 and 2, against the real Docker Engine.

Break 10: replicas ran as root with every capability, no pids limit and core
dumps on. A demo-like app (web, catalog, cart and a small sessions cache)
now comes up with every replica and cache node hardened, as ``docker
inspect`` and the kernel's view of the processes say, a fork bomb stops at
the pids limit, and the app still serves through the gateway.

Break 2: a host process with the uid a replica's process has inside its
container (65534, nobody, for the shop images) read the replica's env
secret from /proc/PID/environ and its file secret through /proc/PID/root.
With Docker's user-namespace remapping the same attempt fails, because the
process's host uid is no host user's. The same attempt against a container
Docker does not remap (``userns_mode=host``) succeeds, which proves the
attempt itself works.
"""

from __future__ import annotations

import http.client
import json
import pwd
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.cli import ps
from tests.support.specs import shop_demo

pytestmark = pytest.mark.docker

NOBODY = 65534
PIDS_LIMIT = 64  # the catalog's, small so the fork bomb below stays cheap
SECRET_FILE = "/run/secrets/tls.key"


def hardened_demo(app: str) -> dict:
    """The demo's spec, one replica each and a three-node cache, catalog with a low pids limit."""
    spec = shop_demo(app)
    spec["caches"]["sessions"].update({"replicas": 0, "memory": "32M"})
    for service in spec["services"].values():
        service["replicas"] = 1
    spec["services"]["catalog"]["pids_limit"] = PIDS_LIMIT
    return spec


def gateway_request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Host": "shop.localhost", "Accept": "application/json",
                              "Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        conn.close()


def host_pids(docker_client, container_id: str) -> list[int]:
    """The container's init (docker-init) on the host, then its children: the replica's own process."""
    init = docker_client.api.inspect_container(container_id)["State"]["Pid"]
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    return [init, *map(int, children)]


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"/proc/{pid}/status has no {name}")


def assert_hardened(docker_client, container_id: str, *, read_only: bool, user: str, pids: int = 1024) -> None:
    host = docker_client.api.inspect_container(container_id)["HostConfig"]
    config = docker_client.api.inspect_container(container_id)["Config"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], host["CapDrop"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == pids
    assert host["Ulimits"] == [{"Name": "core", "Soft": 0, "Hard": 0}]
    assert host["ReadonlyRootfs"] is read_only
    assert (host["Tmpfs"] or {}).keys() == ({"/tmp"} if read_only else set())
    assert config["User"] == user
    main = host_pids(docker_client, container_id)[-1]
    assert status_field(main, "CapEff") == "0000000000000000" and status_field(main, "NoNewPrivs") == "1"
    limits = Path(f"/proc/{main}/limits").read_text()
    assert any(line.startswith("Max core file size") and line.split()[4:6] == ["0", "0"]
               for line in limits.splitlines()), limits


def run_in(docker_client, container_id: str, command: list[str]) -> tuple[int, str]:
    result = docker_client.containers.get(container_id).exec_run(command)
    return result.exit_code, result.output.decode()


FORK_BOMB = """
import os, time
children = []
try:
    for _ in range(10000):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    print(len(children), exc.errno)
finally:
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
"""


def test_demo_replicas_and_cache_nodes_run_hardened_and_still_serve(flotilla, app_name, tmp_path, docker_client):
    spec = hardened_demo(app_name)
    port = int(spec["gateway"]["listen"].rsplit(":", 1)[1])
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, yaml.safe_dump(spec))), "--timeout", "150")
    rows = {r["service"]: r["container_id"] for r in ps(flotilla, app_name)}
    for service in ("web", "catalog", "cart"):
        assert_hardened(docker_client, rows[service], read_only=True, user=f"{NOBODY}:{NOBODY}",
                        pids=PIDS_LIMIT if service == "catalog" else 1024)
    assert_hardened(docker_client, rows["sessions-0-0"], read_only=True, user="")

    web = rows["web"]
    assert run_in(docker_client, web, ["sh", "-c", "ulimit -c"]) == (0, "0\n")
    assert run_in(docker_client, web, ["touch", "/app/x"])[0] != 0  # the root is read-only
    assert run_in(docker_client, web, ["touch", "/tmp/x"])[0] == 0  # /tmp is scratch
    code, out = run_in(docker_client, rows["catalog"], ["python3", "-c", FORK_BOMB])
    forked, errno = map(int, out.split())
    assert code == 0 and errno == 11 and 0 < forked < PIDS_LIMIT, out  # EAGAIN, at the limit
    node = rows["sessions-0-0"]
    assert run_in(docker_client, node, ["touch", "/data/written"])[0] == 0  # redis' volume stays writable

    assert gateway_request(port, "POST", "/api/cart/alice", {"item": "mug", "qty": 2})[0] == 200
    status, page = gateway_request(port, "GET", "/?user=alice")
    assert status == 200 and [line["item"] for line in page["cart"]] == ["mug"], page
    assert flotilla.client().request("GET", f"/v1/apps/{app_name}")["warnings"] == []  # Docker remaps here


# -- break 2 -----------------------------------------------------------------------------------

def docker_remaps(docker_client) -> bool:
    return any("name=userns" in o.split(",") for o in docker_client.info().get("SecurityOptions") or [])


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    """``command`` run by another user of the host: uid and gid 65534, no supplementary groups."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=10)


def attack(pid: int) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """What issue 13 tried: read the process's environment and a secret file through its root."""
    return as_nobody("cat", f"/proc/{pid}/environ"), as_nobody("cat", f"/proc/{pid}/root{SECRET_FILE}")


def test_a_host_user_with_the_replicas_uid_cannot_read_its_secrets(flotilla, app_name, tmp_path, docker_client):
    if not docker_remaps(docker_client):
        pytest.skip("Docker Engine does not remap user namespaces (start dockerd with --userns-remap=default, "
                    "as scripts/setup.sh does): replicas share uids with host users, and this attack succeeds")
    env_canary, file_canary = (f"canary-{uuid.uuid4().hex}" for _ in range(2))
    flotilla.run("secrets", "set", app_name, "db-password", input_text=env_canary)
    flotilla.run("secrets", "set", app_name, "tls-key", input_text=file_canary)
    spec = f"""\
app: {app_name}
services:
  catalog:
    image: shop-catalog:1
    port: 8000
    secrets: {{DB_PASSWORD: db-password, {SECRET_FILE}: tls-key}}
"""
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), "--timeout", "90")
    (row,) = ps(flotilla, app_name)
    main = host_pids(docker_client, row["container_id"])[-1]
    host_uid = int(status_field(main, "Uid").split()[0])
    assert host_uid != NOBODY and host_uid >= 100000, host_uid  # the container's 65534, remapped
    with pytest.raises(KeyError):
        pwd.getpwuid(host_uid)  # no host user has it
    assert env_canary.encode() in Path(f"/proc/{main}/environ").read_bytes()  # the secret is there (root sees it)
    environ, secret_file = attack(main)
    assert environ.returncode != 0 and env_canary not in environ.stdout, environ
    assert secret_file.returncode != 0 and file_canary not in secret_file.stdout, secret_file
    assert "Permission denied" in environ.stderr + secret_file.stderr


def test_the_same_attempt_reads_an_unremapped_containers_secrets(docker_client):
    """The control: without remapping (userns_mode=host), nobody on the host reads both secrets."""
    canary = f"canary-{uuid.uuid4().hex}"
    container = docker_client.containers.run(
        "shop-catalog:1", ["python3", "-c", "import time; time.sleep(60)"], userns_mode="host", detach=True,
        environment={"DB_PASSWORD": canary}, labels={"io.flotilla.test": "hardening"})
    try:
        container.exec_run(["sh", "-c", f"mkdir -p /tmp/s && printf %s {canary} >/tmp/s/key && chmod 0400 /tmp/s/key"])
        main = host_pids(docker_client, container.id)[0]
        assert int(status_field(main, "Uid").split()[0]) == NOBODY
        environ = as_nobody("cat", f"/proc/{main}/environ")
        secret_file = as_nobody("cat", f"/proc/{main}/root/tmp/s/key")
        assert canary in environ.stdout and secret_file.stdout == canary, (environ, secret_file)
    finally:
        container.remove(force=True)
