"""Secrets that could leak through what Flotilla keeps and shows, tried against a real daemon and Docker.

Issue 13, breaks 3 and 4. A file-secret target written in an odd spelling mounts at its clean
path (and a reserved one starts nothing). A replica that prints its own secret and a terminal
escape before it crashes leaves neither in ``up``'s output, ``flotilla events``, ``state.db``
or ``daemon.log``. A cache password with a space, which made redis-server echo its config line
into all of those, is refused where it is set and, if already stored, at ``up``.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest

from tests.integration.test_secrets import Recorder, file_in
from tests.support.cli import ps

pytestmark = pytest.mark.docker
ESCAPES = ("\x1b", "\\u001b", "\\x1b")  # raw, as JSON escapes it, as repr() does


def single_service(app: str, body: str) -> str:
    return f"app: {app}\nservices:\n  job:\n    image: flotilla/python:bookworm\n{body}"


def test_an_odd_spelling_mounts_at_the_clean_path(flotilla, app_name, tmp_path, docker_client):
    value = f"canary-{uuid.uuid4().hex}"
    flotilla.run("secrets", "set", app_name, "tls-key", input_text=value)
    spec = flotilla.write_spec(tmp_path, single_service(app_name, (
        '    command: ["sleep", "infinity"]\n'
        "    secrets: {//run/./secrets//tls.key: tls-key}\n")))
    flotilla.run("up", "-f", str(spec), "--timeout", "60")
    (row,) = ps(flotilla, app_name)
    assert file_in(docker_client, row["container_id"], "/run/secrets/tls.key") == value
    mounts = docker_client.api.inspect_container(row["container_id"])["Mounts"]
    assert [m["Destination"] for m in mounts] == ["/run/secrets/tls.key"]


@pytest.mark.parametrize("target", ["/run/flotilla/flotilla-shim.sh", "//proc/self/environ",
                                    "/run/secrets/tls.key:rw"])
def test_a_refused_spelling_starts_nothing(flotilla, app_name, tmp_path, docker_client, target):
    flotilla.run("secrets", "set", app_name, "tls-key", input_text="value")
    spec = flotilla.write_spec(tmp_path, single_service(app_name, (
        f'    command: ["sleep", "infinity"]\n    secrets: {{"{target}": tls-key}}\n')))
    result = flotilla.run("up", "-f", str(spec), check=False)
    assert result.returncode == 2 and "invalid secret file path" in result.stderr, result.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app_name}"}) == []


def leaks(flotilla, outputs: list[str], needle: str) -> list[str]:
    """Where ``needle`` or a terminal escape shows: CLI outputs, state.db's bytes and events, daemon.log."""
    found = [f"output {i}: {what}" for i, out in enumerate(outputs)
             for what in (needle, *ESCAPES) if what in out]
    for path in flotilla.home.glob("state.db*"):
        raw = path.read_bytes()
        found += [f"{path.name} bytes: {what!r}" for what in (needle.encode(), b"\x1b[") if what in raw]
    with sqlite3.connect(flotilla.home / "state.db") as db:
        rows = db.execute("SELECT subject || ' ' || message FROM events").fetchall()
    found += [f"event: {row!r}" for (row,) in rows if needle in row or "\x1b" in row]
    log = (flotilla.home / "daemon.log").read_text(errors="replace")
    found += [f"daemon.log: {what!r}" for what in (needle, "\x1b") if what in log]
    return found


def test_a_crash_that_prints_its_secret_and_an_escape_leaks_neither(flotilla, app_name, tmp_path):
    cli = Recorder(flotilla)
    value = f"canary-{uuid.uuid4().hex}"
    cli.run("secrets", "set", app_name, "token", input_text=value)
    command = ["sh", "-c", 'printf "boot token=%s \\033[31mred\\033[0m \\033]0;title\\007\\n" "$TOKEN"; exit 3']
    spec = flotilla.write_spec(tmp_path, single_service(app_name, (
        f"    command: {json.dumps(command)}\n    secrets: {{TOKEN: token}}\n")))
    up = cli.run("up", "-f", str(spec), "--timeout", "60", check=False)
    assert up.returncode != 0 and "keep crashing" in up.stderr, up.stdout + up.stderr
    events = cli.run("events", app_name).stdout
    cli.run("events", app_name, "--json")
    assert "last output: boot token=[secret] red" in events, events  # the crash output was kept, scrubbed
    assert leaks(flotilla, cli.outputs, value) == []


def test_a_cache_password_with_a_space_is_refused_and_never_echoed(flotilla, app_name, tmp_path, docker_client):
    from flotilla.secrets import Vault, load_master_key

    cli = Recorder(flotilla)
    password = f"canary {uuid.uuid4().hex}"
    refused = cli.run("secrets", "set", app_name, "sessions-redis-password", input_text=password, check=False)
    assert refused.returncode != 0 and "letters and digits only" in refused.stderr, refused.stderr
    key, _ = load_master_key(home=flotilla.home, environ={})  # as before the rule: straight into the vault
    with Vault(flotilla.home / "state.db", key, clock=time.time) as vault:
        vault.set(app_name, "sessions-redis-password", password.encode())
    spec = flotilla.write_spec(tmp_path, (
        f"app: {app_name}\nservices:\n  web:\n    image: flotilla/python:bookworm\n"
        '    command: ["sleep", "infinity"]\n    caches: [sessions]\n'
        "caches:\n  sessions: {type: redis-cluster, shards: 3, replicas: 0}\n"))
    up = cli.run("up", "-f", str(spec), "--timeout", "60", check=False)
    assert up.returncode == 2 and "caches.sessions: secret sessions-redis-password is a cache password" in up.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app_name}"}) == []
    cli.run("events", app_name)
    cli.run("events", app_name, "--json")
    assert leaks(flotilla, cli.outputs, password) == []
