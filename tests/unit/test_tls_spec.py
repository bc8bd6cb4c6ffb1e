"""HTTPS keys of the spec (gateway.https_port, a route's tls) and the certificate checks of secrets/certs.py.

Problems are pinned word for word with their file:line, as in test_spec_errors.py;
the certificates are made here with ``cryptography``, no file, no socket.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.errors import CertificateError, SpecError
from flotilla.secrets.certs import inspect_pair, name_covers, pem_bundle, self_signed, serving_problems
from flotilla.spec import parse_spec, spec_from_dict, spec_to_dict
from tests.support.tls import make_pair as support_pair

NOW = 1_800_000_000.0


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, filename="flotilla.yaml", environ={})
    return [str(p) for p in caught.value.problems]


def test_tls_route_round_trips():
    spec = spec_from_dict({"app": "shop", "gateway": {"listen": "127.0.0.1:8080", "https_port": 8443},
                           "services": {"web": {"image": "x", "port": 80, "routes": [
                               {"host": "shop.example", "tls": {"certificate": "shop", "hsts": 600}},
                               {"host": "api.example", "tls": {"acme": True, "redirect": False}},
                               {"host": "plain.example"}]}}})
    routes = spec.services["web"].routes
    assert spec.gateway.https_port == 8443
    assert (routes[0].tls.certificate, routes[0].tls.redirect, routes[0].tls.hsts) == ("shop", True, 600)
    assert (routes[1].tls.acme, routes[1].tls.redirect) == (True, False)
    assert routes[2].tls is None
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_tls_problems_have_file_and_line():
    text = """\
app: shop
gateway:
  https_port: 8080
services:
  web:
    image: x
    port: 80
    routes:
      - host: a.example
        tls: {certificate: shop, acme: true}
      - host: b.example
        tls: {redirect: true}
      - host: c.example
        tls: {certificate: Shop!, hsts: -1}
"""
    assert _problems(text) == [
        "flotilla.yaml:3:15: gateway.https_port: https_port 8080 is also the HTTP listen port; "
        "give HTTPS its own port, e.g. https_port: 8443 (or 443)",
        "flotilla.yaml:10:14: services.web.routes.0.tls: has both certificate and acme: a route has one "
        "certificate source; give tls: {certificate: NAME} (a vault certificate) or tls: {acme: true} "
        "(issued by ACME)",
        "flotilla.yaml:12:14: services.web.routes.1.tls: names no certificate source; give tls: "
        "{certificate: NAME} (a vault certificate) or tls: {acme: true} (issued by ACME)",
        "flotilla.yaml:14:28: services.web.routes.2.tls.certificate: invalid certificate name 'Shop!'; name a "
        "vault certificate with lowercase letters, digits, '.', '_' and '-', e.g. certificate: shop (stored "
        "with `flotilla certs set APP shop --cert FILE --key FILE`)",
        "flotilla.yaml:14:41: services.web.routes.2.tls.hsts: must be between 0 and 63072000, got -1; give the "
        "seconds of Strict-Transport-Security max-age, e.g. 31536000 (a year), at most 63072000; 0 is off",
    ]


def test_tls_route_without_https_listener():
    text = """\
app: shop
services:
  web:
    image: x
    port: 80
    routes:
      - host: a.example
        tls: {acme: true}
"""
    assert _problems(text) == [
        "flotilla.yaml:8:14: services.web.routes.0.tls: this route is served over TLS, but the gateway has no "
        "HTTPS listener; add gateway: {https_port: 8443} (or 443), or remove tls from the route",
    ]


# -- certificates -------------------------------------------------------------------------------------


def make_pair(*names: str, days: float = 30, start: float = NOW - 3600) -> tuple[bytes, bytes]:
    return support_pair(*names, days=days, start=start)


def test_a_pair_is_inspected_without_its_key():
    cert, key = make_pair("shop.example", "*.shop.example")
    info = inspect_pair(cert, key)
    assert info.hosts == ("shop.example", "*.shop.example")
    assert info.issuer == "CN=shop.example"
    assert info.not_after == NOW - 3600 + 30 * 86400
    assert key.decode() not in repr(info) and "PRIVATE" not in str(info.to_dict())
    assert pem_bundle(cert, key).startswith(cert.rstrip())


def test_a_key_of_another_certificate_is_refused():
    cert, _ = make_pair("shop.example")
    _, other_key = make_pair("shop.example")
    with pytest.raises(CertificateError, match="does not match the certificate") as caught:
        inspect_pair(cert, other_key)
    assert other_key.decode().splitlines()[1] not in caught.value.message


@pytest.mark.parametrize(("cert", "key", "message"), [
    (b"nonsense", None, "not a PEM certificate"),
    (None, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
    (None, b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n", "encrypted"),
])
def test_unreadable_pairs_say_what_they_are_not(cert, key, message):
    good_cert, good_key = make_pair("shop.example")
    with pytest.raises(CertificateError, match=message) as caught:
        inspect_pair(cert or good_cert, key or good_key)
    assert "AAAA" not in caught.value.message


def test_serving_problems_expired_and_other_host():
    cert, key = make_pair("shop.example", days=1, start=NOW - 2 * 86400)
    info = inspect_pair(cert, key)
    assert serving_problems(info, host="api.example", now=NOW) == [
        "the certificate expired at 2027-01-14 08:00 UTC",
        "the certificate covers shop.example, not api.example",
    ]
    assert serving_problems(info, host="shop.example", now=NOW - 1.5 * 86400) == []


@pytest.mark.parametrize(("name", "host", "covered"), [
    ("shop.example", "shop.example", True),
    ("SHOP.example", "shop.example.", True),
    ("*.shop.example", "a.shop.example", True),
    ("*.shop.example", "shop.example", False),
    ("*.shop.example", "a.b.shop.example", False),
    ("*.shop.example", "*.shop.example", True),
    ("a.shop.example", "*.shop.example", False),
    ("*.example", "shop.other", False),
])
def test_wildcards_cover_one_label(name, host, covered):
    assert name_covers(name, host) is covered


@given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
       st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}", fullmatch=True))
def test_a_wildcard_covers_exactly_one_label_more(prefix, suffix):
    host = f"{prefix}.{suffix}"
    assert name_covers(f"*.{suffix}", host) is ("." not in prefix)


def test_the_default_certificate_is_made_in_ram():
    cert, key = self_signed("flotilla-default", now=NOW)
    info = inspect_pair(cert, key)
    assert info.hosts == ("flotilla-default",) and info.not_before < NOW < info.not_after


def test_problems_the_daemon_finds_get_the_line_of_their_path():
    from flotilla.errors import Problem
    from flotilla.spec.loader import locate_problems

    text = "app: shop\ngateway: {https_port: 8443}\nservices:\n  web:\n    image: x\n    port: 80\n" \
           "    routes:\n      - host: a.example\n        tls: {certificate: site}\n"
    found = locate_problems([Problem.at_path("services.web.routes.0.tls.certificate", "not set", hint="run it"),
                             Problem.at_path("services.web.nowhere", "unplaced")], text=text, filename="f.yaml")
    assert [str(p) for p in found] == ["f.yaml:9:28: services.web.routes.0.tls.certificate: not set; run it",
                                       "f.yaml: services.web.nowhere: unplaced"]
