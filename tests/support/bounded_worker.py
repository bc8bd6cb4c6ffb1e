"""A replica with a worker pool of bounded size and a bounded wait, as issue 18 measured.

Why it exists: the autoscaling tests and benchmarks/autoscale.py need a service
that behaves like a real worker pool: at most ``SLOTS`` requests at once, and a
request that waited ``WAIT`` seconds inside the replica for a slot is refused
with 503 (a gunicorn or Tomcat with a bounded accept queue). The demo images'
``/debug/work`` waits forever instead, so it cannot show a request lost inside
a busy replica. This runs on the stock ``flotilla/python:bookworm`` image, its
source passed as the container's command: nothing to build.

    command: bounded_worker_command(), env: {SLOTS: "4", WAIT: "5"}
    GET /work?ms=200   busy 200 ms in a slot, 200; 503 after WAIT s without one
    GET /healthz       200 at once (no slot)
"""

from __future__ import annotations

import json

IMAGE = "flotilla/python:bookworm"
PORT = 8000

SOURCE = r'''
import os, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
SLOTS = threading.BoundedSemaphore(int(os.environ.get("SLOTS", "4")))
WAIT = float(os.environ.get("WAIT", "5"))
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            return self.answer(200, "ok")
        ms = float(urllib.parse.parse_qs(url.query).get("ms", ["50"])[0])
        if not SLOTS.acquire(timeout=WAIT):
            return self.answer(503, "busy: waited %gs for a slot" % WAIT)
        try:
            time.sleep(min(ms, 10000) / 1000)
        finally:
            SLOTS.release()
        self.answer(200, "done")
    def log_message(self, *args):
        pass
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
Server(("", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
'''


def bounded_worker_command() -> str:
    """The ``command:`` of a spec (JSON, which YAML reads): python3 running SOURCE."""
    return json.dumps(["python3", "-c", SOURCE])
