"""The health prober's real probe: HTTP and TCP checks against a server on 127.0.0.1.

Why it exists: the prober's state machine is tested purely in
tests/unit/test_health.py with a fake probe; that the probe itself reads an
HTTP status and tells an open port from a closed one needs real sockets, so
it lives here. No Docker needed.
"""

from __future__ import annotations

import http.server
import threading

from flotilla.daemon.health import ProbeTarget, probe


def test_real_probe_over_loopback():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # stdlib naming
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        base = dict(container_id="c", app="a", replica="r-1", ip="127.0.0.1", port=port, interval=1, timeout=1)
        assert probe(ProbeTarget(kind="http", path="/healthz", **base)) == (True, "HTTP 200")
        assert probe(ProbeTarget(kind="http", path="/other", **base)) == (False, "HTTP 503")
        assert probe(ProbeTarget(kind="tcp", path=None, **base))[0] is True
    finally:
        server.shutdown()
        server.server_close()
    closed = ProbeTarget(container_id="c", app="a", replica="r-1", ip="127.0.0.1", port=port,
                         kind="tcp", path=None, interval=1, timeout=0.5)
    assert probe(closed)[0] is False
