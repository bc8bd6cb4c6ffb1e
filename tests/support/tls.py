"""What the HTTPS tests share: certificates made with ``cryptography``, a replica that echoes its request
headers and WebSocket frames (stdlib only, run with python3 -c in flotilla/python:bookworm), and an
HTTPS client that sends a chosen SNI to 127.0.0.1."""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# GET -> 200 with the request's headers as JSON; Upgrade: websocket -> 101, then every frame echoed.
ECHO_REPLICA = r'''
import base64, hashlib, http.server, json, socketserver, struct
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def websocket(self):
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + GUID).encode()).digest())
        self.send_response(101); self.send_header("Upgrade", "websocket"); self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode()); self.end_headers(); self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2: return
            size = head[1] & 127
            if size == 126: size = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4); data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if head[0] & 15 == 8: return
            self.wfile.write(bytes([0x81, len(data)]) + data); self.wfile.flush()
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("0.0.0.0", 8000), H).serve_forever()
'''


def make_pair(*names: str, days: float = 30, expired: bool = False, start: float | None = None
              ) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh self-signed P-256 certificate for ``names`` (SANs), valid
    ``days`` from ``start`` (epoch seconds; default a day ago, or ``days`` + 1 ago when ``expired``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    if start is None:
        begin = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days + 1 if expired else 1)
    else:
        begin = datetime.datetime.fromtimestamp(start, tz=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(begin)
            .not_valid_after(begin + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def key_body(key_pem: bytes) -> bytes:
    """The base64 body of a PEM key in one line: what a leak scan looks for (its lines, joined or not)."""
    return b"".join(key_pem.strip().splitlines()[1:-1])


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA1()).hex().upper()


class SniConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:``port`` with ``host`` as SNI and Host, trusting no one (the test checks the peer)."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=context)

    def connect(self) -> None:  # resolve nothing: connect to loopback, send the SNI of self.host
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    def peer_fingerprint(self) -> str:
        import hashlib
        return hashlib.sha1(self.sock.getpeercert(binary_form=True)).hexdigest().upper()


def https_get(port: int, path: str, *, host: str) -> tuple[int, bytes, dict, str]:
    """(status, body, headers with lower-case names, SHA-1 of the certificate served) of one HTTPS GET."""
    conn = SniConnection(host, port)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, response.read(), headers, conn.peer_fingerprint()
    finally:
        conn.close()


def served_fingerprint(port: int, host: str) -> str:
    return https_get(port, "/", host=host)[3]


def wait_served(port: int, host: str, wanted: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = served_fingerprint(port, host)
        except OSError:
            seen = "(no answer)"
        if seen == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"{host} is served with {seen}, not {wanted}")
