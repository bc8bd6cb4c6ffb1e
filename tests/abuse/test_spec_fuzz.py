"""Hostile specs: refused with a SpecError, or rendered into a gateway HAProxy loads, harmless to other apps.

Issue 12 found route paths that validated and then broke the gateway for
every app (a NUL: ``haproxy -c`` refused the file; a lone surrogate: the file
could not be written), a listen address that validated and then raised
ValueError inside config building, and a second app that took the first
one's requests with a longer path or a more specific host. These properties
would have found each: hosts, paths, listen addresses and app and service
names are drawn from every Unicode category (``st.characters()``, plus lone
surrogates, which it leaves out) and from the characters that break configs
and parsers (NUL, CR/LF, spaces, '#', quotes, backslash, '%'), near the hosts
of a fixed app so that clashes are frequent. For each spec:

* validation refuses it with a SpecError whose problems are one printable
  line each, or
* the spec renders (gateway/config.py build + render) as ASCII that the real
  ``haproxy -c`` accepts, and
* beside the fixed app on the gateway it is refused by ``check_gateway``, or
  it leaves the fixed app's backends, route ACLs and routing unchanged: every
  request the fixed app served goes to the same route.

Derandomized and without the example database, so CI sees the same examples
every run; about 35 s here (2 cores), most of it in haproxy -c.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flotilla.daemon.operations import check_gateway
from flotilla.errors import ConflictError, SpecError
from flotilla.gateway.config import build_gateway_config, render_config
from flotilla.gateway.model import GatewayConfig, Server
from flotilla.spec import AppSpec, spec_from_dict
from tests.abuse.gateway_model import HAPROXY, HAVE_HAPROXY, first_route, frontend_of, haproxy_refusal, request_host

pytestmark = pytest.mark.skipif(not HAVE_HAPROXY, reason=f"HAProxy is not installed ({HAPROXY}); "
                                "apt-get install haproxy")

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SOCKET = "/run/flotilla-abuse/haproxy.sock"
FIXED_LISTEN = "127.0.0.1:18080"
FIXED = spec_from_dict({
    "app": "shop",
    "gateway": {"listen": FIXED_LISTEN},
    "services": {
        "web": {"image": "web:1", "port": 8000, "routes": [
            {"host": "shop.localhost", "path": "/"}, {"host": "*.shop.example", "path": "/"}]},
        "api": {"image": "api:1", "port": 8000, "routes": [
            {"host": "shop.localhost", "path": "/api", "strip_prefix": True}]},
    },
})
FIXED_ROUTE_COUNT = 3
FIXED_SERVERS = {("shop", "web"): [Server("shop-web-1-abc123", "10.1.0.1", 8000, True)],
                 ("shop", "api"): [Server("shop-api-1-abc123", "10.1.0.2", 8000, False)]}

_ROUTE_SELECTION = rf"^ +# (r\d+): \S+ -> be_{FIXED.app}_.*\n(?: +acl \1_.*\n)+ +http-request set-var.*\n"
# What breaks configuration files, parsers and terminals, one piece at a time.
HOSTILE = ["\x00", "\r", "\n", "\r\n", " ", "\t", "#", "?", "'", '"', "\\", "%", "%2", "%zz", "%4a",
           "%00", "$", "${X}", ";", "{", "}", "[", "]", "*", "*.", ".", "..", "-", "_", ":", "@", "/",
           "\x7f", "\x85", "\u2028", "\ufeff", "é", "\u212a", "\u0130", "ß", "\U0001f600"]
PATH_PUNCTUATION = ["-", ".", "~", "%41", "%c3%a9", "'", "(", ")", "*", "+", ",", ";", "=", ":", "@", "!",
                    "$", "&", "$HOME"]
WORDS = ["shop", "localhost", "example", "admin", "login", "api", "a", "0", "xn--bcher-kva"]
NEAR_FIXED_HOSTS = ["shop.localhost", "SHOP.LocalHost", "admin.shop.example", "*.shop.example",
                    "shop.example", "api.shop.localhost", "*.localhost", "blog.localhost", "*.a.shop.example"]
LISTENS = [FIXED_LISTEN, "127.0.0.1:18081", "[::1]:18080", "[0:0::1]:18080", "localhost:18080",
           "[::1%1]:18081", "[fe80::1%eth0]:18080", "0.0.0.0:18082"]

piece = st.one_of(
    st.sampled_from(HOSTILE + WORDS),
    st.text(st.characters(), min_size=1, max_size=3),  # every Unicode category but surrogates
    st.characters(categories=["Cs"]),  # lone surrogates, as JSON's "\ud800" delivers them
)
hostile_text = st.lists(piece, max_size=6).map("".join)


def mostly(valid: st.SearchStrategy[str], *, otherwise: st.SearchStrategy[str] = hostile_text, one_in: int = 8
           ) -> st.SearchStrategy[str]:
    """``valid``, or ``otherwise`` once in ``one_in``: with about eight fields of hostile text at
    these odds, about half the specs pass validation.

    ``otherwise`` is the highest pick, because Hypothesis favours (and shrinks to) the lowest.
    """
    last = one_in - 1
    return st.integers(min_value=0, max_value=last).flatmap(lambda pick: otherwise if pick == last else valid)


labels = st.lists(st.sampled_from(WORDS + ["b-2", "x1"]), min_size=1, max_size=3).map(".".join)
segments = st.lists(st.sampled_from(WORDS + PATH_PUNCTUATION), max_size=4).map("/".join)
near_fixed_hosts = mostly(st.one_of(labels, labels.map("*.{}".format)), otherwise=st.sampled_from(NEAR_FIXED_HOSTS),
                          one_in=3)
hosts = mostly(near_fixed_hosts,
               otherwise=st.one_of(hostile_text, st.builds("{}{}.example".format, st.sampled_from(["", "*."]),
                                                           hostile_text)))
paths = mostly(st.one_of(st.sampled_from(["/", "/login", "/api", "/api/v2", "/api/", "//"]),
                         segments.map("/{}".format)),
               otherwise=st.one_of(hostile_text.map("/{}".format), hostile_text))
names = mostly(st.sampled_from(["blog", "web", "api", "a-b", "shop"]))
hostile_listens = st.one_of(hostile_text, st.builds("{}:{}".format, hostile_text, hostile_text),
                            st.builds("[{}]:18080".format, hostile_text))
listens = mostly(mostly(st.just(FIXED_LISTEN), otherwise=st.sampled_from(LISTENS)), otherwise=hostile_listens)
routes = st.fixed_dictionaries({"host": hosts}, optional={"path": paths, "strip_prefix": st.booleans()})
services = st.fixed_dictionaries(
    {"image": st.just("img:1"), "port": st.just(8000), "routes": st.lists(routes, min_size=1, max_size=2)},
    optional={"health": st.fixed_dictionaries({"path": paths})})
specs = st.fixed_dictionaries({
    "app": names,
    "gateway": st.fixed_dictionaries({"listen": listens}),
    "services": st.dictionaries(names, services, min_size=1, max_size=2),
})


def validated(data: dict) -> AppSpec | None:
    """The spec, or None when validation refused it; anything but a SpecError fails the test."""
    try:
        return spec_from_dict(data)
    except SpecError as refused:
        for problem in refused.problems:
            assert str(problem).isprintable(), problem  # one line, printable in a terminal or a log
            assert problem.hint, problem
        return None


def rendered(apps: list[AppSpec]) -> tuple[GatewayConfig, str]:
    config = build_gateway_config({a.app: a for a in apps}, FIXED_SERVERS)
    text = render_config(config, runtime_socket=SOCKET)
    text.encode("ascii")  # what the spec lets through is ASCII; the file is written as it is
    return config, text


@FUZZ
@given(data=specs)
def test_a_spec_is_refused_or_renders_a_configuration_haproxy_loads(data):
    spec = validated(data)
    event("refused" if spec is None else "valid")
    if spec is None:
        return
    _, text = rendered([spec])
    assert haproxy_refusal(text) is None, text


@FUZZ
@given(data=specs)
def test_a_spec_beside_another_app_is_refused_or_leaves_that_app_as_it_was(data):
    spec = validated(data)
    if spec is None or spec.app == FIXED.app:  # the same name is an update of that app, not a neighbour
        return
    if spec.gateway.listen == FIXED.gateway.listen:
        try:
            check_gateway(spec, [FIXED])
        except ConflictError:
            event("beside: refused by check_gateway")
            return
    event("beside: " + ("shares the listen address" if spec.gateway.listen == FIXED_LISTEN else "elsewhere"))
    alone, alone_text = rendered([FIXED])
    both, both_text = rendered([FIXED, spec])
    assert _fixed_backends(both_text) == _fixed_backends(alone_text)
    assert _fixed_route_selections(both_text) == _fixed_route_selections(alone_text)
    for host, path in _probes(spec):
        assert _served_by(both, host, path) == _served_by(alone, host, path), (host, path)
    assert haproxy_refusal(both_text) is None, both_text


def _fixed_backends(text: str) -> list[str]:
    """The fixed app's backend sections, as rendered."""
    return [s.strip() for s in text.split("\n\n") if s.startswith(f"backend be_{FIXED.app}_")]


def _fixed_route_selections(text: str) -> list[str]:
    """Each of the fixed app's route selections (comment, ACLs, set-var), its route id made neutral."""
    found = list(re.finditer(_ROUTE_SELECTION, text, flags=re.MULTILINE))
    assert len(found) == FIXED_ROUTE_COUNT, text
    return sorted(re.sub(rf"(?<![a-z0-9]){m.group(1)}(?![0-9])", "rN", m.group()) for m in found)


def _probes(spec: AppSpec) -> list[tuple[str, str]]:
    """Requests the fixed app serves, and the same hosts with every path the new app routes."""
    hosts = {request_host(r.host) for s in FIXED.services.values() for r in s.routes}
    prefixes = {r.path for a in (FIXED, spec) for s in a.services.values() for r in s.routes}
    paths = {"/"} | prefixes | {p.rstrip("/") + "/deeper" for p in prefixes}
    return sorted((h, p) for h in hosts for p in paths)


def _served_by(config: GatewayConfig, host: str, path: str) -> tuple | None:
    frontend = frontend_of(config, (FIXED.gateway.listen_host, FIXED.gateway.listen_port))
    route = first_route(frontend, host, path) if frontend else None
    return None if route is None else (route.app, route.service, route.host, route.path)
