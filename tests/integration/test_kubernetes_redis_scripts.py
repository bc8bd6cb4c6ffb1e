"""The Redis Cluster node scripts of the Kubernetes target, run with a real redis-server.

start.sh is what every cache pod runs; here it runs on this machine, inside a
network namespace of its own (so port 6379 clashes with nothing and nothing
leaves it), with the environment the StatefulSet gives it. It must start a
cluster-enabled node that announces its DNS name, takes its password from the
mounted file through standard input (so the password is in no process's
argv), and ready.sh must keep the node unready until the cluster is formed.
Skipped with the reason without redis-server (Debian's redis-tools ships it
as redis-check-rdb) or without ``unshare``.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from flotilla.engines.kubernetes import redis

PASSWORD = "pw-9d1c2e7b"


def _redis_server(bin_dir: Path) -> bool:
    if shutil.which("redis-server"):
        return True
    check = shutil.which("redis-check-rdb")  # the same binary; it picks its role from argv[0]
    if not check:
        return False
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(check)
    return True


@pytest.fixture
def workdir(tmp_path):
    bin_dir = tmp_path / "bin"
    if not _redis_server(bin_dir) or not shutil.which("redis-cli"):
        pytest.skip("redis-server and redis-cli are not installed (apt-get install redis-tools)")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare --net needs root)")
    for name, text in redis.SCRIPTS.items():
        (tmp_path / name).write_text(text.replace("--dir /data", f"--dir {tmp_path / 'data'}"))
    (tmp_path / "data").mkdir()
    (tmp_path / "password").write_text(PASSWORD)
    return tmp_path


def test_start_and_ready_scripts(workdir):
    driver = workdir / "driver.sh"
    driver.write_text(textwrap.dedent(f"""\
        ip link set lo up
        export PATH="{workdir / 'bin'}:$PATH" PASSWORD_FILE="{workdir / 'password'}" POD_NAME=sessions-1
        export NODE_DOMAIN=sessions.shop.svc.cluster.local NODE_TIMEOUT_MS=5000 MAXMEMORY=67108864
        export APPENDONLY=yes RDB_SNAPSHOTS=no NODES=6 CACHE_NAME=sessions
        sh "{workdir / 'start.sh'}" > "{workdir / 'redis.log'}" 2>&1 &
        pid=$!
        for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q NOAUTH && break; sleep 0.1; done
        echo "argv: $(tr '\\0' ' ' < /proc/$pid/cmdline)"
        echo "noauth: $(redis-cli -h 127.0.0.1 ping 2>&1)"
        export REDISCLI_AUTH="{PASSWORD}"
        for key in cluster-enabled cluster-announce-hostname cluster-preferred-endpoint-type \\
            maxmemory appendonly save; do
          echo "$key: $(redis-cli -h 127.0.0.1 config get $key | tail -n 1)"
        done
        unset REDISCLI_AUTH
        sh "{workdir / 'ready.sh'}"; echo "ready: $?"
        kill $pid; wait $pid
        """))
    proc = subprocess.run(["unshare", "--net", "sh", str(driver)], capture_output=True, text=True, timeout=60)
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert lines.get("cluster-enabled") == "yes", proc.stdout + proc.stderr
    assert lines["argv"].startswith("redis-server *:6379") and PASSWORD not in lines["argv"]
    assert "NOAUTH" in lines["noauth"]
    assert lines["cluster-announce-hostname"] == "sessions-1.sessions.shop.svc.cluster.local"
    assert lines["cluster-preferred-endpoint-type"] == "hostname"
    assert lines["maxmemory"] == "67108864" and lines["appendonly"] == "yes" and lines["save"] == ""
    assert lines["ready"] == "1"  # a node alone is not a cluster: not ready until the Job forms it
