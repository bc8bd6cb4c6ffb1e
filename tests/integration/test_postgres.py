"""PostgreSQL on a volume, end to end: its rows outlive everything but `down --volumes`.

A real server in flotilla/postgres:15 (Debian's postgresql-15, scripts/build-images.sh), its
password from the vault as a file secret. The test writes rows over TCP with that password
(psql inside the db container, the image's own client) and reads them back after a killed
replica, an image change, `kill -9` of the daemon and `down` then `up`; a backup, a dropped
table and a restore give the same rows; a failing backup command exits 11 and leaves a failed
entry and no archive. The restart of dockerd is its own test: it stops every container of
every user of the engine (the demo's too, which its daemon heals), so it runs only on the
dockerd scripts/setup.sh started, and FLOTILLA_TEST_RESTART_DOCKERD=0 leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import app_status, converged, ps
from tests.support.specs import cache_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker
IMAGE = os.environ.get("FLOTILLA_POSTGRES_IMAGE", "flotilla/postgres:15")
PASSWORD = "s3cret-from-the-vault"
BACKUP_FAILED = 11
DOCKERD_PIDFILE = "/run/flotilla-dockerd.pid"  # where scripts/setup.sh keeps it
DOCKERD_LOG = "/var/log/flotilla-dockerd.log"


def db_spec(app: str, *, roll: str = "1", backup: str = "[pg_dump, -Fc, app]") -> str:
    return f"""\
app: {app}
services:
  db:
    image: {IMAGE}
    port: 5432
    env: {{POSTGRES_DB: app, POSTGRES_PASSWORD_FILE: /run/secrets/pgpass, ROLL: "{roll}"}}
    secrets: {{/run/secrets/pgpass: db-password}}
    volumes: {{data: /var/lib/postgresql/data}}
    backup:
      command: {backup}
      restore_command: [pg_restore, --clean, --if-exists, -d, app]
"""


def db_replica(flotilla, app: str) -> dict:
    rows = [r for r in ps(flotilla, app) if r["service"] == "db" and r["state"] == "running"]
    assert len(rows) == 1, rows
    return rows[0]


def psql(docker_client, container_id: str, sql: str, *, password: str | None = None) -> tuple[int, str]:
    """``sql`` over TCP as postgres, with the password in the secret file (or ``password``)."""
    given = f"'{password}'" if password is not None else "$(cat /run/secrets/pgpass)"
    script = f"PGPASSWORD={given} psql -h 127.0.0.1 -U postgres -d app -XAtq -v ON_ERROR_STOP=1 -c \"{sql}\""
    result = docker_client.containers.get(container_id).exec_run(["sh", "-c", script])
    return result.exit_code, result.output.decode().strip()


def rows_of(flotilla, docker_client, app: str) -> str | None:
    """The table's rows (a checksum of them and their count), once the server answers; None before."""
    try:
        replica = db_replica(flotilla, app)
    except AssertionError:
        return None
    code, out = psql(docker_client, replica["container_id"], "SELECT count(*) || ':' || md5(string_agg(id || '="
                     "' || note, ',' ORDER BY id)) FROM notes")
    return out if code == 0 else None


def wait_rows(flotilla, docker_client, app: str, *, timeout: float = 90) -> str:
    return wait_for(lambda: rows_of(flotilla, docker_client, app), timeout=timeout,
                    interval=0.3, what=f"PostgreSQL of {app} to answer with its rows")


def up(flotilla, tmp_path, text: str) -> None:
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, text)), timeout=240)


@pytest.fixture
def database(flotilla, app_name, tmp_path, docker_client):
    """An app whose db has a table of three rows; yields their checksum."""
    flotilla.run("secrets", "set", app_name, "db-password", input_text=PASSWORD)
    up(flotilla, tmp_path, db_spec(app_name))
    replica = wait_for(lambda: db_replica(flotilla, app_name), timeout=60, what="the db replica")
    wait_for(lambda: psql(docker_client, replica["container_id"], "SELECT 1")[0] == 0, timeout=60, interval=0.3,
             what="PostgreSQL to accept the vault's password")
    code, out = psql(docker_client, replica["container_id"],
                     "CREATE TABLE notes (id int PRIMARY KEY, note text); "
                     "INSERT INTO notes VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    assert code == 0, out
    return wait_rows(flotilla, docker_client, app_name)


def test_rows_survive_a_killed_replica_an_image_change_a_killed_daemon_and_down_up(
        flotilla, app_name, tmp_path, docker_client, database):
    assert database.startswith("3:")
    first = db_replica(flotilla, app_name)
    code, out = psql(docker_client, first["container_id"], "SELECT 1", password="wrong")
    assert code != 0 and "password authentication failed" in out  # TCP needs the vault's password

    docker_client.containers.get(first["container_id"]).kill()  # a killed replica
    wait_for(lambda: rows_of(flotilla, docker_client, app_name) and
             db_replica(flotilla, app_name)["container_id"] != first["container_id"], timeout=90, interval=0.3,
             what="a new db replica")
    assert wait_rows(flotilla, docker_client, app_name) == database

    rolled = time.monotonic()
    up(flotilla, tmp_path, db_spec(app_name, roll="2"))  # a changed config: the replica is recreated
    second = db_replica(flotilla, app_name)
    assert second["container_id"] != first["container_id"] and second["current"]
    assert wait_rows(flotilla, docker_client, app_name) == database
    print(f"\nup with a changed config to the rows served again: {time.monotonic() - rolled:.1f}s")

    flotilla.kill_daemon()  # kill -9; the next command starts it again
    assert wait_rows(flotilla, docker_client, app_name) == database
    wait_for(lambda: converged(flotilla, app_name), timeout=60, what="convergence after the restart")
    assert db_replica(flotilla, app_name)["container_id"] == second["container_id"]  # untouched

    down = flotilla.run("down", app_name)
    assert "kept 1 volume(s)" in down.stdout, down.stdout
    kept = flotilla.json("volumes", "ls", app_name)["volumes"]
    assert [(v["service"], v["volume"], v["replica"], v["retained"]) for v in kept] == [("db", "data", "1", True)]
    assert kept[0]["size"] > 10_000_000  # a PostgreSQL cluster
    up(flotilla, tmp_path, db_spec(app_name, roll="2"))
    assert wait_rows(flotilla, docker_client, app_name) == database

    gone = flotilla.run("down", app_name, "--volumes")
    assert f"deleted volume flotilla-{app_name}-db-1-data" in gone.stdout, gone.stdout
    assert flotilla.json("volumes", "ls", app_name)["volumes"] == []


def test_backup_drop_restore_gives_identical_rows(flotilla, app_name, tmp_path, docker_client, database):
    out_dir = tmp_path / "out"
    taken = flotilla.json("backup", app_name, "db", "--output", str(out_dir))["backups"]
    assert [e["status"] for e in taken] == ["ok"] and taken[0]["size"] > 0
    copied = out_dir / os.path.basename(taken[0]["file"])
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == taken[0]["sha256"]
    assert copied.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    replica = db_replica(flotilla, app_name)
    before = dump_checksum(docker_client, replica["container_id"])

    assert psql(docker_client, replica["container_id"], "DROP TABLE notes")[0] == 0
    assert rows_of(flotilla, docker_client, app_name) is None
    refused = flotilla.run("restore", app_name, "db", taken[0]["id"], check=False)
    assert refused.returncode == 4 and "--live" in refused.stderr  # a restore into a running service
    flotilla.run("restore", app_name, "db", taken[0]["id"], "--live")
    assert wait_rows(flotilla, docker_client, app_name) == database
    assert dump_checksum(docker_client, replica["container_id"]) == before


def test_a_failing_backup_is_loud_and_leaves_no_archive(flotilla, app_name, tmp_path, docker_client, database):
    up(flotilla, tmp_path, db_spec(app_name, backup='[sh, -c, "echo half-a-dump; echo no space left >&2; exit 3"]'))
    result = flotilla.run("backup", app_name, "db", check=False)
    assert result.returncode == BACKUP_FAILED, result.stderr
    assert "exited 3" in result.stderr and "no space left" in result.stderr
    entries = _backups(flotilla, app_name)
    assert [(e["status"], e["file"], e["sha256"]) for e in entries] == [("failed", None, None)]
    assert "exited 3" in entries[0]["error"]
    listed = flotilla.run("backups", "ls", app_name, check=False)
    assert listed.returncode == BACKUP_FAILED and "FAILED" in listed.stdout
    folder = flotilla.home / "backups" / app_name
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".json")] == []  # no half-written archive
    events = flotilla.run("events", app_name).stdout
    assert "FAILED" in events
    metrics = flotilla.client().stream("/metrics")
    text = b"".join(metrics).decode()
    assert f'flotilla_backups_failed_total{{app="{app_name}",service="db"}} 1' in text


def _backups(flotilla, app: str) -> list[dict]:
    """``backups ls --json`` (which exits 11 while the newest backup failed)."""
    result = flotilla.run("backups", "ls", app, "--json", check=False)
    return json.loads(result.stdout)["backups"]


def dump_checksum(docker_client, container_id: str) -> str:
    """sha256 of a plain-text dump of the table's data (pg_dump's own order, no timestamps; a fixed
    \\restrict key, which pg_dump otherwise draws at random for every dump since 15.14)."""
    result = docker_client.containers.get(container_id).exec_run(
        ["pg_dump", "--data-only", "--table=notes", "--no-comments", "--restrict-key=flotillatest", "app"])
    assert result.exit_code == 0, result.output.decode()
    return hashlib.sha256(result.output).hexdigest()


def _restart_problem() -> str | None:
    """Why this run may not restart dockerd: only the one scripts/setup.sh started (its pid file), never a
    system's; FLOTILLA_TEST_RESTART_DOCKERD=0 opts out (a machine where other work shares the engine)."""
    if os.environ.get("FLOTILLA_TEST_RESTART_DOCKERD") == "0":
        return "FLOTILLA_TEST_RESTART_DOCKERD=0: the dockerd restart is left out"
    try:
        pid = int(Path(DOCKERD_PIDFILE).read_text())
    except (OSError, ValueError):
        return f"no {DOCKERD_PIDFILE}: scripts/setup.sh did not start this dockerd, so it is not the test's to restart"
    return None if os.path.exists(f"/proc/{pid}") else f"the dockerd of {DOCKERD_PIDFILE} (pid {pid}) is not running"


@pytest.mark.dockerd_restart
@pytest.mark.skipif(_restart_problem() is not None, reason=_restart_problem() or "")
def test_rows_survive_a_dockerd_restart_and_serve_again_unattended(flotilla, app_name, tmp_path, docker_client,
                                                                   database):
    """Everything serves again: the database with its rows, and a Redis Cluster (3 x 1) whose nodes all
    come back at once with new IPs, some taking addresses their peers had."""
    cached = f"{app_name}c"
    flotilla.apps.add(cached)
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, cache_spec(cached), "cache.yaml")), timeout=240)
    wait_for(lambda: cache_ready(flotilla, cached), timeout=120, interval=0.5, what="the cache to form")
    before = db_replica(flotilla, app_name)["container_id"]
    restarted = time.monotonic()
    restart_dockerd()
    rows = wait_rows(flotilla, docker_client, app_name, timeout=300)
    took = time.monotonic() - restarted
    wait_for(lambda: cache_ready(flotilla, cached), timeout=180, interval=0.5,
             what="the Redis Cluster to be ready again after the dockerd restart")
    healed = time.monotonic() - restarted
    print(f"\nafter the dockerd restart, with no human action: PostgreSQL served its rows again in {took:.1f}s, "
          f"the Redis Cluster was ready again in {healed:.1f}s")
    assert rows == database
    assert db_replica(flotilla, app_name)["container_id"] != before  # Flotilla replaced the stopped replica


def cache_ready(flotilla, app: str) -> bool:
    return bool(app_status(flotilla, app)["caches"][0]["ready"])


def restart_dockerd() -> None:
    """Stop the dockerd scripts/setup.sh started (its pid file) and start it again the same way."""
    pid = int(Path(DOCKERD_PIDFILE).read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=60, interval=0.2, what="dockerd to stop")
    with open(DOCKERD_LOG, "ab") as log:
        started = subprocess.Popen(["dockerd", "--userns-remap=default"], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    with open(DOCKERD_PIDFILE, "w") as pidfile:
        pidfile.write(f"{started.pid}\n")
    wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, timeout=60,
             interval=0.25, what="dockerd to answer")


def test_a_backup_cut_short_by_kill_9_of_the_daemon_is_failed_when_it_is_back(flotilla, app_name, tmp_path,
                                                                             docker_client, database):
    up(flotilla, tmp_path, db_spec(app_name, backup='[sh, -c, "echo the first rows; sleep 60"]'))
    cli = subprocess.Popen([*flotilla.command_prefix(), "backup", app_name, "db"], env=flotilla.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [e["status"] for e in _backups(flotilla, app_name)] == ["running"], timeout=60,
                 interval=0.3, what="the backup to be running")
        flotilla.kill_daemon()
    finally:
        cli.kill()
        cli.wait(timeout=30)
    entries = wait_for(lambda: [e for e in _backups(flotilla, app_name) if e["status"] == "failed"], timeout=60,
                       interval=0.3, what="the restarted daemon to fail the interrupted backup")
    assert "interrupted" in entries[0]["error"] and entries[0]["file"] is None
    folder = flotilla.home / "backups" / app_name
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".json")] == []  # its partial file is gone
