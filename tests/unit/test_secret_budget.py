"""The shared secrets tmpfs has a budget: refused at validation, and a full one fails cleanly.

Issue 13, break 11: the tmpfs (/run/flotilla-secrets, 64 MiB) is shared by every app and daemon
of the host, and a spec could ask for far more (1,100 file targets x 100 replicas). Here: the
pure footprint, ``up`` and ``scale`` refusing what cannot fit, a full tmpfs while materialising
(an injected writer) leaving no directory and no container, and ``mount`` run without the
daemon's environment.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from flotilla.daemon.injection import SecretInjector
from flotilla.errors import SecretsError, SpecError
from flotilla.secrets import Vault, generate_key
from flotilla.secrets import injection as ram
from flotilla.secrets.budget import MIB, PAGE, ROLLOUT_SURGE, TMPFS_BYTES, budget_problem, pages, service_need
from flotilla.secrets.injection import MOUNT_ENV, SHIM, SecretsRuntime
from flotilla.spec import spec_from_dict
from tests.support.memory_engine import MemoryEngine

BIG = 64 * 1024  # the largest value the vault holds


def test_files_take_whole_pages() -> None:
    assert [pages(n, page=4096) for n in (0, 1, 4096, 4097, BIG)] == [0, 4096, 4096, 8192, BIG]


def test_a_replica_holds_the_shim_and_a_file_per_secret_and_the_rollout_surge_counts() -> None:
    need = service_need(service="web", value_sizes=[10, 5000], most_replicas=3, shim_size=len(SHIM), page=4096)
    assert need.per_replica == 4096 + 4096 + 8192 and need.replicas == 3 + ROLLOUT_SURGE


def test_the_issue_spec_is_refused_with_its_numbers() -> None:
    need = service_need(service="web", value_sizes=[BIG] * 64, most_replicas=100, shim_size=len(SHIM))
    service, message, hint = budget_problem(app="shop", needs=[need], room=60 * MIB)
    assert service == "web"
    assert "need 404.4 MiB" in message and "web: 101 x 4.0 MiB" in message and "only 60.0 MiB" in message
    assert "autoscale.max" in hint


def test_what_fits_is_fine() -> None:
    need = service_need(service="web", value_sizes=[100, 100], most_replicas=10, shim_size=len(SHIM))
    assert need.total == 11 * 3 * PAGE
    assert budget_problem(app="shop", needs=[need], room=need.total) is None


def spec(**web) -> dict:
    return {"app": "shop", "services": {"web": {"image": "x", **web}}}


@pytest.fixture
def injector(tmp_path) -> SecretInjector:
    vault = Vault(tmp_path / "vault.db", generate_key(), clock=lambda: 1.0)
    for i in range(40):
        vault.set("shop", f"key-{i}", b"k" * BIG)
    runtime = SecretsRuntime(home=tmp_path, shared_root=tmp_path / "not-mounted")  # room: the whole tmpfs
    return SecretInjector(vault=vault, runtime=runtime, engine=MemoryEngine(), keys=None)


FORTY = {f"/run/secrets/{i}": f"key-{i}" for i in range(40)}  # 2.5 MiB a replica


def test_up_counts_autoscale_max_not_the_starting_replicas(injector) -> None:
    injector.check(spec_from_dict(spec(secrets=FORTY, replicas=20)))  # 21 x 2.5 MiB fits in 64 MiB
    scaled = spec(secrets=FORTY, autoscale={"min": 1, "max": 30, "target": {"concurrency": 5}})
    with pytest.raises(SpecError) as caught:
        injector.check(spec_from_dict(scaled))
    (problem,) = caught.value.problems
    assert problem.path == "services.web.secrets" and "web: 31 x 2.5 MiB" in problem.message
    assert f"{TMPFS_BYTES // MIB}.0 MiB in all" in problem.message


def test_scale_beyond_the_budget_is_refused(injector) -> None:
    problems = injector.budget_problems(spec_from_dict(spec(secrets=FORTY, replicas=40)))
    assert problems and "web: 41 x 2.5 MiB" in problems[0].message


# -- a full tmpfs -------------------------------------------------------------------------------

def full_after(count: int):
    written = []

    def write(path, data: bytes) -> None:
        if len(written) == count:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        path.write_bytes(data)
    return write


@pytest.fixture
def on_ram(monkeypatch):
    monkeypatch.setattr(ram, "_on_ram", lambda path: True)  # tmp_path stands in for the tmpfs


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_tmpfs_is_a_clear_error_and_leaves_no_directory(tmp_path, on_ram, errno_) -> None:
    def write(path, data):
        raise OSError(errno_, "full")

    runtime = SecretsRuntime(home=tmp_path, shared_root=tmp_path / "ram", write=full_after(2))
    with pytest.raises(SecretsError, match=r"secrets tmpfs .* is full .*web-1 was not started"):
        runtime.materialize(app="shop", replica="web-1", env={"A": b"a"}, files={"/run/x": b"x", "/run/y": b"y"})
    assert runtime.replicas("shop") == set()
    runtime = SecretsRuntime(home=tmp_path, shared_root=tmp_path / "ram", write=write)
    with pytest.raises(SecretsError, match="is full"):
        runtime.materialize(app="shop", replica="web-1", env={}, files={"/run/x": b"x"})
    assert runtime.replicas("shop") == set()


def test_a_full_tmpfs_starts_no_container(tmp_path, on_ram) -> None:
    from tests.unit.test_reconciler import Clock, Daemon

    daemon = Daemon(tmp_path / "state.db", MemoryEngine(), Clock())
    vault = Vault(tmp_path / "vault.db", generate_key(), clock=lambda: 1.0)
    vault.set("shop", "tls-key", b"key")
    runtime = SecretsRuntime(home=tmp_path, shared_root=tmp_path / "ram", write=full_after(1))
    daemon.reconciler._injector = SecretInjector(vault=vault, runtime=runtime, engine=daemon.engine, keys=None)
    daemon.up(spec_from_dict(spec(secrets={"/run/secrets/tls.key": "tls-key"})))
    assert daemon.engine.replicas("shop") == []
    (message,) = daemon.events("error")
    assert "could not start: the secrets tmpfs" in message and "is full" in message
    assert runtime.replicas("shop") == set()


def test_a_short_write_is_completed_not_a_truncated_secret(tmp_path, monkeypatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data)[:3]))
    ram._write(tmp_path / "f", b"0123456789")
    assert (tmp_path / "f").read_bytes() == b"0123456789"


def test_mount_runs_with_a_clean_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLOTILLA_MASTER_KEY", "k" * 44)
    calls = []

    def run(args, **kwargs):
        calls.append(kwargs.get("env"))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(ram.subprocess, "run", run)
    ram._mount_tmpfs(tmp_path / "m")
    assert calls == [MOUNT_ENV] and "FLOTILLA_MASTER_KEY" not in MOUNT_ENV
