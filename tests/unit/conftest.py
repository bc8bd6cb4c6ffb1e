"""tests/unit means pure: no sockets, no subprocesses (so no Docker, no namespaces, no root).

Why it exists: a unit test that quietly opens a socket or runs a program is
slow, needs a machine set up for it, and fails for reasons that are not its
subject; it belongs in tests/integration (or a folder named for what it
needs). This guard enforces the rule instead of hoping for it: for every test
here, connecting or binding any socket (TCP, UDP or Unix: the Docker SDK and
the daemon's client connect too) and starting any subprocess fails the test,
naming what was attempted. The failure is raised as pytest's own outcome, which
``except Exception`` in the code under test cannot swallow, and is checked
again when the test ends in case something caught it anyway.

Imports happen at collection, outside the guard; a library that probes the
network when first imported (urllib3 binds ::1 to learn whether IPv6 works)
must be imported at module level, not inside a test.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

WHERE_TO = "tests/unit is pure; move this test to tests/integration (or a folder named for what it needs)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_in_call = report.failed  # read by the guard: one failure per attempt, not two
    return report


@pytest.fixture(autouse=True)
def no_sockets_or_subprocesses(monkeypatch, request):
    attempts: list[str] = []

    def refuse(what: str) -> None:
        attempts.append(what)
        pytest.fail(f"{request.node.nodeid} tried {what}: {WHERE_TO}")

    def refused_socket_call(name: str):
        def call(sock: socket.socket, address, *args, **kwargs):
            refuse(f"socket.{name}({address!r})")
        return call

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refused_socket_call(name))

    def refused_popen(popen, args, *rest, **kwargs):
        refuse(f"subprocess.Popen({args!r})")

    monkeypatch.setattr(subprocess.Popen, "__init__", refused_popen)
    yield
    if attempts and not getattr(request.node, "failed_in_call", False):
        pytest.fail(f"{request.node.nodeid} tried {attempts[0]} (and caught the failure): {WHERE_TO}")
