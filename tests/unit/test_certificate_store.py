"""The certificate store over the vault (daemon/certificates.py): what it keeps, shows and refuses."""

from __future__ import annotations

import json

import pytest

from flotilla.daemon.certificates import CertificateStore, acme_name, certificate_names
from flotilla.errors import CertificateError
from flotilla.secrets import Vault
from flotilla.secrets.keys import generate_key
from flotilla.spec import spec_from_dict
from tests.support.tls import make_pair


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    import time

    with Vault(tmp_path / "state.db", generate_key(), clock=time.time) as vault:
        yield CertificateStore(vault, clock=Clock(time.time()))


def spec(certificate: str = "site"):
    return spec_from_dict({"app": "shop", "gateway": {"https_port": 8443}, "services": {"web": {
        "image": "x", "port": 80, "routes": [{"host": "a.test", "tls": {"certificate": certificate}},
                                             {"host": "api.test", "tls": {"acme": True}}]}}})


def test_a_pair_is_kept_shown_without_its_key_and_served(store):
    cert, key = make_pair("a.test")
    store.put("shop", "site", cert, key)
    (shown,) = store.list("shop")
    assert (shown.name, shown.source, shown.info.hosts, shown.error) == ("site", "vault", ("a.test",), None)
    assert key.decode() not in json.dumps(shown.to_dict()) and key.decode() not in repr(shown)
    assert store.bundles(spec()) == {"site": cert.rstrip(b"\n") + b"\n" + key}
    assert store.problems(spec()) == []
    assert store.list("other") == []
    assert store.remove("shop", "site") and store.get("shop", "site") is None


def test_a_mismatched_or_expired_pair_is_never_stored(store):
    cert, _ = make_pair("a.test")
    _, other = make_pair("a.test")
    with pytest.raises(CertificateError, match="does not match"):
        store.put("shop", "site", cert, other)
    old_cert, old_key = make_pair("a.test", days=1, expired=True)
    with pytest.raises(CertificateError, match="expired"):
        store.put("shop", "site", old_cert, old_key)
    assert store.list("shop") == []


def test_problems_name_the_route_and_what_to_run(store):
    assert [(p.path, p.message, p.hint) for p in store.problems(spec())] == [
        ("services.web.routes.0.tls.certificate", "certificate 'site' is not set for app shop",
         "run flotilla certs set shop site --cert FILE --key FILE")]
    cert, key = make_pair("b.test")
    store.put("shop", "site", cert, key)
    (problem,) = store.problems(spec())
    assert problem.message == "certificate 'site': the certificate covers b.test, not a.test"
    store._clock.now += 40 * 86400
    assert "expired" in store.problems(spec())[0].message


def test_acme_certificates_and_their_errors_are_kept_under_the_host(store):
    assert certificate_names(spec()) == ["site", acme_name("api.test")]
    store.record_error("shop", acme_name("api.test"), "order failed: connection refused")
    (shown,) = store.list("shop")
    assert (shown.name, shown.source, shown.error, shown.info) == ("acme:api.test", "acme",
                                                                    "order failed: connection refused", None)
    assert store.bundles(spec()) == {}  # nothing issued yet: nothing to serve
    cert, key = make_pair("api.test")
    store.put("shop", acme_name("api.test"), cert, key, source="acme")
    assert store.get("shop", acme_name("api.test")).error is None
