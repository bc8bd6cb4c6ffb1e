"""Certificates from an ACME server (RFC 8555): the one module that speaks the protocol.

Flotilla does not implement ACME itself: the ``acme`` library (the one under
certbot) signs the requests, keeps the nonces and polls, and this module is its
boundary, the only one importing ``acme`` or ``josepy``. It does one thing end
to end, ``AcmeClient.issue``: register the account (or find it again from its
key), order a certificate for the hosts, answer each HTTP-01 challenge through a
``ChallengeResponder`` (the gateway serves the answer itself, gateway/challenges.py),
finalize the order with a CSR for a key made here, and download the chain.

Keys never leave as anything but PEM strings handed back to the caller, which
keeps them in the vault: the account key (``new_account_key``) and each
certificate's key. Every failure of the library, of the network (requests'
errors are OSErrors) or of the server becomes an AcmeError that says which step
failed and why, so a caller can make it an event and a metric without knowing
the library.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import josepy
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flotilla.errors import AcmeError

USER_AGENT = "flotilla-acme"
NETWORK_TIMEOUT = 30  # seconds for one HTTP exchange with the ACME server
ORDER_TIMEOUT = 90.0  # seconds for the challenges and the finalization of one order


def _quiet(step: str, detail: str) -> None:
    pass


Progress = Callable[[str, str], None]  # (step, detail): see AcmeClient.issue


class ChallengeResponder(Protocol):
    """Where the answer to an HTTP-01 challenge is published for the CA to fetch."""

    def publish(self, token: str, key_authorization: str) -> None: ...

    def withdraw(self, token: str) -> None: ...


@dataclass(frozen=True)
class IssuedCertificate:
    """What an order produced: the chain (leaf first) and its key, both PEM, and the leaf's dates."""

    hosts: tuple[str, ...]
    chain_pem: str
    key_pem: str = field(repr=False)  # never in a log line
    not_before: datetime.datetime
    not_after: datetime.datetime
    issuer: str


def new_account_key() -> str:
    """A fresh ACME account key (EC P-256), PEM: the caller keeps it in the vault."""
    return _new_key_pem()


class AcmeClient:
    """One ACME account on one directory.

    ``ca_bundle`` is a file of CA certificates trusted for the directory's own
    HTTPS (pebble's self-signed API, a company's internal CA); None trusts the
    system's store, as for Let's Encrypt.
    """

    def __init__(self, *, directory: str, account_key_pem: str, email: str | None = None,
                 ca_bundle: str | None = None, timeout: float = ORDER_TIMEOUT) -> None:
        self.directory = directory
        self.email = email
        self._key = _account_jwk(account_key_pem)
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        self._client: client.ClientV2 | None = None

    def __repr__(self) -> str:  # never the key
        return f"AcmeClient(directory={self.directory!r}, email={self.email!r})"

    def issue(self, hosts: Sequence[str], *, responder: ChallengeResponder,
              progress: Progress = _quiet) -> IssuedCertificate:
        """A certificate for ``hosts`` (the first is its subject), HTTP-01 challenges answered by ``responder``.

        ``progress(step, detail)`` hears each step as it is done: ``ordered``,
        ``challenge`` (an answer published), ``validated`` (the CA checked every
        challenge and signed), so a caller can make each an event.
        """
        if not hosts:
            raise AcmeError("an ACME order needs at least one host name")
        acme = self._registered()
        key_pem = _new_key_pem()
        with _step("order", hosts):
            order = acme.new_order(crypto_util.make_csr(key_pem.encode(), list(hosts)))
        progress("ordered", f"order {order.uri} placed for {', '.join(hosts)}")
        with _published(order, key=self._key, responder=responder) as answers:
            for challenge in answers:
                with _step("answer a challenge", hosts):
                    acme.answer_challenge(challenge, challenge.response(self._key))
                progress("challenge", f"HTTP-01 answer for {challenge.chall.path} published by the gateway")
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self._timeout)
            with _step("validate and finalize", hosts):
                order = acme.poll_and_finalize(order, deadline=deadline)
        progress("validated", f"the CA validated {', '.join(hosts)} and signed the certificate")
        return certificate_from_pem(tuple(hosts), chain_pem=order.fullchain_pem, key_pem=key_pem)

    def _registered(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        with _step("reach the directory", ()):
            net = client.ClientNetwork(self._key, alg=josepy.ES256, verify_ssl=self._ca_bundle or True,
                                       user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT)
            acme = client.ClientV2(client.ClientV2.get_directory(self.directory, net), net)
        registration = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
        with _step("register the account", ()):
            try:
                acme.new_account(registration)
            except acme_errors.ConflictError as exists:  # the key's account exists: use it
                net.account = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
        self._client = acme
        return acme


def certificate_from_pem(hosts: tuple[str, ...], *, chain_pem: str, key_pem: str) -> IssuedCertificate:
    """The leaf's dates and issuer read from ``chain_pem`` (its first certificate)."""
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem.encode())
    except ValueError as exc:
        raise AcmeError(f"the ACME server sent no readable certificate for {', '.join(hosts)}: {exc}") from exc
    return IssuedCertificate(hosts=hosts, chain_pem=chain_pem, key_pem=key_pem,
                             not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
                             issuer=leaf.issuer.rfc4514_string())


@contextmanager
def _published(order: messages.OrderResource, *, key: josepy.JWK,
               responder: ChallengeResponder) -> Iterator[list[messages.ChallengeBody]]:
    """The HTTP-01 challenge of every pending authorization, published while the CA validates."""
    pending = [a for a in order.authorizations if a.body.status != messages.STATUS_VALID]
    chosen = [_http01(a) for a in pending]
    tokens = []
    try:
        for challenge in chosen:
            token = challenge.chall.encode("token")
            responder.publish(token, challenge.chall.validation(key))
            tokens.append(token)
        yield chosen
    finally:
        for token in tokens:
            responder.withdraw(token)


def _http01(authorization: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authorization.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    host = authorization.body.identifier.value
    raise AcmeError(f"the ACME server offers no HTTP-01 challenge for {host}; Flotilla answers only "
                    "HTTP-01 (a wildcard host needs DNS-01: use a vault certificate for it)")


@contextmanager
def _step(doing: str, hosts: Sequence[str]) -> Iterator[None]:
    """The boundary: whatever the library, the network or the server raised becomes an AcmeError."""
    what = f"ACME: could not {doing}" + (f" for {', '.join(hosts)}" if hosts else "")
    try:
        yield
    except AcmeError:
        raise
    except acme_errors.ValidationError as exc:
        raise AcmeError(f"{what}: {_failed_authorizations(exc)}") from exc
    except acme_errors.TimeoutError as exc:
        raise AcmeError(f"{what}: the server did not finish within {ORDER_TIMEOUT:g}s; "
                        "it will be tried again") from exc
    except messages.Error as exc:
        raise AcmeError(f"{what}: the server answered {exc.typ or 'an error'}: {exc.detail or exc}") from exc
    except OSError as exc:  # requests' errors are OSErrors: connection refused, TLS, timeouts
        raise AcmeError(f"{what}: {type(exc).__name__}: {exc} (is the directory URL right, and "
                        "its certificate trusted? see FLOTILLA_ACME_CA_BUNDLE)") from exc
    except (acme_errors.Error, josepy.errors.Error, ValueError, KeyError) as exc:
        raise AcmeError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _failed_authorizations(exc: acme_errors.ValidationError) -> str:
    reasons = []
    for authz in exc.failed_authzrs:
        errors = [c.error for c in authz.body.challenges if c.error is not None]
        detail = "; ".join(f"{e.typ}: {e.detail}" for e in errors) or "no reason given"
        reasons.append(f"{authz.body.identifier.value}: {detail}")
    return ("the CA could not validate " + "; ".join(reasons) +
            " (is the host's port 80 forwarded to the gateway's HTTP listener?)")


def _new_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _account_jwk(pem: str) -> josepy.JWK:
    try:
        return josepy.JWKEC(key=serialization.load_pem_private_key(pem.encode(), password=None))
    except (ValueError, TypeError):
        raise AcmeError("the ACME account key in the vault is not a readable EC private key; "
                        "remove it to have a new account registered") from None
