"""A real ACME server on loopback for the tests: Debian's pebble and its DNS, pebble-challtestsrv.

Why it exists: the ACME tests must order certificates from a real RFC 8555
server, through Flotilla's gateway answering the HTTP-01 challenge, and nothing
may leave the machine. Pebble (Let's Encrypt's test CA) validates a challenge by
resolving the host with the DNS server it is given and fetching
``http://HOST:httpPort/.well-known/acme-challenge/TOKEN``: so challtestsrv runs
as that DNS, on 127.0.0.1 only, answering every A query with 127.0.0.1 (and no
AAAA), and pebble's ``httpPort`` is the gateway's HTTP listen port.

Pebble's API speaks HTTPS only, with a certificate it is given: this makes a
self-signed one for 127.0.0.1 and ``localhost``, whose file is the CA bundle a
client trusts for the directory (FLOTILLA_ACME_CA_BUNDLE). The certificates
pebble issues chain to a root it makes at start, served by its management API
(``/roots/0``): ``root_pem``, for ``curl --cacert``. Both processes are stopped
by their pids.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.ports import free_port
from tests.support.waiting import wait_for

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
START_TIMEOUT = 30.0


def installed() -> bool:
    return bool(shutil.which(PEBBLE) and shutil.which(CHALLTESTSRV))


@dataclass(frozen=True)
class Pebble:
    directory: str  # the ACME directory URL
    ca_bundle: Path  # trusts pebble's own HTTPS (its API), for the ACME client
    management: str  # https://127.0.0.1:PORT of the management API
    log: Path

    def root_pem(self) -> str:
        """The root pebble's issued certificates chain to (new at every start of pebble)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context, timeout=10) as answer:
            return answer.read().decode()

    def write_root(self, path: Path) -> Path:
        path.write_text(self.root_pem())
        return path


@contextmanager
def running_pebble(root: Path, *, http_port: int, validity_seconds: int | None = None) -> Iterator[Pebble]:
    """Pebble validating HTTP-01 on ``http_port`` of 127.0.0.1, certificates valid ``validity_seconds``."""
    root.mkdir(parents=True, exist_ok=True)
    cert, key = _self_signed(root)
    dns_port, api_port, management_port = free_port(), free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{api_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": http_port, "tlsPort": free_port(),  # tls-alpn-01 unused: nothing listens there
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
    }}
    (root / "pebble-config.json").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1",
           "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    log = root / "pebble.log"
    with _process([CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                   "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                   "-management", f"127.0.0.1:{free_port()}"], env=env, log=root / "challtestsrv.log"), \
         _process([PEBBLE, "-config", str(root / "pebble-config.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
                  env=env, log=log):
        pebble = Pebble(directory=f"https://127.0.0.1:{api_port}/dir", ca_bundle=cert,
                        management=f"https://127.0.0.1:{management_port}", log=log)
        wait_for(lambda: _answers(pebble), timeout=START_TIMEOUT, interval=0.1, what="pebble's directory")
        yield pebble


@contextmanager
def _process(argv: list[str], *, env: dict, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _answers(pebble: Pebble) -> bool:
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    try:
        with urllib.request.urlopen(pebble.directory, context=context, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _self_signed(root: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble on loopback")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = root / "pebble-api.pem", root / "pebble-api-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path
