"""HTTPS in the gateway's configuration and the certificate sync's plan: pure, no HAProxy run.

That HAProxy accepts the text and serves it is tests/integration/test_https.py.
"""

from __future__ import annotations

from flotilla.gateway.certificates import CertChange, certificate_changes, leaf_fingerprint
from flotilla.gateway.config import build_gateway_config, render_config
from flotilla.gateway.model import TlsPaths
from flotilla.secrets.certs import inspect_pair, self_signed
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec, TlsSpec

PATHS = TlsPaths(default_cert="/run/fl/-gateway/default.pem", crt_list="/run/fl/-gateway/crt-list")


def tls_app(*, https_port: int | None = 8443, redirect: bool = True, hsts: int = 0) -> AppSpec:
    routes = (RouteSpec(host="shop.example", tls=TlsSpec(certificate="shop", redirect=redirect, hsts=hsts)),
              RouteSpec(host="*.shop.example", tls=TlsSpec(certificate="shop")),
              RouteSpec(host="plain.example"))
    return AppSpec(app="shop", gateway=GatewaySpec(listen_port=48080, https_port=https_port),
                   services={"web": ServiceSpec(image="img:1", port=8000, routes=routes)})


def text(spec: AppSpec, *, tls: TlsPaths | None = PATHS) -> str:
    return render_config(build_gateway_config({spec.app: spec}, {}, tls=tls), runtime_socket="/x.sock")


def test_an_https_port_binds_tls_with_the_crt_list_h2_and_modern_settings():
    cfg = text(tls_app())
    assert ("bind 127.0.0.1:8443 ssl crt /run/fl/-gateway/default.pem crt-list /run/fl/-gateway/crt-list "
            "alpn h2,http/1.1") in cfg
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2" in cfg
    ciphers = next(line for line in cfg.splitlines() if "ssl-default-bind-ciphers" in line).split()[1]
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers.split(":"))
    assert "ssl-default-bind-curves X25519:P-256:P-384" in cfg
    assert "X-Forwarded-Proto https if { ssl_fc }" in cfg and "X-Forwarded-Port %[dst_port]" in cfg


def test_tls_routes_redirect_with_308_except_acme_challenges_and_hsts_is_opt_in():
    cfg = text(tls_app(hsts=600))
    assert "acl acme_challenge path_beg /.well-known/acme-challenge/" in cfg
    assert ("http-request redirect location 'https://%[var(txn.host)]:8443%[pathq]' code 308 "
            "if !{ ssl_fc } !acme_challenge { var(txn.route) -m str r1 r2 }") in cfg  # r0 is plain.example
    assert ('http-response set-header Strict-Transport-Security "max-age=600" '
            "if { ssl_fc } { var(txn.route) -m str r1 }") in cfg
    assert "Strict-Transport-Security" not in text(tls_app(hsts=0))
    assert "code 308 if !{ ssl_fc } !acme_challenge { var(txn.route) -m str r2 }" in text(tls_app(redirect=False))


def test_port_443_is_left_out_of_the_redirect():
    assert "'https://%[var(txn.host)]%[pathq]' code 308" in text(tls_app(https_port=443))


def test_without_https_nothing_of_tls_is_rendered_but_the_tunnel_timeout():
    plain = AppSpec(app="shop", gateway=GatewaySpec(listen_port=48080),
                    services={"web": ServiceSpec(image="img:1", port=8000, routes=(RouteSpec(host="a.example"),))})
    cfg = text(plain)
    assert " ssl" not in cfg and "redirect" not in cfg
    assert "http-request set-header X-Forwarded-Proto http\n" in cfg
    assert "timeout tunnel 1h" in cfg  # WebSockets idle past the 30 s client/server timeouts


def test_certificate_changes_are_the_difference_only():
    wanted = {"/c/a.pem": "AA", "/c/b.pem": "BB", "/c/c.pem": "CC"}
    loaded = {"/c/a.pem": "AA", "/c/b.pem": "B0", "/c/c.pem": "CC", "/c/old.pem": "OO"}
    assert certificate_changes(wanted, loaded, listed={"/c/a.pem", "/c/b.pem", "/c/old.pem"}) == [
        CertChange("replace", "/c/b.pem", "the vault holds a new certificate"),
        CertChange("list", "/c/c.pem", "loaded but not in the crt-list"),
        CertChange("remove", "/c/old.pem", "no route serves it"),
    ]
    assert certificate_changes(wanted, wanted, listed=set(wanted)) == []
    assert [c.op for c in certificate_changes({"/c/new.pem": "NN"}, {}, listed=set())] == ["add"]


def test_the_leaf_fingerprint_is_what_haproxy_prints():
    cert, key = self_signed("x", now=1_800_000_000)
    assert leaf_fingerprint(cert + key) == inspect_pair(cert, key).fingerprint
    assert leaf_fingerprint(b"no certificate") == ""
