"""HTTPS at the gateway end to end (issue 14): a real daemon, HAProxy and replicas, certificates from the vault.

The replica is a stdlib server (tests/support/tls.py) that echoes the headers it got and WebSocket
frames. Each certificate is made by the test with ``cryptography``; nothing here resolves a name:
every connection goes to 127.0.0.1 with the SNI and Host the test chooses.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.test_gateway import get, haproxy_masters, haproxy_workers
from tests.support.ports import free_port
from tests.support.tls import ECHO_REPLICA, fingerprint, https_get, key_body, make_pair, wait_served

pytestmark = pytest.mark.docker
HOSTS = ("a.test", "b.test", "*.w.test")
OUT = Path(os.environ.get("FLOTILLA_TEST_OUTPUT", "/tmp"))


def https_spec(app: str, http_port: int, https_port: int, *, certificate: str = "site") -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{http_port}", https_port: {https_port}}}
services:
  web:
    image: flotilla/python:bookworm
    command: {json.dumps(["python3", "-c", ECHO_REPLICA])}
    port: 8000
    replicas: 2
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes:
      - host: a.test
        tls: {{certificate: {certificate}, hsts: 600}}
      - host: b.test
        tls: {{certificate: {certificate}}}
      - host: "*.w.test"
        tls: {{certificate: {certificate}}}
      - host: plain.test
"""


class Recorder:
    """Runs the CLI and keeps every output, for the leak scan."""

    def __init__(self, flotilla) -> None:
        self.flotilla = flotilla
        self.outputs: list[str] = []

    def run(self, *args: str, check: bool = True):
        result = self.flotilla.run(*args, check=check)
        self.outputs += [result.stdout, result.stderr]
        return result


@pytest.fixture
def https_app(flotilla, app_name, tmp_path):
    cert, key = make_pair(*HOSTS)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    cli = Recorder(flotilla)
    cli.run("certs", "set", app_name, "site", "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem"))
    http_port, https_port = free_port(), free_port()
    spec = flotilla.write_spec(tmp_path, https_spec(app_name, http_port, https_port))
    cli.run("up", "-f", str(spec), "--timeout", "90")
    return {"app": app_name, "http": http_port, "https": https_port, "cert": cert, "key": key, "cli": cli,
            "spec": spec}


def handshake(port: int, *flags: str, sni: str = "a.test") -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, *flags],
                          input="", capture_output=True, text=True, timeout=20)


def test_a_vault_certificate_serves_its_hosts_by_sni_with_tls12_and_13_only(https_app):
    port, served = https_app["https"], fingerprint(https_app["cert"])
    for host in ("a.test", "b.test", "x.w.test"):
        status, body, _, cert = https_get(port, "/hello", host=host)
        assert (status, cert) == (200, served), (host, status, body)
    assert https_get(port, "/", host="unknown.test")[3] != served  # no SNI match: the default certificate
    assert handshake(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0").returncode != 0
    for version in ("-tls1_2", "-tls1_3"):
        done = handshake(port, version)
        assert done.returncode == 0 and "Cipher is" in done.stdout, done.stdout[-500:] + done.stderr[-500:]
    curl = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                           "--resolve", f"a.test:{port}:127.0.0.1", f"https://a.test:{port}/"],
                          capture_output=True, text=True, timeout=20)
    assert curl.stdout == "2", curl.stdout + curl.stderr


def test_forwarded_headers_redirect_and_hsts(https_app):
    http, https = https_app["http"], https_app["https"]
    status, body, headers, _ = https_get(https, "/h?x=1", host="a.test")
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert (seen["x-forwarded-proto"], seen["x-forwarded-port"]) == ("https", str(https))
    assert headers.get("strict-transport-security") == "max-age=600"
    assert "strict-transport-security" not in https_get(https, "/", host="b.test")[2]  # opt-in, per route
    status, _, headers = get(http, "/cart?id=7", host="a.test")
    assert (status, headers.get("location")) == (308, f"https://a.test:{https}/cart?id=7")
    assert get(http, "/.well-known/acme-challenge/token", host="a.test")[0] == 200  # reached the replica
    status, body, _ = get(http, "/h", host="plain.test")  # no tls: plain HTTP as before
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert (status, seen["x-forwarded-proto"], seen["x-forwarded-port"]) == (200, "http", str(http))


class HttpsLoad:
    """Threads making a new TLS connection for each request (so every one shakes hands), counting failures."""

    def __init__(self, port: int, host: str, *, threads: int = 4) -> None:
        self.port, self.host = port, host
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self.fingerprints: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, _, cert = https_get(self.port, "/load", host=self.host)
                error = None if status == 200 else f"status {status}"
            except (OSError, ssl.SSLError) as exc:
                error, cert = repr(exc), ""
            with self._lock:
                self.sent += 1
                self.fingerprints.add(cert)
                if error:
                    self.failed += 1
                    self.failures.append(error)


def test_rotating_a_certificate_under_load_fails_nothing_and_does_not_reload(https_app, tmp_path):
    app, port, cli = https_app["app"], https_app["https"], https_app["cli"]
    master, workers = haproxy_masters(cli.flotilla), haproxy_workers(cli.flotilla)
    new_cert, new_key = make_pair(*HOSTS)
    (tmp_path / "new.pem").write_bytes(new_cert)
    (tmp_path / "new.key").write_bytes(new_key)
    with HttpsLoad(port, "b.test") as load:
        time.sleep(2)
        started = time.monotonic()
        cli.run("certs", "set", app, "site", "--cert", str(tmp_path / "new.pem"), "--key", str(tmp_path / "new.key"))
        wait_served(port, "b.test", fingerprint(new_cert))
        served_after = time.monotonic() - started
        time.sleep(2)
    print(f"rotation under load: {load.sent} TLS handshakes+requests, {load.failed} failed; the new certificate "
          f"served {served_after:.2f}s after `certs set` began")
    assert load.sent > 50 and load.failed == 0, (load.sent, load.failures[:5])
    assert load.fingerprints == {fingerprint(https_app["cert"]), fingerprint(new_cert)}
    assert haproxy_masters(cli.flotilla) == master and haproxy_workers(cli.flotilla) == workers, "no reload"
    listed = json.loads(cli.run("certs", "ls", app, "--json").stdout)
    assert [(c["name"], c["hosts"], c["source"], c["error"]) for c in listed] == [("site", list(HOSTS), "vault", None)]
    assert listed[0]["fingerprint"] == fingerprint(new_cert)


def test_a_broken_pair_or_an_unfit_certificate_is_refused_and_nothing_changes(https_app, tmp_path):
    app, port, cli = https_app["app"], https_app["https"], https_app["cli"]
    served = fingerprint(https_app["cert"])
    other_cert, _ = make_pair(*HOSTS)
    expired_cert, expired_key = make_pair(*HOSTS, days=1, expired=True)
    narrow_cert, narrow_key = make_pair("a.test")
    cases = {"mismatch": (other_cert, https_app["key"], "does not match the certificate"),
             "expired": (expired_cert, expired_key, "expired"),
             "narrow": (narrow_cert, narrow_key, "covers a.test, not b.test")}
    for name, (cert, key, message) in cases.items():
        (tmp_path / f"{name}.pem").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
        result = cli.run("certs", "set", app, "site", "--cert", str(tmp_path / f"{name}.pem"),
                         "--key", str(tmp_path / f"{name}.key"), check=False)
        assert result.returncode == 2 and message in result.stderr, (name, result.stderr)
    assert https_get(port, "/", host="b.test")[3] == served
    listed = json.loads(cli.run("certs", "ls", app, "--json").stdout)
    assert listed[0]["fingerprint"] == served
    missing = https_spec(app, https_app["http"], port, certificate="nope")
    result = cli.run("up", "-f", str(cli.flotilla.write_spec(tmp_path, missing, "missing.yaml")), check=False)
    assert result.returncode == 2 and "run flotilla certs set " + app + " nope --cert FILE --key FILE" in result.stderr
    assert re.search(r"missing\.yaml:\d+:\d+: services\.web\.routes\.0\.tls\.certificate: certificate 'nope' "
                     "is not set", result.stderr), result.stderr
    assert https_get(port, "/", host="b.test")[3] == served


def _docker_root() -> Path:
    found = subprocess.run(["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True, text=True)
    return Path(found.stdout.strip() or "/var/lib/docker")


def _files_holding(root: Path, needles: tuple[bytes, ...], *, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for parent, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            path = Path(parent) / name
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {needle[:12]!r}..." for needle in needles if needle in data]
    return found


def test_the_private_key_is_nowhere_on_disk_in_logs_or_in_cli_output(https_app):
    app, cli, key = https_app["app"], https_app["cli"], https_app["key"]
    https_get(https_app["https"], "/", host="a.test")
    get(https_app["http"], "/", host="a.test")
    for args in (("certs", "ls", app), ("certs", "ls", app, "--json"), ("events", app), ("events", app, "--json"),
                 ("ps", app, "--json"), ("routes", app), ("logs", app)):
        cli.run(*args, check=False)
    body = key_body(key)
    needles = (body, key.strip().splitlines()[1], base64.b64decode(body))  # PEM, one PEM line, DER
    assert [n for n in needles[:2] for out in cli.outputs if n.decode() in out] == []
    home = cli.flotilla.home
    assert _files_holding(home, needles) == []  # state.db (sealed), daemon.log, haproxy.log, access.log...
    # Docker's data root: container configs and logs, volumes, networks; of the layers, this app's
    # containers' writable ones (the read-only image layers are shared and were built before the key existed)
    docker = _files_holding(_docker_root(), needles, skip=("overlay2", "image", "buildkit", "vfs"))
    for upper in _upper_dirs(app):
        docker += _files_holding(upper, needles)
    assert docker == []


def _upper_dirs(app: str) -> list[Path]:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.flotilla.app={app}"],
                         capture_output=True, text=True).stdout.split()
    found = subprocess.run(["docker", "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", *ids],
                           capture_output=True, text=True).stdout.split()
    return [Path(p) for p in found if p.startswith("/")]


WEAK_CIPHER_WORDS = ("RC4", "3DES", "DES", "NULL", "EXP", "CBC", "MD5", "anon", "ADH", "AECDH", "PSK", "SRP")
AEAD = ("GCM", "CHACHA20")  # OpenSSL's CBC suites do not say CBC (ECDHE-ECDSA-AES128-SHA): only AEAD passes


def test_sslscan_finds_no_weak_protocol_or_cipher(https_app):
    port = https_app["https"]
    scan = subprocess.run(["sslscan", "--no-colour", "--sni-name=a.test", "--xml=-", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120)
    (OUT / "sslscan-https.txt").write_text(scan.stdout)  # the report quotes it
    import xml.etree.ElementTree as ET

    root = ET.fromstring(scan.stdout[scan.stdout.index("<?xml"):])
    protocols = {(p.get("type"), p.get("version")): p.get("enabled") for p in root.iter("protocol")}
    assert {k for k, on in protocols.items() if on == "1"} == {("tls", "1.2"), ("tls", "1.3")}, protocols
    ciphers = [(c.get("sslversion"), c.get("cipher"), int(c.get("bits"))) for c in root.iter("cipher")]
    assert ciphers and {v for v, _, _ in ciphers} == {"TLSv1.2", "TLSv1.3"}, ciphers
    weak = [c for c in ciphers if c[2] < 128 or any(word in c[1] for word in WEAK_CIPHER_WORDS)
            or not any(mode in c[1] for mode in AEAD)
            or not c[1].startswith(("ECDHE-", "TLS_"))]  # forward secrecy: no RSA key exchange
    assert weak == [], weak
    groups = [(g.get("name"), int(g.get("bits"))) for g in root.iter("group")]
    assert groups and [g for g in groups if g[1] < 128 or "ffdhe" in g[0]] == [], groups


def _ws_frame(data: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _recv_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"the gateway closed the WebSocket ({len(data)} of {size} bytes read)")
        data += chunk
    return data


def _ws_read(sock) -> bytes:
    head = _recv_exactly(sock, 2)
    return _recv_exactly(sock, head[1] & 127)


@pytest.mark.slow
def test_a_websocket_through_the_gateway_survives_95_seconds_idle(https_app):
    """Slow on purpose: past the 30 s client/server timeouts and the 90 s the issue names."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", https_app["https"]), timeout=130)
    with context.wrap_socket(raw, server_hostname="a.test") as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += _recv_exactly(sock, 1)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        sock.sendall(_ws_frame(b"before"))
        assert _ws_read(sock) == b"before"
        time.sleep(95)
        sock.sendall(_ws_frame(b"after 95 s idle"))
        assert _ws_read(sock) == b"after 95 s idle"
