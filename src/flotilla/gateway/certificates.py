"""The gateway's TLS certificates: kept in RAM, loaded into a running HAProxy without a reload.

Why both a tmpfs and the Runtime API (docs/https.md): HAProxy reads its
certificates from files when it starts or reloads, and only then; a running
HAProxy takes new or renewed ones through its Runtime API (``new ssl cert`` /
``set ssl cert`` / ``commit ssl cert`` / ``add ssl crt-list``), which swaps
them for the next handshakes and leaves open connections alone. So the files
live on the RAM-backed filesystem Flotilla mounts for secrets (never on a
persistent disk: a private key is never written there in plaintext), in a
directory only root can read (HAProxy's master reads them before its workers
drop root), and every change is made to both, files first: a later start or
reload serves exactly what the Runtime API made the running one serve.

The sync is level-based: the certificates the routes want (from the vault,
daemon/certificates.py) against what HAProxy holds (``show ssl cert``, the
fingerprint of each, ``show ssl crt-list``); only the difference is applied.
A client whose SNI names no certificate gets the default one, a self-signed
certificate made in RAM: HAProxy needs a certificate on every ``ssl`` bind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flotilla.gateway.model import TlsPaths
from flotilla.gateway.runtime import RuntimeApi

_LEAF = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class CertChange:
    op: Literal["add", "replace", "list", "remove"]
    path: str
    reason: str


def leaf_fingerprint(bundle: bytes) -> str:
    """SHA-1 of the first certificate's DER, upper-case hex, as HAProxy's `show ssl cert` prints it."""
    found = _LEAF.search(bundle)
    if not found:
        return ""
    return hashlib.sha1(base64.b64decode(b"".join(found.group(1).split()))).hexdigest().upper()


def certificate_changes(wanted: Mapping[str, str], loaded: Mapping[str, str], listed: set[str]) -> list[CertChange]:
    """Pure: ``wanted`` and ``loaded`` map a file path to a fingerprint; ``listed`` is the crt-list."""
    changes = []
    for path, fingerprint in sorted(wanted.items()):
        if path not in loaded:
            changes.append(CertChange("add", path, "a route serves it"))
        elif loaded[path] != fingerprint:
            changes.append(CertChange("replace", path, "the vault holds a new certificate"))
        elif path not in listed:
            changes.append(CertChange("list", path, "loaded but not in the crt-list"))
    changes += [CertChange("remove", path, "no route serves it") for path in sorted(set(loaded) - set(wanted))]
    return changes


class GatewayCertificates:
    """The certificate files of one gateway, under ``directory()`` (on RAM), and their sync."""

    def __init__(self, *, directory: Callable[[], Path], default_bundle: Callable[[], bytes]) -> None:
        self._directory = directory  # called only once HTTPS is wanted: it may mount the tmpfs
        self._default_bundle = default_bundle

    def paths(self) -> TlsPaths:
        root = self._directory()
        return TlsPaths(default_cert=str(root / "default.pem"), crt_list=str(root / "crt-list"))

    def file_for(self, app: str, name: str) -> str:
        """The file a certificate is served from: no name of the user's in a path or a command."""
        digest = hashlib.sha256(f"{app}\0{name}".encode()).hexdigest()[:24]
        return str(self._directory() / "certs" / f"{app}-{digest}.pem")

    def write(self, wanted: Mapping[str, bytes]) -> None:
        """Make the files what HAProxy should read at its next start or reload: default, certificates, list."""
        paths = self.paths()
        certs = Path(paths.crt_list).parent / "certs"
        certs.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not Path(paths.default_cert).exists():
            _write_private(Path(paths.default_cert), self._default_bundle())
        for path, bundle in wanted.items():
            if _read(Path(path)) != bundle:
                _write_private(Path(path), bundle)
        for stale in set(map(str, certs.glob("*.pem"))) - set(wanted):
            Path(stale).unlink(missing_ok=True)
        _write_private(Path(paths.crt_list), "".join(f"{p}\n" for p in sorted(wanted)).encode())

    def sync(self, runtime: RuntimeApi, wanted: Mapping[str, bytes]) -> list[CertChange]:
        """Bring the running HAProxy's certificates in line with ``wanted`` (path -> bundle), no reload."""
        paths = self.paths()
        ours = str(Path(paths.crt_list).parent / "certs") + "/"
        loaded = {p: runtime.ssl_fingerprint(p) for p in runtime.ssl_certs() if p.startswith(ours)}
        listed = runtime.crt_list_entries(paths.crt_list)
        changes = certificate_changes({p: leaf_fingerprint(b) for p, b in wanted.items()}, loaded, listed)
        for change in changes:
            if change.op in ("add", "replace"):
                runtime.load_ssl_cert(change.path, wanted[change.path].decode(), new=change.op == "add")
            if change.op in ("add", "list"):
                runtime.add_to_crt_list(paths.crt_list, change.path)
            if change.op == "remove":
                runtime.remove_ssl_cert(paths.crt_list, change.path, listed=change.path in listed)
        return changes


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_private(path: Path, data: bytes) -> None:
    """``data`` in ``path``, replaced at once (never half-written), readable by root alone."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(temporary, path)
