"""What the abuse tests ask of a rendered gateway: does HAProxy load it, and where does a request go.

``haproxy_refusal`` runs the real ``haproxy -c`` (it parses, binds nothing).
``first_route`` is the frontend's routing in Python, as config.py renders it:
the routes in priority order, the first whose host and path match wins. With
it a test can ask, for any request, which app would serve it, without
starting HAProxy or sending traffic.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from flotilla.gateway.model import Frontend, GatewayConfig, GatewayRoute, host_matches

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAVE_HAPROXY = Path(HAPROXY).exists()


def haproxy_refusal(text: str) -> str | None:
    """None when ``haproxy -c`` accepts ``text`` without a warning, else what HAProxy said."""
    with tempfile.TemporaryDirectory(prefix="flotilla-abuse-") as directory:
        config = Path(directory) / "haproxy.cfg"
        config.write_bytes(text.encode("ascii"))
        result = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True,
                                timeout=30, check=False)
    if result.returncode != 0 or "[WARNING]" in result.stderr:
        return result.stderr.strip() or f"exit {result.returncode}"
    return None


def first_route(frontend: Frontend, host: str, path: str) -> GatewayRoute | None:
    """The route a request for ``host`` and ``path`` takes (``host`` normalized as the frontend does)."""
    return next((r for r in frontend.routes if host_matches(r.host, host) and _under(r.path, path)), None)


def frontend_of(config: GatewayConfig, bind: tuple[str, int]) -> Frontend | None:
    return next((f for f in config.frontends if (f.bind_host, f.bind_port) == bind), None)


def request_host(route_host: str) -> str:
    """A host a request could carry for ``route_host`` (a wildcard gets a label of its own)."""
    return "probe" + route_host[1:] if route_host.startswith("*.") else route_host


def _under(prefix: str, path: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")
