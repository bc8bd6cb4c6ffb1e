"""ACME against a real CA on loopback: pebble validates HTTP-01 through Flotilla's own gateway.

The gateway (a real HAProxy, run by GatewayManager as the daemon runs it) routes
``shop.example.com`` to a small backend on loopback; pebble resolves that host to
127.0.0.1 with challtestsrv and fetches the challenge from the gateway's HTTP
listener, which answers from its run-time map (gateway/challenges.py,
challenge_map.py): no replica sees the challenge. Then the failures an operator
must see: a challenge nobody answers, a directory that is not there. Skipped with
the reason when HAProxy or pebble is not installed.
"""

from __future__ import annotations

import http.client
import http.server
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509

from flotilla.errors import AcmeError
from flotilla.gateway.acme import AcmeClient, new_account_key
from flotilla.gateway.challenge_map import ChallengeMap
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.process import GatewayFiles
from flotilla.gateway.sync import DesiredServer
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec
from tests.support import pebble as pebble_support
from tests.support.ports import free_port

HAPROXY = "/usr/sbin/haproxy"
HOST = "shop.example.com"
pytestmark = [
    pytest.mark.skipif(not Path(HAPROXY).exists(), reason=f"HAProxy is not installed ({HAPROXY})"),
    pytest.mark.skipif(not pebble_support.installed(), reason="pebble is not installed (apt-get install pebble)"),
]


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        self.server.paths.append(self.path)
        body = b"hello from the replica\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def backend():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # HAProxy resets idle keep-alive connections
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def shop(port: int, *hosts: str) -> AppSpec:
    routes = tuple(RouteSpec(host=h) for h in hosts)
    return AppSpec(app="shop", gateway=GatewaySpec(listen_host="127.0.0.1", listen_port=port),
                   services={"web": ServiceSpec(image="img:1", port=8000, routes=routes)})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, backend):
    port = free_port()
    manager = GatewayManager(files=GatewayFiles(tmp_path_factory.mktemp("gateway")))
    desired = {("shop", "web"): [DesiredServer("shop-web-1-abc", "127.0.0.1", backend.server_address[1], True)]}
    manager.apply({"shop": shop(port, HOST)}, desired)
    try:
        yield manager, port, desired
    finally:
        manager.stop()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory, gateway):
    _, port, _ = gateway
    with pebble_support.running_pebble(tmp_path_factory.mktemp("pebble"), http_port=port) as running:
        yield running


def get(port: int, path: str, *, host: str = HOST) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_the_gateway_answers_a_published_challenge_itself_and_across_a_reload(gateway, backend):
    manager, port, desired = gateway
    answers = ChallengeMap(manager.files.challenge_map, manager.runtime)
    token, value = "tok_en-1", "tok_en-1.thumb-print_0"
    answers.publish(token, value)
    try:
        assert get(port, f"/.well-known/acme-challenge/{token}") == (200, value)
        before = len(backend.paths)
        # a change of routes reloads HAProxy: the answer is in the map file it reads again
        manager.apply({"shop": shop(port, HOST, "other.example.com")}, desired)
        assert get(port, f"/.well-known/acme-challenge/{token}", host="other.example.com") == (200, value)
        assert len(backend.paths) == before, "the replica saw the challenge"
    finally:
        answers.withdraw(token)
        manager.apply({"shop": shop(port, HOST)}, desired)
    # withdrawn: the path is an ordinary one again, routed to the app
    assert get(port, f"/.well-known/acme-challenge/{token}") == (200, "hello from the replica\n")
    assert manager.files.challenge_map.read_text() == ""


def test_pebble_issues_a_certificate_through_the_gateway(gateway, pebble, backend, tmp_path):
    manager, _, _ = gateway
    answers = ChallengeMap(manager.files.challenge_map, manager.runtime)
    client = AcmeClient(directory=pebble.directory, account_key_pem=new_account_key(),
                        email="ops@example.com", ca_bundle=str(pebble.ca_bundle))
    before, steps = len(backend.paths), []
    issued = client.issue([HOST], responder=answers, progress=lambda step, detail: steps.append(step))
    assert steps == ["ordered", "challenge", "validated"]
    leaf = x509.load_pem_x509_certificate(issued.chain_pem.encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == [HOST]
    assert issued.not_before < issued.not_after and "Pebble" in issued.issuer
    assert "PRIVATE KEY" in issued.key_pem and "PRIVATE KEY" not in issued.chain_pem
    assert "PRIVATE" not in repr(issued) and "PRIVATE" not in repr(client)
    assert answers.tokens() == () and manager.files.challenge_map.read_text() == ""
    assert len(backend.paths) == before, "the replica saw the challenge"
    # the chain verifies against pebble's root
    (tmp_path / "chain.pem").write_text(issued.chain_pem)
    root = pebble.write_root(tmp_path / "root.pem")
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(tmp_path / "chain.pem"),
                               str(tmp_path / "chain.pem")], capture_output=True, text=True, timeout=30)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the same account key again: the account is found, not registered twice, and orders again
    again = AcmeClient(directory=pebble.directory, account_key_pem=client_key(client),
                       ca_bundle=str(pebble.ca_bundle))
    assert again.issue([HOST], responder=answers).chain_pem != issued.chain_pem


def client_key(client: AcmeClient) -> str:
    from cryptography.hazmat.primitives import serialization
    return client._key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()


class Deaf:
    """A responder that answers nothing: the CA finds no challenge."""

    def publish(self, token: str, key_authorization: str) -> None:
        pass

    def withdraw(self, token: str) -> None:
        pass


def test_an_unanswered_challenge_fails_loudly_with_the_cas_reason(pebble):
    client = AcmeClient(directory=pebble.directory, account_key_pem=new_account_key(),
                        ca_bundle=str(pebble.ca_bundle))
    with pytest.raises(AcmeError) as failed:
        client.issue([HOST], responder=Deaf())
    message = failed.value.message
    assert "could not validate" in message and HOST in message and "unauthorized" in message, message


def test_a_directory_that_is_not_there_or_not_trusted_fails_loudly(pebble):
    for directory, bundle, expected in ((f"https://127.0.0.1:{free_port()}/dir", str(pebble.ca_bundle), "refused"),
                                        (pebble.directory, None, "CERTIFICATE_VERIFY_FAILED")):
        client = AcmeClient(directory=directory, account_key_pem=new_account_key(), ca_bundle=bundle)
        with pytest.raises(AcmeError) as failed:
            client.issue([HOST], responder=Deaf())
        assert "reach the directory" in failed.value.message and expected in failed.value.message, failed.value
