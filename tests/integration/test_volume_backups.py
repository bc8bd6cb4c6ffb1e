"""A volume archived with its service stopped, and restored into it: the path without a backup command.

The service is stopped for the archive (its entry and an event say how long) and started
again; the tar is made inside the user namespace by a helper container, so owners and modes
come back as they were; a restore is refused while the service runs unless --stop.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.support.cli import ps
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker
CONFLICT = 4


def files_spec(app: str) -> str:
    return f"""\
app: {app}
services:
  files:
    image: flotilla/python:bookworm
    command: [python3, -c, "import time; time.sleep(10**9)"]
    cap_add: [CHOWN]  # only so that the test can give a file another owner
    volumes:
      uploads: /srv/uploads
"""


def replica_id(flotilla, app: str) -> str:
    rows = [r for r in ps(flotilla, app) if r["state"] == "running"]
    return rows[0]["container_id"] if len(rows) == 1 else ""


def sh(docker_client, container_id: str, script: str) -> str:
    result = docker_client.containers.get(container_id).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


def test_a_volume_is_archived_stopped_and_restored_with_its_owners(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, files_spec(app_name))), timeout=240)
    first = wait_for(lambda: replica_id(flotilla, app_name), timeout=60, what="the files replica")
    sh(docker_client, first, "echo hello > /srv/uploads/a.txt && mkdir -m 0701 /srv/uploads/d"
       " && chown 1234:99 /srv/uploads/d")

    out = tmp_path / "out"
    taken = flotilla.json("backup", app_name, "files", "--output", str(out))["backups"]
    assert [(e["kind"], e["volume"], e["slot"], e["status"]) for e in taken] == [("volume", "uploads", 1, "ok")]
    assert 0 < taken[0]["stopped_for"] < 60
    print(f"\nthe service was stopped {taken[0]['stopped_for']:.1f}s for its volume backup")
    with tarfile.open(fileobj=io.BytesIO((out / f"{taken[0]['id']}.tar").read_bytes())) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert members["./a.txt"].size == len("hello\n") and members["./d"].mode & 0o777 == 0o701
    assert (members["./d"].uid, members["./d"].gid) == (1234, 99)  # the container's ids, not the host's
    second = wait_for(lambda: replica_id(flotilla, app_name), timeout=60, what="the service started again")
    assert second != first
    assert "stopped for" in flotilla.run("events", app_name).stdout

    sh(docker_client, second, "rm -r /srv/uploads/a.txt /srv/uploads/d && echo stray > /srv/uploads/b.txt")
    refused = flotilla.run("restore", app_name, "files", taken[0]["id"], check=False)
    assert refused.returncode == CONFLICT and "--stop" in refused.stderr
    assert replica_id(flotilla, app_name) == second  # refused: nothing stopped
    copy = out / f"{taken[0]['id']}.tar"  # a file outside the home: the CLI copies it in for the daemon
    restored = json.loads(flotilla.run("restore", app_name, "files", "uploads", str(copy), "--stop",
                                       "--json").stdout)
    assert restored["sha256"] == taken[0]["sha256"]
    third = wait_for(lambda: replica_id(flotilla, app_name), timeout=60, what="the service after the restore")
    listing = sh(docker_client, third, "cat /srv/uploads/a.txt; stat -c '%n %a %u:%g' /srv/uploads/d; ls /srv/uploads")
    assert listing.splitlines() == ["hello", "/srv/uploads/d 701 1234:99", "a.txt", "d"]  # no b.txt: replaced whole


def test_a_scheduled_backup_runs_on_time_and_keeps_the_newest(flotilla, app_name, tmp_path, docker_client):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, files_spec(app_name))), timeout=240)
    first = wait_for(lambda: replica_id(flotilla, app_name), timeout=60, what="the files replica")
    sh(docker_client, first, "echo nightly > /srv/uploads/n.txt")  # before any backup stops the service
    spec = files_spec(app_name) + '    backup: {schedule: "* * * * * */4", keep: 2}\n'  # every 4 s (seconds last)
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec, "scheduled.yaml")), timeout=240)

    def scheduled() -> list[dict]:
        entries = json.loads(flotilla.run("backups", "ls", app_name, "--json", check=False).stdout)["backups"]
        return [e for e in entries if e["trigger"] == "schedule"]

    wait_for(lambda: "removed backup" in flotilla.run("events", app_name).stdout, timeout=90, interval=0.5,
             what="a third scheduled backup, and the retention removing the first")
    found = scheduled()
    assert 1 <= len(found) <= 2 and all(e["status"] == "ok" for e in found)  # keep: 2
    dues = sorted(e["due"] for e in found)
    assert all(b - a >= 4 for a, b in zip(dues, dues[1:], strict=False))  # each due time once, never doubled
    assert all(abs(e["started"] - e["due"]) < 3 for e in found)  # taken at its time (a 1 s look, a loaded host)
    with tarfile.open(found[-1]["file"]) as archive:
        assert archive.extractfile("./n.txt").read() == b"nightly\n"


def test_a_host_path_is_mounted_only_with_the_opt_in(flotilla, app_name, tmp_path, docker_client):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "seed.txt").write_text("from the host\n")
    shared.chmod(0o755)
    body = files_spec(app_name).replace("      uploads: /srv/uploads\n",
                                        f"      seed: {{path: /seed, bind: {shared}, read_only: true}}\n")
    refused = flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, body)), check=False)
    assert refused.returncode == 2 and "add allow_host_paths: true" in refused.stderr
    assert not [c for c in docker_client.containers.list(all=True, filters={"label": f"io.flotilla.app={app_name}"})]
    opted = body.replace("    volumes:\n", "    allow_host_paths: true\n    volumes:\n")
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, opted)), timeout=240)
    replica = wait_for(lambda: replica_id(flotilla, app_name), timeout=60, what="the files replica")
    assert sh(docker_client, replica, "cat /seed/seed.txt") == "from the host\n"
    write = docker_client.containers.get(replica).exec_run(["sh", "-c", "echo x > /seed/new"])
    assert write.exit_code != 0 and not (shared / "new").exists()  # read_only
    assert flotilla.json("volumes", "ls", app_name)["volumes"] == []  # not Flotilla's: nothing to list or delete
