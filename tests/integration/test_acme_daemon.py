"""ACME end to end: a real daemon, its gateway and a real CA (pebble) on loopback, through the CLI.

``flotilla up`` an app whose route says ``tls: {acme: true}`` and whose ``acme.directory``
is pebble's; the daemon orders the certificate, its gateway answers the HTTP-01
challenge, and the certificate is served: ``curl --cacert <pebble's root>`` succeeds
over HTTPS and HTTP/2. Pebble issues certificates valid for one minute here, so the
daemon renews each one about 40 s after it was issued (two thirds of its lifetime,
less the host's spread), while a load runs across the renewal without one failed
request. Then the CA goes away: the next renewal fails loudly (an event, the error
in ``flotilla certs ls``, ``flotilla_acme_failing`` on /metrics) and the old
certificate keeps serving.
"""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import pytest

from flotilla.daemon.acme import CA_BUNDLE_SETTING
from tests.support import pebble as pebble_support
from tests.support.load import LoadGenerator, wait_for_answers
from tests.support.ports import free_port
from tests.support.tls import wait_served
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not pebble_support.installed(), reason="pebble is not installed (apt-get install pebble)"),
]
HOST = "shop.example.com"
VALIDITY = 60  # seconds: pebble's certificateValidityPeriod


def acme_spec(app: str, *, port: int, https_port: int, directory: str) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}", https_port: {https_port}}}
acme: {{email: ops@example.com, directory: "{directory}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    env: {{LOG_LEVEL: warning}}
    routes:
      - {{host: {HOST}, tls: {{acme: true}}}}
"""


def certificate(flotilla, app: str) -> dict | None:
    rows = [r for r in flotilla.json("certs", "ls", app) if r["name"] == f"acme:{HOST}"]
    return rows[0] if rows else None


def issued_after(flotilla, app: str, moment: float):
    found = certificate(flotilla, app)
    return found if found and found["not_before"] and found["not_before"] >= moment - 2 else None


def renewed(flotilla, app: str, first: dict) -> dict | None:
    """The certificate once it is another than ``first`` (not by time alone: a quick first issue can end
    within the seconds ``issued_after`` allows for clocks)."""
    found = certificate(flotilla, app)
    return found if found and found["fingerprint"] != first["fingerprint"] else None


def events(flotilla, app: str, kind: str) -> list[dict]:
    return [e for e in flotilla.json("events", app) if e["kind"] == kind]


def metrics(flotilla) -> str:
    return flotilla.client()._open("GET", "/metrics")[0].read().decode()


def curl(https_port: int, root, *more: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(root),
                           "--resolve", f"{HOST}:{https_port}:127.0.0.1", *more,
                           f"https://{HOST}:{https_port}/healthz"],
                          capture_output=True, text=True, timeout=30)


def test_a_certificate_is_issued_served_renewed_and_a_failure_is_loud(flotilla, app_name, tmp_path):
    port, https_port = free_port(), free_port()
    with pebble_support.running_pebble(tmp_path / "pebble", http_port=port, validity_seconds=VALIDITY) as pebble:
        flotilla.env[CA_BUNDLE_SETTING] = str(pebble.ca_bundle)
        spec = flotilla.write_spec(tmp_path, acme_spec(app_name, port=port, https_port=https_port,
                                                       directory=pebble.directory))
        started = time.time()
        flotilla.run("up", "-f", str(spec), "--timeout", "90")
        first = wait_for(lambda: issued_after(flotilla, app_name, started), timeout=90, interval=0.5,
                         what="the first ACME certificate in `certs ls`")
        assert first["source"] == "acme" and first["hosts"] == [HOST] and "Pebble" in first["issuer"], first
        assert first["error"] is None
        steps = [e["kind"] for e in flotilla.json("events", app_name) if e["kind"].startswith("certificate.")]
        assert steps[:6] == ["certificate.requested", "certificate.account", "certificate.ordered",
                             "certificate.challenge", "certificate.validated", "certificate.issued"], steps
        root = pebble.write_root(tmp_path / "pebble-root.pem")
        wait_for(lambda: curl(https_port, root).returncode == 0, timeout=30, interval=0.5,
                 what="HTTPS with the ACME certificate")
        http2 = curl(https_port, root, "--http2", "-o", "/dev/null", "-w", "%{http_version}")
        assert http2.returncode == 0 and http2.stdout.strip() == "2", http2
        assert f'flotilla_acme_issued_total{{app="{app_name}",host="{HOST}"}} 1' in metrics(flotilla)

        # renewal, about 40 s after the first was issued: an HTTPS load (keep-alive, pebble's root
        # trusted) and a new handshake per curl run across it, and not one request fails
        failed_curls, second = [], None
        load = LoadGenerator(host="127.0.0.1", port=https_port, host_header=HOST, rate=40, max_seconds=VALIDITY + 40,
                             paths=("/items",), post_every=0, workers=8,
                             tls=ssl.create_default_context(cafile=str(root)))
        with load:
            deadline = time.monotonic() + VALIDITY + 30
            while time.monotonic() < deadline and second is None:
                answer = curl(https_port, root)
                if answer.returncode != 0:
                    failed_curls.append(answer.stderr)
                second = renewed(flotilla, app_name, first)
                time.sleep(0.2)
            assert second is not None, "the certificate was not renewed"
            wait_served(https_port, HOST, second["fingerprint"])  # new handshakes get the new one
            wait_for_answers(load, 40)
        result = load.result
        print(f"HTTPS load across the ACME renewal: {result.summary()}; curls {len(failed_curls)} failed")
        assert result.failed == 0 and result.ok > 100, result.summary()
        assert failed_curls == []
        assert second["fingerprint"] != first["fingerprint"] and events(flotilla, app_name, "certificate.renewed")
        # at two thirds of the lifetime (less the host's spread), not at its end: 40 s of 60, with margin
        assert second["not_before"] - first["not_before"] <= 0.8 * VALIDITY, (first, second)
    # the CA is gone: the next renewal fails, loudly, and the renewed certificate keeps serving meanwhile
    failed = wait_for(lambda: events(flotilla, app_name, "certificate.failed"), timeout=VALIDITY, interval=0.5,
                      what="a certificate.failed event")
    still_valid = second["not_after"] > time.time() + 1  # failed at ~40 s of its 60 s: normally yes
    serving = curl(https_port, root)
    assert "Connection refused" in failed[0]["message"] and "keeps serving" in failed[0]["message"], failed
    shown = certificate(flotilla, app_name)
    assert shown["error"] and "Connection refused" in shown["error"] and shown["fingerprint"] == second["fingerprint"]
    assert f'flotilla_acme_failing{{app="{app_name}",host="{HOST}"}} 1' in metrics(flotilla)
    table = flotilla.run("certs", "ls", app_name).stdout
    assert "Connection refused" in table, table
    if still_valid:
        assert serving.returncode == 0, serving.stderr
    # the account key and the certificates' keys: in the vault only, sealed, never in plaintext under the home
    assert files_holding(flotilla.home, b"PRIVATE KEY") == []
    for args in (("certs", "ls", app_name, "--json"), ("events", app_name, "--json")):
        assert "PRIVATE KEY" not in flotilla.run(*args).stdout


def files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found
