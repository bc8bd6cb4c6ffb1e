"""The TCP API's bearer token is never empty, and its file is checked as strictly as master.key.

Issue 13, break 5: an empty ``api.token`` authorised ``Authorization: Bearer`` with nothing
after it, and a 0644 token file was used without a word while a loose master.key is refused.
"""

from __future__ import annotations

import os

import pytest

from flotilla.daemon.api import BearerToken
from flotilla.daemon.paths import Home
from flotilla.daemon.server import TOKEN_VARIABLE, api_token
from flotilla.errors import DaemonError, SecretsError
from flotilla.secrets.keys import KEY_FILE_NAME, load_master_key


def token_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "api.token"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def scope(authorization: str) -> dict:
    return {"type": "http", "headers": [(b"authorization", authorization.encode())]}


@pytest.mark.parametrize("value", ["", "   ", "\n", "\t \n"])
def test_an_empty_environment_token_is_refused_not_replaced_by_the_file(tmp_path, value: str) -> None:
    token_file(tmp_path, "file-token\n")
    with pytest.raises(DaemonError, match=f"{TOKEN_VARIABLE} is empty"):
        api_token(Home(tmp_path), {TOKEN_VARIABLE: value})


@pytest.mark.parametrize("text", ["", "\n", "  \n  "])
def test_an_empty_token_file_is_refused(tmp_path, text: str) -> None:
    path = token_file(tmp_path, text)
    with pytest.raises(DaemonError, match=f"the API token file {path} is empty"):
        api_token(Home(tmp_path), {})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_a_loose_token_file_is_refused_as_a_loose_master_key_is(tmp_path, mode: int) -> None:
    path = token_file(tmp_path, "a-real-token\n", mode)
    with pytest.raises(SecretsError, match=rf"the API token file {path} is open to other users \(mode 0{mode:o}\)"):
        api_token(Home(tmp_path), {})
    (tmp_path / KEY_FILE_NAME).write_text("x")
    os.chmod(tmp_path / KEY_FILE_NAME, mode)
    with pytest.raises(SecretsError, match="is open to other users"):  # the same check, the same words
        load_master_key(home=tmp_path, environ={})


def test_a_token_file_that_is_not_a_regular_file_is_refused(tmp_path) -> None:
    (tmp_path / "api.token").mkdir(mode=0o700)
    with pytest.raises(SecretsError, match="is not a regular file"):
        api_token(Home(tmp_path), {})


def test_a_new_token_file_is_private_and_kept(tmp_path) -> None:
    first = api_token(Home(tmp_path), {})
    assert len(first) >= 32 and oct((tmp_path / "api.token").stat().st_mode & 0o777) == "0o600"
    assert api_token(Home(tmp_path), {}) == first


def test_bearer_with_nothing_never_authorises(tmp_path) -> None:
    for environ in ({}, {TOKEN_VARIABLE: "  env-token  "}):
        gate = BearerToken(app=None, token=api_token(Home(tmp_path), environ))
        assert not gate.authorized(scope("Bearer "))
        assert not gate.authorized(scope("Bearer"))
        assert not gate.authorized(scope(""))
    assert gate.authorized(scope("Bearer env-token"))


@pytest.mark.parametrize("token", ["", "  \n"])
def test_the_gate_itself_refuses_to_guard_with_an_empty_token(token: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        BearerToken(app=None, token=token)
