"""The certificate store: TLS certificates and private keys per app, kept in the vault.

HTTPS routes name a certificate (``tls: {certificate: shop}``, set with
``flotilla certs set``) or ask for one from ACME (``tls: {acme: true}``, stored
under ``acme_name(host)`` by the ACME issuer). Both live here, encrypted like
every secret (secrets/vault.py), in a namespace of their own so that `secrets
ls` and `secrets rm` never see them. A pair is checked before it is stored
(secrets/certs.py): the store never holds a key that is not its certificate's.

The gateway reads what it should serve from here on every sync
(``wanted``) and loads the difference into HAProxy at run time
(gateway/certificates.py); so the ACME issuer only ``put``\\s a new
certificate and wakes the app, and a failure it ``record_error``\\s shows in
`flotilla certs ls`. Nothing here returns a key but ``wanted``/``get``, which
the gateway needs; ``to_dict`` (the API, the CLI) never holds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from flotilla.errors import CertificateError, NotFoundError, Problem
from flotilla.secrets import Vault
from flotilla.secrets.certs import CertInfo, inspect_pair, pem_bundle, self_signed, serving_problems
from flotilla.secrets.vault import CERTIFICATE_NAMESPACE
from flotilla.spec import AppSpec

SOURCES = ("vault", "acme")


def acme_name(host: str) -> str:
    """The store name of the ACME certificate for ``host``."""
    return f"acme:{host}"


@dataclass(frozen=True)
class StoredCertificate:
    app: str
    name: str
    source: str  # "vault" (flotilla certs set) or "acme"
    cert_pem: bytes  # the chain, leaf first; b"" while an ACME order has not succeeded yet
    key_pem: bytes = b""
    info: CertInfo | None = None
    error: str | None = None  # the last failure to issue or renew it (ACME), shown by `certs ls`
    updated: float = 0.0

    def __repr__(self) -> str:  # never the key
        return f"StoredCertificate({self.app!r}, {self.name!r}, source={self.source!r})"

    def to_dict(self) -> dict:
        """What the API and `flotilla certs ls` show: never the key."""
        info = self.info.to_dict() if self.info else {"hosts": [], "issuer": "", "not_before": None,
                                                      "not_after": None, "fingerprint": ""}
        return {"app": self.app, "name": self.name, "source": self.source, **info, "error": self.error,
                "updated": self.updated}


class CertificateStore:
    """``put``, ``get``, ``list``, ``remove`` certificates of an app; thread-safe as the vault is."""

    def __init__(self, vault: Vault, *, clock: Callable[[], float]) -> None:
        self._vault = vault
        self._clock = clock

    def put(self, app: str, name: str, cert_pem: bytes, key_pem: bytes, *, source: str = "vault") -> CertInfo:
        """Store a checked pair (CertificateError otherwise); a recorded error is cleared."""
        if source not in SOURCES:
            raise CertificateError(f"unknown certificate source {source!r}; use one of {', '.join(SOURCES)}")
        info = inspect_pair(cert_pem, key_pem)
        if info.not_after <= self._clock():
            raise CertificateError(serving_problems(info, host=info.hosts[0] if info.hosts else "",
                                                    now=self._clock())[0] + "; give a current certificate")
        self._write(app, name, {"source": source, "cert": cert_pem.decode("ascii", "replace"),
                                "key": key_pem.decode("ascii", "replace"), "error": None})
        return info

    def record_error(self, app: str, name: str, error: str, *, source: str = "acme") -> None:
        """Remember why issuing or renewing ``name`` failed; the certificate (if any) stays."""
        found = self.get(app, name)
        data = {"source": found.source if found else source,
                "cert": found.cert_pem.decode() if found else "",
                "key": found.key_pem.decode() if found else "", "error": error}
        self._write(app, name, data)

    def get(self, app: str, name: str) -> StoredCertificate | None:
        entry = _entry(app, name)
        if self._vault.version(CERTIFICATE_NAMESPACE, entry) is None:
            return None
        return _stored(app, json.loads(self._vault.get(CERTIFICATE_NAMESPACE, entry)))

    def require(self, app: str, name: str) -> StoredCertificate:
        found = self.get(app, name)
        if found is None:
            raise NotFoundError(f"app {app} has no certificate {name!r}; `flotilla certs ls {app}` lists them")
        return found

    def list(self, app: str) -> list[StoredCertificate]:
        prefix = f"{app}."
        entries = [i.name for i in self._vault.list(CERTIFICATE_NAMESPACE) if i.name.startswith(prefix)]
        found = [_stored(app, json.loads(self._vault.get(CERTIFICATE_NAMESPACE, e))) for e in entries]
        return sorted(found, key=lambda c: c.name)

    def remove(self, app: str, name: str) -> bool:
        return self._vault.remove(CERTIFICATE_NAMESPACE, _entry(app, name))

    def remove_app(self, app: str) -> int:
        return sum(self.remove(app, c.name) for c in self.list(app))

    def wanted(self, spec: AppSpec) -> dict[str, StoredCertificate]:
        """The certificates the app's TLS routes serve now, by name (those not issued yet left out)."""
        wanted = {}
        for name in certificate_names(spec):
            found = self.get(spec.app, name)
            if found is not None and found.cert_pem:
                wanted[name] = found
        return wanted

    def bundles(self, spec: AppSpec) -> dict[str, bytes]:
        """What the gateway loads for the app: certificate name -> chain and key in one PEM."""
        return {name: pem_bundle(c.cert_pem, c.key_pem) for name, c in self.wanted(spec).items()}

    def problems(self, spec: AppSpec) -> list[Problem]:
        """Why a TLS route of ``spec`` cannot be served from the store now: ``up`` refuses these."""
        now = self._clock()
        problems = []
        for service, index, route in _tls_routes(spec):
            if route.tls.certificate is None:
                continue  # ACME: issued after the spec is accepted
            path = f"services.{service}.routes.{index}.tls.certificate"
            found = self.get(spec.app, route.tls.certificate)
            if found is None or found.info is None:
                problems.append(Problem.at_path(
                    path, f"certificate {route.tls.certificate!r} is not set for app {spec.app}",
                    hint=f"run flotilla certs set {spec.app} {route.tls.certificate} --cert FILE --key FILE"))
                continue
            problems += [Problem.at_path(path, f"certificate {route.tls.certificate!r}: {problem}",
                                         hint=_hint(spec.app, route.tls.certificate))
                         for problem in serving_problems(found.info, host=route.host, now=now)]
        return problems

    def _write(self, app: str, name: str, data: dict) -> None:
        self._vault.set(CERTIFICATE_NAMESPACE, _entry(app, name),
                        json.dumps({"name": name, **data, "updated": self._clock()}).encode())


def default_bundle(*, now: float) -> bytes:
    """The gateway's default certificate (for a client whose SNI matches no route), made in RAM."""
    return pem_bundle(*self_signed("flotilla-default", now=now))


def certificate_names(spec: AppSpec) -> list[str]:
    """Every store name the app's TLS routes use, in route order, each once."""
    names = [route.tls.certificate or acme_name(route.host) for _, _, route in _tls_routes(spec)]
    return list(dict.fromkeys(names))


def _tls_routes(spec: AppSpec):
    for service, svc in sorted(spec.services.items()):
        for index, route in enumerate(svc.routes):
            if route.tls is not None:
                yield service, index, route


def _hint(app: str, name: str) -> str:
    return (f"give a current certificate covering the route's host: flotilla certs set {app} {name} "
            "--cert FILE --key FILE")


def _entry(app: str, name: str) -> str:
    """The vault name of a certificate: any store name (``acme:HOST`` too) within the vault's rule."""
    return f"{app}.{hashlib.sha256(name.encode()).hexdigest()[:24]}"


def _stored(app: str, data: dict) -> StoredCertificate:
    cert, key = data.get("cert", "").encode(), data.get("key", "").encode()
    info = None
    if cert and key:
        try:
            info = inspect_pair(cert, key)
        except CertificateError:
            info = None
    return StoredCertificate(app=app, name=data["name"], source=data.get("source", "vault"), cert_pem=cert,
                             key_pem=key, info=info, error=data.get("error"), updated=data.get("updated", 0.0))
