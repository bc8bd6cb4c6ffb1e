"""The daemon's ACME loop (daemon/acme.py) with an injected clock, a real vault and store, and a stand-in CA.

The CA here is a stand-in (``FakeCa``) that issues or fails as told, so each
decision is checked without a network: first issue, renewal at two thirds of the
lifetime, failures that are events, errors on the certificate and metrics, and
back-off. The real CA (pebble) is in tests/integration/test_acme_pebble.py.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flotilla.daemon.acme import AcmeIssuer, account_entry, acme_hosts
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.certificates import CertificateStore, acme_name
from flotilla.daemon.events import EventLog
from flotilla.daemon.store import Store
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import AcmeError
from flotilla.gateway.acme import IssuedCertificate
from flotilla.secrets import Vault
from flotilla.secrets.keys import generate_key
from flotilla.secrets.vault import ACME_NAMESPACE
from flotilla.spec import spec_from_dict

DAY = 86400.0
START = 1_800_000_000.0
HOSTS = ["api.example.com", "shop.example.com"]
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake CA")])


def shop_spec(*acme_hosts_: str, plain: str = "plain.example.com") -> dict:
    routes = [{"host": h, "tls": {"acme": True}} for h in acme_hosts_] + [{"host": plain}]
    return {"app": "shop", "gateway": {"listen": "127.0.0.1:8080", "https_port": 8443},
            "acme": {"email": "ops@example.com", "directory": "https://ca.test/dir"},
            "services": {"web": {"image": "x:1", "port": 8000, "routes": routes}}}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def held(certificates: CertificateStore, host: str):
    return certificates.get("shop", acme_name(host))


class FakeCa:
    """Issues certificates valid ``lifetime`` seconds from the clock, or fails while ``down``."""

    def __init__(self, clock: Clock, lifetime: float = 90 * DAY) -> None:
        self.clock, self.lifetime, self.down = clock, lifetime, False
        self.orders: list[list[str]] = []
        self.accounts: list[dict] = []

    def client(self, **settings):
        self.accounts.append(settings)
        return self

    def issue(self, hosts, *, responder, progress):
        self.orders.append(list(hosts))
        progress("ordered", f"order placed for {hosts[0]}")
        if self.down:
            raise AcmeError(f"ACME: could not reach the directory for {hosts[0]}: ConnectionRefusedError")
        start = datetime.datetime.fromtimestamp(self.clock(), tz=datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + datetime.timedelta(seconds=self.lifetime))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
                .sign(key, hashes.SHA256()))
        return IssuedCertificate(
            hosts=tuple(hosts), chain_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode(),
            not_before=start, not_after=cert.not_valid_after_utc, issuer="CN=Fake CA")


def build(tmp_path, **more):
    clock = Clock()
    store = Store(tmp_path / "state.db", clock=clock)
    apps = AppRepository(store)
    vault = Vault(tmp_path / "vault.db", generate_key(), clock=clock)
    certificates, ca = CertificateStore(vault, clock=clock), FakeCa(clock)
    issuer = AcmeIssuer(apps=apps, certificates=certificates, vault=vault, events=EventLog(store),
                        wakeups=Wakeups(clock=clock), responder=object(), clock=clock, ca_bundle="/ca.pem",
                        client_factory=ca.client, **more)
    apps.put(spec_from_dict(shop_spec(*HOSTS)))
    return issuer, certificates, ca, clock, store, vault


@pytest.fixture
def parts(tmp_path):
    return build(tmp_path)


def kinds(store: Store) -> list[str]:
    return [e.kind for e in store.events("shop")]


def test_only_acme_routes_are_ordered_each_host_once():
    assert acme_hosts(spec_from_dict(shop_spec("b.example.com", "a.example.com"))) == ["a.example.com", "b.example.com"]


def test_a_new_host_is_issued_at_once_and_its_account_key_is_kept_in_the_vault(parts):
    issuer, certificates, ca, _, store, vault = parts
    issuer.tick()
    assert sorted(ca.orders) == [[h] for h in HOSTS]
    assert [(c.name, c.source, c.info.hosts) for c in certificates.list("shop")] == [
        (acme_name(h), "acme", (h,)) for h in HOSTS]
    assert [kinds(store).count(f"certificate.{k}") for k in ("requested", "ordered", "issued")] == [2, 2, 2]
    (settings,) = ca.accounts  # one account for the app and its directory
    assert settings["directory"] == "https://ca.test/dir" and settings["ca_bundle"] == "/ca.pem"
    assert settings["email"] == "ops@example.com"
    key = vault.get(ACME_NAMESPACE, account_entry("shop", "https://ca.test/dir")).decode()
    assert settings["account_key_pem"] == key and "PRIVATE KEY" in key
    assert all("PRIVATE" not in e.message for e in store.events("shop"))
    issuer.tick()
    assert len(ca.orders) == 2, "a held certificate is not ordered again before its renewal point"


def test_renewal_comes_at_two_thirds_of_the_lifetime_on_the_injected_clock(parts):
    issuer, certificates, ca, clock, store, _ = parts
    issuer.tick()
    clock.now = START + 50 * DAY  # before 2/3 less the largest spread (51 days)
    issuer.tick()
    assert len(ca.orders) == 2
    clock.now = START + 60 * DAY
    issuer.tick()
    assert len(ca.orders) == 4 and kinds(store).count("certificate.renewed") == 2
    assert all(c.info.not_before == START + 60 * DAY for c in certificates.list("shop"))
    assert "flotilla_acme_issued_total{app=\"shop\",host=\"shop.example.com\"} 2" in issuer.prometheus()
    issuer.tick()
    expiry = f"{START + 150 * DAY:.0f}"  # renewed at day 60, valid 90 days
    assert (f'flotilla_acme_certificate_expiry_timestamp_seconds{{app="shop",host="shop.example.com"}} {expiry}'
            in issuer.prometheus())
    issuer.tick()
    expiry = f"{START + 150 * DAY:.0f}"
    assert f'flotilla_acme_certificate_expiry_timestamp_seconds{{app="shop",host="shop.example.com"}} {expiry}' \
        in issuer.prometheus()


def test_a_failure_is_loud_keeps_the_old_certificate_and_is_retried_with_back_off(parts):
    issuer, certificates, ca, clock, store, _ = parts
    issuer.tick()
    old = held(certificates, "shop.example.com").info
    ca.down = True
    clock.now = START + 60 * DAY
    issuer.tick()
    now = held(certificates, "shop.example.com")
    assert now.info == old and "ConnectionRefusedError" in now.error  # the old one still serves
    shown = {c["name"]: c for c in (c.to_dict() for c in certificates.list("shop"))}  # what `certs ls` shows
    assert "ConnectionRefusedError" in shown[acme_name("shop.example.com")]["error"]
    assert kinds(store).count("certificate.failed") == 2
    failed = [e for e in store.events("shop") if e.kind == "certificate.failed"][0]
    assert "keeps serving" in failed.message and "ConnectionRefusedError" in failed.message
    metrics = issuer.prometheus()
    assert 'flotilla_acme_failures_total{app="shop",host="shop.example.com"} 1' in metrics
    assert 'flotilla_acme_failing{app="shop",host="shop.example.com"} 1' in metrics
    orders = len(ca.orders)
    clock.now += 30  # within the first back-off (45..60 s)
    issuer.tick()
    assert len(ca.orders) == orders
    clock.now += 31
    next_check = issuer.tick()
    assert len(ca.orders) == orders + 2 and issuer.state("shop", "shop.example.com").attempt.failures == 2
    assert next_check is not None and next_check - clock.now >= 90  # the second wait is about twice the first
    ca.down = False
    clock.now = next_check + 1
    issuer.tick()
    assert 'flotilla_acme_failing{app="shop",host="shop.example.com"} 0' in issuer.prometheus()
    assert held(certificates, "shop.example.com").error is None
    assert issuer.state("shop", "shop.example.com").attempt is None


def test_a_host_is_ordered_only_once_the_gateway_routes_its_service_and_forgotten_when_its_route_goes(tmp_path):
    routed: set[tuple[str, str]] = set()
    issuer, _, ca, _, _, _ = build(tmp_path, routed=lambda app, service: (app, service) in routed)
    issuer.tick()
    assert ca.orders == []  # the CA's challenge could not reach the gateway yet
    routed.add(("shop", "web"))
    issuer.tick()
    assert len(ca.orders) == 2 and "shop.example.com" in issuer.prometheus()
    routed.clear()
    issuer.tick()
    assert "shop.example.com" not in issuer.prometheus()
