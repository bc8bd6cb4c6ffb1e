"""A full secrets tmpfs, for real: a 1 MiB tmpfs this test mounts itself (and unmounts).

Issue 13, break 11. The shared tmpfs is never filled here (other daemons on the host use it):
the runtime is pointed at a tmpfs of the test's own, which the kernel really fills (ENOSPC).
The budget sees its real free space, and a replica that does not fit leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from flotilla.errors import SecretsError
from flotilla.secrets.budget import MIB
from flotilla.secrets.injection import SecretsRuntime

BIG = 64 * 1024


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    ram = tmp_path / "ram"
    ram.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0711", "fl-test-secrets", str(ram)], check=True,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        yield ram
    finally:
        subprocess.run(["umount", str(ram)], check=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def free(path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def test_a_replica_that_does_not_fit_leaves_nothing_and_says_so(tmp_path, small_tmpfs):
    runtime = SecretsRuntime(home=tmp_path / "home", shared_root=small_tmpfs)
    assert runtime.room("shop") == free(small_tmpfs) == MIB
    fits = runtime.materialize(app="shop", replica="web-1", env={"A": b"a"}, files={"/run/x": b"x" * BIG})
    assert runtime.room("shop") == MIB  # what the app holds counts as its own
    before = free(small_tmpfs)
    files = {f"/run/secrets/{i}": b"k" * BIG for i in range(20)}  # 1.25 MiB: more than is left
    with pytest.raises(SecretsError, match=r"is full \(No space left on device\), so web-2 was not started"):
        runtime.materialize(app="shop", replica="web-2", env={}, files=files)
    assert runtime.replicas("shop") == {"web-1"} and free(small_tmpfs) == before
    assert os.path.isdir(fits.host_dir)
    runtime.remove_app("shop")
