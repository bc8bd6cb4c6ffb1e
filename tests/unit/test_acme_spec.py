"""The app's ``acme:`` settings (spec/validate_acme.py): defaults, round trip, every problem at once."""

from __future__ import annotations

from flotilla.spec import parse_spec, spec_from_dict
from flotilla.spec.models import LETS_ENCRYPT_DIRECTORY, AcmeSpec
from flotilla.spec.serialize import spec_to_dict
from tests.unit.test_spec_errors import problems_of

BASE = {"app": "shop", "services": {"web": {"image": "x:1"}}}


def test_lets_encrypt_is_the_default_directory_and_a_spec_without_acme_stays_as_it_was():
    spec = spec_from_dict(BASE)
    assert spec.acme == AcmeSpec(email=None, directory=LETS_ENCRYPT_DIRECTORY)
    assert "acme" not in spec_to_dict(spec)


def test_any_rfc8555_directory_and_an_email_round_trip():
    spec = parse_spec("app: shop\nacme:\n  email: ops@example.com\n"
                      "  directory: https://acme-staging-v02.api.letsencrypt.org/directory\n"
                      "services:\n  web: {image: 'x:1'}\n", filename="flotilla.yaml", environ={})
    assert spec.acme.email == "ops@example.com" and "staging" in spec.acme.directory
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_every_acme_problem_is_reported_with_its_line_and_fix():
    assert problems_of("app: shop\nacme:\n  email: ops\n  directory: http://ca.example/dir\n  eab: x\n"
                       "services:\n  web: {image: 'x:1'}\n") == [
        "flotilla.yaml:3:10: acme.email: 'ops' is not an e-mail address; give one, e.g. email: ops@example.com",
        ("flotilla.yaml:4:14: acme.directory: the ACME directory 'http://ca.example/dir' is not an https:// URL; "
         "give the directory URL of an RFC 8555 server, e.g. https://acme-staging-v02.api.letsencrypt.org/directory "
         "(or leave it out for Let's Encrypt)"),
        "flotilla.yaml:5:3: acme.eab: unknown key 'eab'; allowed keys: email, directory",
    ]


def test_acme_on_a_wildcard_host_is_refused_with_what_to_do_instead():
    assert problems_of("app: shop\ngateway: {listen: '127.0.0.1:8080', https_port: 8443}\nservices:\n"
                       "  web:\n    image: 'x:1'\n    port: 80\n"
                       "    routes: [{host: '*.shop.example', tls: {acme: true}}]\n") == [
        ("flotilla.yaml:7:51: services.web.routes.0.tls.acme: ACME cannot issue for the wildcard host "
         "*.shop.example: Flotilla answers HTTP-01 challenges, and a CA issues wildcards only through DNS-01; "
         "give the route a vault certificate covering *.shop.example (tls: {certificate: NAME}, "
         "`flotilla certs set`), or route each host by name with tls: {acme: true}"),
    ]
