"""Who HAProxy's workers run as: the account named by FLOTILLA_GATEWAY_USER, never root.

Pure lookups in the host's user database; that the workers really switch is
proven on a running gateway in tests/integration/test_gateway.py.
"""

from __future__ import annotations

import pytest

from flotilla.errors import GatewayError
from flotilla.gateway.config import render_config
from flotilla.gateway.workers import WorkerAccount, worker_account, worker_user
from tests.support.gateway_specs import build


def test_the_setting_names_the_user_and_haproxy_is_the_default():
    assert worker_user({}) == "haproxy"
    assert worker_user({"FLOTILLA_GATEWAY_USER": ""}) == "haproxy"
    assert worker_user({"FLOTILLA_GATEWAY_USER": "gw"}) == "gw"


def test_an_existing_user_comes_with_its_primary_group():
    assert worker_account("nobody", euid=lambda: 0) == WorkerAccount(user="nobody", group="nogroup")


def test_a_daemon_that_is_not_root_has_nothing_to_drop():
    assert worker_account("no-such-user-here", euid=lambda: 1000) is None


@pytest.mark.parametrize(("user", "problem"), [
    ("no-such-user-here", "user 'no-such-user-here', which does not exist on this host"),
    ("root", "may not run as 'root' (uid 0)"),
])
def test_a_missing_user_or_root_is_refused_with_what_to_do(user, problem):
    with pytest.raises(GatewayError) as caught:
        worker_account(user, euid=lambda: 0)
    assert problem in caught.value.message
    assert "install the haproxy package (it creates the user) or set FLOTILLA_GATEWAY_USER" in caught.value.message


def test_the_global_section_names_the_workers_account():
    text = render_config(build(), runtime_socket="/x.sock", workers=WorkerAccount(user="haproxy", group="haproxy"))
    global_section = text[text.index("global"):text.index("defaults")]
    assert "    user haproxy\n    group haproxy\n" in global_section
    assert "user " not in render_config(build(), runtime_socket="/x.sock")
