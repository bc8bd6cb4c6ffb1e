"""A daemon asked to serve its API over TCP refuses to start with a token anyone could guess or read.

Issue 13, break 5: with an empty ``api.token`` the daemon served ``Authorization: Bearer`` (nothing
after it) as authorised, and a 0644 token file was used without a word. Each case here starts a
real daemon, which must exit with the reason before it listens; one that started instead is
killed by the timeout and the test fails.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.docker
START_TIMEOUT = 15


def start_daemon(flotilla, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [*flotilla.command_prefix(), "daemon", "--api-listen", f"127.0.0.1:{free_port()}"],
            env={**flotilla.env, **(env or {})}, capture_output=True, text=True, timeout=START_TIMEOUT,
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        pytest.fail("the daemon started and served instead of refusing its token")


def token_file(flotilla, text: str, *, mode: int = 0o600, owner: int | None = None) -> None:
    flotilla.home.mkdir(parents=True, exist_ok=True)
    path = flotilla.home / "api.token"
    path.write_text(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, -1)


@pytest.mark.parametrize(("env", "file", "reason"), [
    ({"FLOTILLA_API_TOKEN": ""}, None, "FLOTILLA_API_TOKEN is empty"),
    ({"FLOTILLA_API_TOKEN": "  "}, None, "FLOTILLA_API_TOKEN is empty"),
    ({}, {"text": ""}, "api.token is empty"),
    ({}, {"text": "\n"}, "api.token is empty"),
    ({}, {"text": "long-enough-token\n", "mode": 0o644}, "is open to other users (mode 0644)"),
    ({}, {"text": "long-enough-token\n", "owner": 65534}, "belongs to uid 65534"),
], ids=["env-empty", "env-blank", "file-empty", "file-newline", "file-0644", "file-foreign-owner"])
def test_the_daemon_refuses_a_weak_token(flotilla, env: dict, file: dict | None, reason: str) -> None:
    if file is not None:
        token_file(flotilla, **file)
    result = start_daemon(flotilla, env)
    assert result.returncode != 0
    assert reason in result.stderr, result.stderr
