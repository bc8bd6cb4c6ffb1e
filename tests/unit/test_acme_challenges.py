"""The HTTP-01 answer rule (gateway/challenges.py) and the map it reads (challenge_map.py).

Pure rendering; the map is driven through an in-memory Runtime API stand-in that
records the commands. That HAProxy serves the answers is proven with a real
HAProxy and pebble in tests/integration/test_acme_pebble.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.errors import GatewayError
from flotilla.gateway.challenge_map import ChallengeMap
from flotilla.gateway.challenges import ACME_CHALLENGE_ACL, challenge_lines
from flotilla.gateway.config import build_gateway_config, render_config
from flotilla.gateway.model import TlsPaths
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec, TlsSpec
from tests.support.gateway_specs import app, build, route, service

MAP = "/run/flotilla/gateway/acme-challenges.map"
SHOP = app("shop", web=service(route("shop.example")))


def test_every_frontend_answers_challenges_from_the_map_before_any_route():
    text = render_config(build(SHOP), runtime_socket="/run/h.sock", challenge_map=MAP)
    frontend = text[text.index("frontend "):text.index("backend ")]
    answer = frontend.index("http-request return status 200")
    assert f"map({MAP})" in frontend and f"acl {ACME_CHALLENGE_ACL} path_beg /.well-known/acme-challenge/" in frontend
    assert answer < frontend.index("set-var(txn.route)") and answer < frontend.index("status 404")
    assert "-m found" in frontend[answer:].splitlines()[0]  # an unknown token falls through to the routes


def test_no_map_no_rule_and_a_path_haproxy_would_split_is_refused():
    assert challenge_lines(None) == []
    assert "map(" not in render_config(build(SHOP), runtime_socket="/run/h.sock")
    for bad in ("relative/map", "/with space/map", "/quote'd"):
        with pytest.raises(ValueError, match="absolute path of plain characters"):
            challenge_lines(bad)


class Recorder:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def command(self, line: str) -> str:
        self.commands.append(line)
        if line.startswith("del map"):
            raise GatewayError(f"HAProxy refused `{line}`: Key not found.")
        return ""


def test_a_published_answer_goes_to_the_file_and_to_the_running_gateway(tmp_path):
    runtime = Recorder()
    answers = ChallengeMap(tmp_path / "acme.map", runtime)
    answers.publish("abc_-1", "abc_-1.thumb")
    assert (tmp_path / "acme.map").read_text() == "abc_-1 abc_-1.thumb\n"
    assert runtime.commands[-1] == f"add map {tmp_path / 'acme.map'} abc_-1 abc_-1.thumb"
    answers.withdraw("abc_-1")
    assert (tmp_path / "acme.map").read_text() == "" and answers.tokens() == ()
    assert runtime.commands[-1] == f"del map {tmp_path / 'acme.map'} abc_-1"


@given(st.text(min_size=1, max_size=20).filter(lambda t: any(c in t for c in " ;\n\r\t#'\"\\")))
def test_nothing_that_could_smuggle_a_command_or_a_map_line_is_published(token):
    runtime = Recorder()
    answers = ChallengeMap(Path("/nonexistent/acme.map"), runtime)
    with pytest.raises(GatewayError):
        answers.publish(token, "a.b")
    with pytest.raises(GatewayError):
        answers.publish("token", token)
    assert runtime.commands == []


def test_the_answer_comes_before_the_https_redirect_of_an_acme_route():
    routes = (RouteSpec(host="shop.example", tls=TlsSpec(acme=True)),)
    spec = AppSpec(app="shop", gateway=GatewaySpec(listen_port=48080, https_port=8443),
                   services={"web": ServiceSpec(image="img:1", port=8000, routes=routes)})
    paths = TlsPaths(default_cert="/run/fl/-gateway/default.pem", crt_list="/run/fl/-gateway/crt-list")
    text = render_config(build_gateway_config({"shop": spec}, {}, tls=paths), runtime_socket="/x.sock",
                         challenge_map=MAP)
    answer, redirect = text.index("http-request return status 200"), text.index("code 308")
    assert answer < redirect and f"!{ACME_CHALLENGE_ACL}" in text[redirect:].splitlines()[0]
