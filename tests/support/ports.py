"""Free loopback ports, so that no test needs a port another program could hold.

Why it exists: the shop demo (``scripts/demo.sh``) keeps its gateway on
127.0.0.1:8080 while the test suite runs beside it, and any fixed port may be
held by something else on a developer's machine. Every test that makes
something listen on the host asks the kernel for a port that is free now.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on at this moment (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
