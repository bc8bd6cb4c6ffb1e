"""Secrets end to end: the vault, injection without plaintext on disk, rotation, the API token."""

from __future__ import annotations

import http.client
import io
import json
import signal
import sqlite3
import subprocess
import tarfile
import uuid

import docker.errors
import pytest

from tests.support.cli import converged, ps
from tests.support.load import shop_traffic, wait_for_answers
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker


def secret_spec(app: str, port: int) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    replicas: 2
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    env: {{LOG_LEVEL: warning}}
    routes: [{{host: shop.localhost, path: /}}]
    secrets:
      DB_PASSWORD: db-password
      /run/secrets/tls.key: tls-key
"""


class Recorder:
    """Runs the CLI and keeps everything it printed, to search for leaks."""

    def __init__(self, flotilla) -> None:
        self.flotilla = flotilla
        self.outputs: list[str] = []

    def run(self, *args, **kwargs):
        result = self.flotilla.run(*args, **kwargs)
        self.outputs += [result.stdout, result.stderr]
        return result


def process_env(docker_client, container_id: str, name: str) -> str | None:
    """``name`` in the environment of the app's own process (not of a `docker exec`)."""
    code = f"""
import os
for pid in os.listdir('/proc'):
    try:
        cmd = open(f'/proc/{{pid}}/cmdline', 'rb').read()
        env = open(f'/proc/{{pid}}/environ', 'rb').read().split(b'\\0')
    except (OSError, ValueError):
        continue
    if cmd.startswith(b'python3') and b'/app/app.py' in cmd and b'-c' not in cmd:
        print(next((e.split(b'=', 1)[1].decode() for e in env if e.startswith(b'{name}=')), ''))
        break
"""
    try:
        out = docker_client.containers.get(container_id).exec_run(["python3", "-c", code]).output.decode().strip()
    except docker.errors.APIError:  # removed meanwhile (a rolling replacement)
        return None
    return out or None


def file_in(docker_client, container_id: str, path: str) -> str:
    return docker_client.containers.get(container_id).exec_run(["cat", path]).output.decode()


def grep(needle: str, *roots) -> list[str]:
    found = subprocess.run(["grep", "-r", "-l", "-F", "-a", needle, *map(str, roots)], capture_output=True, text=True)
    return found.stdout.split()


def test_canary_secret_reaches_the_process_and_nothing_on_disk(flotilla, app_name, tmp_path, docker_client):
    cli = Recorder(flotilla)
    first, second, tls = (f"canary-{uuid.uuid4().hex}" for _ in range(3))
    port = free_port()
    spec = flotilla.write_spec(tmp_path, secret_spec(app_name, port))
    cli.run("secrets", "set", app_name, "db-password", input_text=first)
    cli.run("secrets", "set", app_name, "tls-key", input_text=tls)
    cli.run("up", "-f", str(spec), "--timeout", "90")
    rows = ps(flotilla, app_name)
    for row in rows:
        assert process_env(docker_client, row["container_id"], "DB_PASSWORD") == first
        assert file_in(docker_client, row["container_id"], "/run/secrets/tls.key") == tls
        inspected = json.dumps(docker_client.api.inspect_container(row["container_id"]))
        assert first not in inspected and tls not in inspected
    with shop_traffic(port) as load:  # rotation under load
        wait_for_answers(load, 200)
        rotated = cli.run("secrets", "set", app_name, "db-password", input_text=second)
        assert "rolling web" in rotated.stdout

        def rotated_everywhere() -> list[dict] | None:
            rows = ps(flotilla, app_name)
            every = all(process_env(docker_client, r["container_id"], "DB_PASSWORD") == second for r in rows)
            return rows if every and converged(flotilla, app_name) else None

        rows = wait_for(rotated_everywhere, timeout=90, interval=0.5, what="every replica on the rotated secret")
        wait_for_answers(load, 200)
    result = load.stop()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    assert all(process_env(docker_client, r["container_id"], "DB_PASSWORD") == second for r in rows)
    cli.run("secrets", "ls", app_name)
    cli.run("secrets", "ls", app_name, "--json")
    cli.run("events", app_name)
    cli.run("events", app_name, "--json")
    cli.run("ps", app_name, "--json")
    cli.run("logs", app_name)
    cli.run("down", app_name)
    revealed = flotilla.run("secrets", "get", app_name, "db-password", "--reveal").stdout
    assert revealed == second  # present in the vault, and only --reveal prints it
    docker_root = docker_client.info()["DockerRootDir"]
    for canary in (first, second, tls):
        assert grep(canary, docker_root) == []
        assert grep(canary, flotilla.home) == []
        assert not any(canary in out for out in cli.outputs)


def test_an_unset_secret_fails_validation_and_starts_nothing(flotilla, app_name, tmp_path, docker_client):
    spec = flotilla.write_spec(tmp_path, secret_spec(app_name, free_port()))
    result = flotilla.run("up", "-f", str(spec), check=False)
    assert result.returncode == 2
    assert f"services.web.secrets.DB_PASSWORD: secret 'db-password' is not set for app {app_name}" in result.stderr
    assert f"set it with `flotilla secrets set {app_name} db-password`" in result.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app_name}"}) == []


def test_an_image_without_a_shell_gets_files_only(flotilla, app_name, tmp_path, docker_client):
    tag = f"flotilla-test/noshell:{app_name}"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    docker_client.api.import_image_from_data(data.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    try:
        flotilla.run("secrets", "set", app_name, "db-password", input_text="x")
        spec = f"""\
app: {app_name}
services:
  tool:
    image: {tag}
    command: ["/hello"]
    secrets: {{DB_PASSWORD: db-password}}
"""
        result = flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), check=False)
        assert result.returncode == 2
        assert "has no /bin/sh, so secrets cannot become environment variables" in result.stderr
        assert "map the secret to a file instead" in result.stderr
    finally:
        docker_client.images.remove(tag, force=True)


def vault_rows(db_path) -> list:
    """Every stored secret and the key fingerprint, as SQLite returns them."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT * FROM secrets ORDER BY app, name, version").fetchall() + \
            db.execute("SELECT * FROM vault_meta ORDER BY k").fetchall()


def test_wrong_master_key_and_tampering_are_refused(flotilla, app_name):
    key_a = "a" * 64
    flotilla.run("secrets", "set", app_name, "token", input_text="value-1", env={"FLOTILLA_MASTER_KEY": key_a})
    flotilla.kill_daemon(signal.SIGTERM)
    before = vault_rows(flotilla.home / "state.db")
    wrong = flotilla.run("secrets", "ls", app_name, check=False, env={"FLOTILLA_MASTER_KEY": "b" * 64})
    assert wrong.returncode != 0
    assert "master key does not match" in wrong.stderr
    assert vault_rows(flotilla.home / "state.db") == before
    flotilla.kill_daemon(signal.SIGKILL)
    with sqlite3.connect(flotilla.home / "state.db") as db:
        (cipher,) = db.execute("SELECT ciphertext FROM secrets WHERE name='token'").fetchone()
        db.execute("UPDATE secrets SET ciphertext=? WHERE name='token'", (bytes([cipher[0] ^ 1]) + cipher[1:],))
    tampered = flotilla.run("secrets", "get", app_name, "token", "--reveal", check=False,
                            env={"FLOTILLA_MASTER_KEY": key_a})
    assert tampered.returncode == 9
    assert "token" in tampered.stderr and "value-1" not in tampered.stderr


def test_rekey_keeps_every_secret_readable(flotilla, app_name):
    values = {f"s{i}": f"value-{i}-{uuid.uuid4().hex}" for i in range(3)}
    for name, value in values.items():
        flotilla.run("secrets", "set", app_name, name, input_text=value)
    key_file = flotilla.home / "master.key"
    old_key = key_file.read_text()
    result = flotilla.json("secrets", "rekey")
    assert result["reencrypted"] == 3
    assert key_file.read_text() != old_key and oct(key_file.stat().st_mode & 0o777) == "0o600"
    flotilla.kill_daemon(signal.SIGTERM)  # a new daemon must open the vault with the new key file
    for name, value in values.items():
        assert flotilla.run("secrets", "get", app_name, name, "--reveal").stdout == value


def test_secret_values_need_reveal(flotilla, app_name):
    flotilla.run("secrets", "set", app_name, "token", input_text="hidden-value")
    result = flotilla.run("secrets", "get", app_name, "token", check=False)
    assert result.returncode == 2 and "--reveal" in result.stderr and "hidden-value" not in result.stdout


def test_tcp_api_needs_the_bearer_token(flotilla, app_name):
    port = free_port()
    flotilla.run("secrets", "ls", app_name)  # the daemon exists: stop it, restart with a TCP listener
    flotilla.kill_daemon(signal.SIGTERM)
    daemon = subprocess.Popen(
        [*flotilla.command_prefix(), "daemon", "--api-listen", f"127.0.0.1:{port}"],
        env=flotilla.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        token_file = flotilla.home / "api.token"
        wait_for(lambda: token_file.exists() and _tcp_status(port, "/v1/apps", None) is not None, timeout=15,
                 what=f"the token file, and the daemon answering on 127.0.0.1:{port}")
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        assert _tcp_status(port, "/v1/apps", None) == 401
        assert _tcp_status(port, "/v1/apps", "wrong-token") == 401
        assert _tcp_status(port, "/v1/apps", token) == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)


def _tcp_status(port: int, path: str, token: str | None) -> int | None:
    """The HTTP status of ``GET path`` on the daemon's TCP listener; None while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        return conn.getresponse().status
    except ConnectionRefusedError:
        return None
    finally:
        conn.close()
