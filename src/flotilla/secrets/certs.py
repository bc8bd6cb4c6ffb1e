"""TLS certificates and their keys, read and checked: what may be said of a pair, and whether it serves.

HTTPS at the gateway (docs/https.md) takes a certificate chain and its private
key from the vault. Before a pair is stored, and again before a spec that uses
it is accepted, it is checked here: both parse, the key is the certificate's,
the certificate has not expired and covers the route's host (RFC 6125: a
wildcard is a whole leftmost label and matches exactly one label). ``cryptography``
is imported by the vault already; this module is its only other user, and it
never puts a byte of a key into a message, a repr or a log.

It also makes the gateway's default certificate, self-signed and kept only in
RAM: HAProxy needs one on an HTTPS listener for a client whose SNI matches no
route (or that sends none).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from flotilla.errors import CertificateError

MAX_CHAIN = 10  # certificates in one chain: a leaf and its intermediates


@dataclass(frozen=True)
class CertInfo:
    """What may be shown of a certificate (never its key)."""

    hosts: tuple[str, ...]  # DNS names of the subjectAltName (the CN when there is none)
    issuer: str
    not_before: float  # epoch seconds
    not_after: float
    fingerprint: str  # SHA-1 of the leaf, upper-case hex: what HAProxy's `show ssl cert` prints

    def to_dict(self) -> dict:
        return {"hosts": list(self.hosts), "issuer": self.issuer, "not_before": self.not_before,
                "not_after": self.not_after, "fingerprint": self.fingerprint}


def inspect_pair(cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """The leaf's info if ``key_pem`` is the private key of ``cert_pem``'s first certificate;
    CertificateError saying what is wrong otherwise."""
    chain = _chain(cert_pem)
    key = _key(key_pem)
    if _public(chain[0].public_key()) != _public(key.public_key()):
        raise CertificateError("the private key does not match the certificate (its public key is another's); "
                               "give the key the certificate was issued for")
    return _info(chain[0])


def inspect_chain(cert_pem: bytes) -> CertInfo:
    return _info(_chain(cert_pem)[0])


def serving_problems(info: CertInfo, *, host: str, now: float) -> list[str]:
    """Why ``info`` cannot serve ``host`` at ``now``: expired, not valid yet, covering another host."""
    problems = []
    if info.not_after <= now:
        problems.append(f"the certificate expired at {_when(info.not_after)}")
    elif info.not_before > now:
        problems.append(f"the certificate is not valid before {_when(info.not_before)}")
    if not any(name_covers(name, host) for name in info.hosts):
        problems.append(f"the certificate covers {', '.join(info.hosts) or 'no DNS name'}, not {host}")
    return problems


def name_covers(name: str, host: str) -> bool:
    """Whether a certificate's DNS ``name`` covers a route's ``host`` (RFC 6125 section 6.4.3).

    ``*.shop.example`` covers ``a.shop.example`` (one label, never ``shop.example``
    or ``a.b.shop.example``) and the route host ``*.shop.example`` itself; a route
    wildcard is covered by that same wildcard only."""
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name == host:
        return True
    if not name.startswith("*.") or host.startswith("*."):
        return False
    label, _, rest = host.partition(".")
    return bool(label) and rest == name[2:]


def pem_bundle(cert_pem: bytes, key_pem: bytes) -> bytes:
    """The chain then the key, one PEM file as HAProxy loads it."""
    return cert_pem.rstrip(b"\n") + b"\n" + key_pem.rstrip(b"\n") + b"\n"


def self_signed(common_name: str, *, now: float, days: int = 3650) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh P-256 self-signed certificate for ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.fromtimestamp(now - 3600, tz=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _chain(cert_pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(bytes(cert_pem))
    except ValueError:
        raise CertificateError("the certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----); "
                               "give the certificate chain, leaf first, in PEM") from None
    if len(chain) > MAX_CHAIN:
        raise CertificateError(f"the certificate file holds {len(chain)} certificates; give the leaf and its "
                               f"intermediates (at most {MAX_CHAIN})")
    return chain


def _key(key_pem: bytes):
    if b"ENCRYPTED" in key_pem:
        raise CertificateError("the private key is encrypted; give it unencrypted (the vault encrypts it), "
                               "e.g. `openssl pkey -in key.pem -out plain.pem`")
    try:
        return serialization.load_pem_private_key(bytes(key_pem), password=None)
    except (ValueError, TypeError):
        # the library's message could quote the input: say only what it is not
        raise CertificateError("the private key is not a PEM private key (-----BEGIN PRIVATE KEY-----); "
                               "give the key the certificate was issued for, unencrypted") from None
    except Exception:  # noqa: BLE001 - an unsupported key type, say; the library's words may quote the key
        raise CertificateError("the private key cannot be read (an unsupported key type?); "
                               "give an RSA, ECDSA or Ed25519 key in PEM") from None


def _public(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(hosts=_hosts(cert), issuer=cert.issuer.rfc4514_string(),
                    not_before=cert.not_valid_before_utc.timestamp(),
                    not_after=cert.not_valid_after_utc.timestamp(),
                    fingerprint=hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper())


def _hosts(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        return tuple(names.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
