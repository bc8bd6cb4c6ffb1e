"""Replicas never reach the host: one packet filter chain for every Flotilla bridge.

A Docker network with ``internal: true`` has no route out, but the host is on
its bridge (the gateway address), and Linux answers on any of its addresses
from any interface. So a replica could connect to whatever listens on the
host's wildcard addresses (sshd, a database, another daemon's API) through
the bridge. Every path Flotilla opens on purpose starts on the host side: the
gateway, the health prober and the cache keeper connect to replicas. Hence
one rule: on a Flotilla bridge the host accepts the packets of connections it
began (conntrack ESTABLISHED, RELATED) and refuses every other packet, with an
ICMP "administratively prohibited" so that a replica's connect fails at once
rather than hanging.

Flotilla names its bridges ``fl-…`` when it creates a network (Docker's
``com.docker.network.bridge.name``), so one ``INPUT -i fl-+`` jump covers them
all. A network made by an older Flotilla keeps Docker's ``br-…`` name and gets
a jump of its own (``guard_bridges``). The chain is shared by every home on
the host and made idempotently: each rule is checked (``-C``) before it is
added, so two daemons starting at once add it once, and nothing is flushed,
so the host is never unguarded for a moment. ``-w`` waits for the xtables
lock that dockerd takes too. IPv6 gets the same rules when the host has
ip6tables; a host without IPv6 filtering is logged, not refused.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from flotilla.errors import EngineError

log = logging.getLogger(__name__)
CHAIN = "FLOTILLA-HOST"
BRIDGE_PREFIX = "fl-"
BRIDGE_OPTION = "com.docker.network.bridge.name"
IFNAMSIZ = 15  # Linux's longest interface name
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def bridge_name(network: str) -> str:
    """The bridge interface of a Flotilla network: ``fl-`` and a hash of its name (15 characters at most)."""
    digest = hashlib.sha256(network.encode()).hexdigest()
    return BRIDGE_PREFIX + digest[: IFNAMSIZ - len(BRIDGE_PREFIX)]


@dataclass(frozen=True)
class Family:
    command: str
    reject_with: str


IPV4 = Family("iptables", "icmp-admin-prohibited")
IPV6 = Family("ip6tables", "icmp6-adm-prohibited")


def chain_rules(family: Family) -> list[list[str]]:
    """The chain's rules, in order: the host's own connections pass, everything else is refused."""
    return [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-j", "REJECT", "--reject-with", family.reject_with],
    ]


def jump_rule(interface: str) -> list[str]:
    return ["-i", interface, "-j", CHAIN]


class HostFirewall:
    """Makes (idempotently) the chain that keeps replicas off the host; the only caller of iptables."""

    def __init__(self, *, run=subprocess.run) -> None:
        self._run = run

    def guard(self) -> None:
        """The chain, and INPUT's jump for every ``fl-`` bridge; raises EngineError if IPv4 cannot be guarded."""
        self._guard_family(IPV4, [BRIDGE_PREFIX + "+"], required=True)
        self._guard_family(IPV6, [BRIDGE_PREFIX + "+"], required=False)

    def guard_bridges(self, interfaces: Iterable[str]) -> None:
        """Jumps for bridges not named ``fl-…`` (networks made by an older Flotilla)."""
        legacy = sorted({i for i in interfaces if not i.startswith(BRIDGE_PREFIX)})
        if legacy:
            self._guard_family(IPV4, legacy, required=True)
            self._guard_family(IPV6, legacy, required=False)

    def _guard_family(self, family: Family, interfaces: list[str], *, required: bool) -> None:
        try:
            self._ensure_chain(family)
            for interface in interfaces:
                self._ensure(family, "INPUT", jump_rule(interface), first=True)
        except EngineError:
            if required:
                raise
            log.warning("%s: could not keep replicas off the host over IPv6; IPv4 is guarded", family.command)

    def _ensure_chain(self, family: Family) -> None:
        if self._iptables(family, ["-n", "-L", CHAIN]).returncode != 0:
            self._checked(family, ["-N", CHAIN])
        for rule in chain_rules(family):
            self._ensure(family, CHAIN, rule, first=False)

    def _ensure(self, family: Family, chain: str, rule: list[str], *, first: bool) -> None:
        if self._iptables(family, ["-C", chain, *rule]).returncode == 0:
            return
        self._checked(family, ["-I", chain, "1", *rule] if first else ["-A", chain, *rule])

    def _checked(self, family: Family, args: list[str]) -> None:
        result = self._iptables(family, args)
        if result.returncode != 0:
            raise EngineError(
                f"{family.command} {' '.join(args)} failed ({result.stderr.strip() or result.returncode}): "
                f"Flotilla needs it to keep replicas off the host's addresses; run the daemon as root "
                f"on a host with {family.command} (Docker Engine needs it too)"
            )

    def _iptables(self, family: Family, args: list[str]) -> subprocess.CompletedProcess:
        try:
            return self._run([family.command, "-w", "5", *args], capture_output=True, text=True,
                             env=CLEAN_ENV, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"could not run {family.command}: {exc}; install iptables (Docker needs it too)") from exc
