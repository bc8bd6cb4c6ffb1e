"""The rules of the app's ``acme:`` settings: the ACME account its ``tls: {acme: true}`` routes use.

Its own module so that the rules of a URL and an e-mail address stay out of the
top-level validation. A directory must be an ``https://`` URL (RFC 8555 6.1: the
account key signs every request, but the directory itself must be authentic);
the e-mail, when given, is where the CA writes about expiring certificates.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flotilla.spec import checks as c
from flotilla.spec.locate import Path, Reporter
from flotilla.spec.models import AcmeSpec, RouteSpec

ACME_KEYS = ("email", "directory")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_DIRECTORY_HINT = ("give the directory URL of an RFC 8555 server, e.g. "
                   "https://acme-staging-v02.api.letsencrypt.org/directory (or leave it out for Let's Encrypt)")


def acme(rep: Reporter, path: Path, value: object) -> AcmeSpec | None:
    known = c.mapping(rep, path, value, allowed=ACME_KEYS)
    if known is None:
        return None
    email = _email(rep, path + ("email",), known["email"]) if "email" in known else None
    directory = _directory(rep, path + ("directory",), known["directory"]) if "directory" in known else None
    if ("email" in known and email is None) or ("directory" in known and directory is None):
        return None
    return AcmeSpec(email=email, **({"directory": directory} if directory else {}))


def route_can_use_acme(rep: Reporter, path: Path, route: RouteSpec) -> bool:
    """False, with the problem, for ``tls: {acme: true}`` on a wildcard host: HTTP-01 cannot prove one."""
    if route.tls is None or not route.tls.acme or not route.host.startswith("*."):
        return True
    rep.add(path + ("tls", "acme"), f"ACME cannot issue for the wildcard host {route.host}: Flotilla answers "
            "HTTP-01 challenges, and a CA issues wildcards only through DNS-01",
            f"give the route a vault certificate covering {route.host} (tls: {{certificate: NAME}}, "
            "`flotilla certs set`), or route each host by name with tls: {acme: true}")
    return False


def _email(rep: Reporter, path: Path, value: object) -> str | None:
    email = c.text(rep, path, value, hint="give an address, e.g. email: ops@example.com")
    if email is not None and not _EMAIL.fullmatch(email):
        rep.add(path, f"{c.clip(email)} is not an e-mail address", "give one, e.g. email: ops@example.com")
        return None
    return email


def _directory(rep: Reporter, path: Path, value: object) -> str | None:
    url = c.text(rep, path, value, hint=_DIRECTORY_HINT)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or any(ch.isspace() for ch in url):
        rep.add(path, f"the ACME directory {c.clip(url, 80)} is not an https:// URL", _DIRECTORY_HINT)
        return None
    return url
