"""An "outside machine" for tests: a network namespace joined to this host by a veth pair.

Why it exists: requirement 5 (only the gateway is reachable from outside;
everything else lives on internal networks) can only be shown from somewhere
that is *not* this host's root namespace, since loopback reaches everything.
The network rule forbids probing real outside addresses, so tests build their
own outside: a namespace with one link to the host, addresses from a /30 this
module picks, and a default route back through the host side. Every packet it
sends stays on this machine.

    with outside_host() as outside:
        assert outside.http_get(f"http://{outside.host_ip}:{port}/", host_header="shop.localhost")[0] == 200
        assert not outside.tcp_connect(replica_ip, 8000)

The namespace and the host's veth are deleted on exit, also on error; any
process still running in the namespace (only ours can be) is killed by pid.
Without root or `ip netns`, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# 10.213.0.0/16: not Docker's default pools (172.17-31.x, 192.168.x), and
# checked against every address and route on the machine before use.
ADDRESS_BLOCK = ipaddress.ip_network("10.213.0.0/16")
PICK_ATTEMPTS = 32
LOCK_FILE = "/run/flotilla-test-netns.lock"  # serialises picking a /30 across processes
IFNAME_MAX = 15

_HTTP_GET = r"""
import json, sys, urllib.error, urllib.request
url, host, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
req = urllib.request.Request(url, headers={"Host": host} if host else {})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=timeout) as resp:
        print(json.dumps({"status": resp.status, "body": resp.read().decode("utf-8", "replace")}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode("utf-8", "replace")}))
except Exception as exc:
    print(json.dumps({"status": None, "body": f"{type(exc).__name__}: {exc}"}))
"""

_TCP_CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError:
    sys.exit(1)
"""


@dataclass(frozen=True)
class OutsideHost:
    """A namespace with one veth link to the host: `ip` inside, `host_ip` on the host side."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ip: str
    network: str

    def run(self, argv: Sequence[str], timeout: float = 10) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace (output captured as text, never raises on exit code)."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def http_get(self, url: str, host_header: str | None = None,
                 timeout: float = 2) -> tuple[int | None, str]:
        """GET `url` from inside: (status, body), or (None, the error) when there is no answer."""
        proc = self.run([sys.executable, "-c", _HTTP_GET, url, host_header or "", str(timeout)],
                        timeout=timeout + 10)
        try:
            answer = json.loads(proc.stdout)
        except ValueError:
            return None, f"the probe failed (exit {proc.returncode}): {proc.stderr.strip()}"
        return answer["status"], answer["body"]

    def tcp_connect(self, ip: str, port: int, timeout: float = 1) -> bool:
        """Can a TCP connection to ip:port be opened from inside?"""
        proc = self.run([sys.executable, "-c", _TCP_CONNECT, ip, str(port), str(timeout)],
                        timeout=timeout + 10)
        return proc.returncode == 0

    def add_route(self, cidr: str, via: str) -> None:
        """Add a route inside the namespace (for example to a Docker network via `host_ip`)."""
        _ip("-n", self.name, "route", "replace", cidr, "via", via)


@contextlib.contextmanager
def outside_host(name_prefix: str = "fltest") -> Iterator[OutsideHost]:
    """A fresh namespace + veth pair + /30, removed on exit (see module doc)."""
    _skip_unless_possible()
    suffix = uuid.uuid4().hex[:6]
    stem = name_prefix[: IFNAME_MAX - len(suffix) - 1]
    name, host_if, ns_if = f"{name_prefix}-{suffix}", f"{stem}{suffix}h", f"{stem}{suffix}n"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        network, host_ip, ip = _assign_addresses(name, host_if, ns_if)
        yield OutsideHost(name=name, host_if=host_if, ns_if=ns_if,
                          host_ip=host_ip, ip=ip, network=network)
    finally:
        _remove(name, host_if)


def _skip_unless_possible() -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("an outside host needs root (ip netns add, veth pairs)")
    if shutil.which("ip") is None:
        pytest.skip("an outside host needs iproute2's `ip` (scripts/setup.sh installs iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns` is not available here: {probe.stderr.strip()}")


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _assign_addresses(name: str, host_if: str, ns_if: str) -> tuple[str, str, str]:
    """Pick a free /30 (under a lock), address both ends, bring them up, route back."""
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        network = _free_slash30()
        host_ip, ip = (str(a) for a in network.hosts())
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("-n", name, "addr", "add", f"{ip}/30", "dev", ns_if)
    _ip("link", "set", host_if, "up")
    _ip("-n", name, "link", "set", ns_if, "up")
    _ip("-n", name, "link", "set", "lo", "up")
    _ip("-n", name, "route", "add", "default", "via", host_ip)
    return str(network), host_ip, ip


def _free_slash30() -> ipaddress.IPv4Network:
    taken = _networks_in_use()
    rng = random.SystemRandom()
    for _ in range(PICK_ATTEMPTS):
        offset = rng.randrange(ADDRESS_BLOCK.num_addresses // 4) * 4
        candidate = ipaddress.ip_network(f"{ADDRESS_BLOCK.network_address + offset}/30")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError(f"no free /30 found in {ADDRESS_BLOCK} after {PICK_ATTEMPTS} tries")


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network on an interface or in a routing table of the root namespace."""
    nets = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        dest = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if dest not in ("default", "broadcast", "local", "unreachable", "prohibit", "blackhole"):
                nets.append(ipaddress.ip_network(dest, strict=False))
    return nets


def _remove(name: str, host_if: str) -> None:
    """Kill what still runs inside (by pid), delete the namespace and the host's veth."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
