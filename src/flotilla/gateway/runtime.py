"""HAProxy's Runtime API: change the servers of a running gateway without a reload.

Replicas come and go far more often than routes change, and a reload for
each would churn workers and connections. So every backend of the rendered
configuration declares a fixed set of server slots (``slot1``..``slotN``, see
config.py), and the daemon moves a replica through one of them at run time,
all through the stats socket that the configuration opens (``stats socket
... level admin``): a free slot (``0.0.0.0:1``, in maintenance) is pointed at
the replica with ``set_address``, made ready once the replica is healthy,
drained before the replica stops, put back in maintenance once its sessions
reach 0, and pointed at ``0.0.0.0:1`` again to free it. This is the only
module of the gateway that talks to HAProxy.

Every command runs on a fresh connection prefixed with ``set severity-output
number``, so an error answer is recognized by its severity (``[3]: No such
backend.``) rather than by guessing at free text. Any failure (socket missing
or refused, timeout, an error answer) raises GatewayError.

HAProxy 2.6 facts this relies on: servers declared in the configuration keep
idle connections for reuse (servers made with ``add server`` do not, which
costs a new TCP connection per request: the reason for slots); ``set server
... addr`` answers a bad address or port with a mere warning (and wraps a port
above 65535), so both are checked here before they are sent; and a slot's
run-time address is not in the configuration file, so a reload forgets it
unless the re-rendered configuration lists the replica.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flotilla.errors import GatewayError

AdminState = Literal["ready", "drain", "maint"]
ADMIN_STATES = ("ready", "drain", "maint")
_SEVERITY = re.compile(r"^\[(\d)\]: ?", re.MULTILINE)
_ERROR_SEVERITY = 3  # emerg 0 .. err 3 (syslog levels)
# srv_admin_state bits of `show servers state`: forced, inherited or DNS-caused
# maintenance (HAProxy's SRV_ADMF_MAINT, 0x23). 0x04 (CMAINT, `disabled` in the
# configuration, as every free slot is) stays set after `state ready`, so it is
# no sign of maintenance on its own.
_MAINT_BITS = 0x01 | 0x02 | 0x20
_DRAIN_BITS = 0x08 | 0x10
_STAT_TYPES = {"0": "frontend", "1": "backend", "2": "server", "3": "listener"}


@dataclass(frozen=True)
class StatRow:
    """One line of ``show stat``: a frontend, a backend (svname BACKEND) or a server."""

    pxname: str
    svname: str
    kind: str  # "frontend", "backend", "server" or "listener"
    status: str  # UP, DOWN, MAINT, DRAIN, "no check", OPEN...
    scur: int  # current sessions (requests in flight, for a server or backend)
    qcur: int  # requests waiting in the queue
    req_tot: int  # HTTP requests received (frontends and backends only; 0 for servers)
    stot: int  # sessions since start (for a server: requests sent to it)
    hrsp_5xx: int
    rtime: int  # average response time (ms) over the last 1024 requests
    ttime: int  # average total time (ms) over the last 1024 requests
    rate: int  # sessions per second over the last second
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ServerState:
    """A server as HAProxy sees it now."""

    name: str
    address: str
    port: int
    admin: AdminState  # what Flotilla set: ready, drain or maint
    operational: Literal["up", "down"]  # without health checks, down only in maintenance
    sessions: int  # requests in flight on it


class RuntimeApi:
    """A client of one HAProxy's Runtime API socket (``stats socket ... level admin``)."""

    def __init__(self, socket_path: str | Path, *, timeout: float = 2.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    # -- raw ---------------------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Run one command and return HAProxy's answer, without severity markers."""
        if "\n" in line or "\r" in line:
            raise GatewayError(f"refusing to send a multi-line command to HAProxy: {line!r}")
        answer = self._exchange(f"set severity-output number; {line}\n")
        return _checked_answer(line, answer)

    def command_with_payload(self, line: str, payload: str) -> str:
        """Run one command that takes a payload (``set ssl cert FILE <<``); an empty line would end it early,
        so blank lines are dropped. The payload is never part of an error message."""
        if "\n" in line or "\r" in line:
            raise GatewayError(f"refusing to send a multi-line command to HAProxy: {line!r}")
        body = "\n".join(part for part in payload.replace("\r", "").split("\n") if part.strip())
        answer = self._exchange(f"set severity-output number; {line} <<\n{body}\n\n")
        return _checked_answer(line, answer)

    # -- TLS certificates (gateway/certificates.py) ----------------------------------------

    def ssl_certs(self) -> list[str]:
        """The certificate files HAProxy holds in memory (``show ssl cert``), committed ones only."""
        lines = self.command("show ssl cert").splitlines()
        committed, in_transaction = [], False
        for line in lines:
            if line.startswith("#"):
                in_transaction = "transaction" in line
            elif line.strip() and not in_transaction:
                committed.append(line.strip())
        return committed

    def ssl_fingerprint(self, path: str) -> str:
        """The SHA-1 fingerprint of the leaf HAProxy serves from ``path`` (``show ssl cert PATH``)."""
        for line in self.command(f"show ssl cert {_file(path)}").splitlines():
            if line.startswith("SHA1 FingerPrint:"):
                return line.split(":", 1)[1].strip().upper()
        return ""

    def crt_list_entries(self, crt_list: str) -> set[str]:
        """The certificate files of a crt-list as HAProxy has it now (``show ssl crt-list -n``)."""
        lines = self.command(f"show ssl crt-list -n {_file(crt_list)}").splitlines()
        return {line.split()[0].rsplit(":", 1)[0] for line in lines if line.strip() and not line.startswith("#")}

    def load_ssl_cert(self, path: str, bundle: str, *, new: bool) -> None:
        """Put ``bundle`` (chain and key, PEM) in HAProxy's memory as ``path``: a transaction, committed."""
        if new:
            self.command(f"new ssl cert {_file(path)}")
        self.command_with_payload(f"set ssl cert {_file(path)}", bundle)
        answer = self.command(f"commit ssl cert {_file(path)}")
        if "success" not in answer.lower():
            self.command(f"abort ssl cert {_file(path)}")
            raise GatewayError(f"HAProxy did not commit certificate {path}: {answer.splitlines()[-1:]}")

    def add_to_crt_list(self, crt_list: str, path: str) -> None:
        self.command(f"add ssl crt-list {_file(crt_list)} {_file(path)}")

    def remove_ssl_cert(self, crt_list: str, path: str, *, listed: bool) -> None:
        if listed:
            self.command(f"del ssl crt-list {_file(crt_list)} {_file(path)}")
        self.command(f"del ssl cert {_file(path)}")

    # -- reading -------------------------------------------------------------------------------

    def stats(self) -> list[StatRow]:
        """Every frontend, backend and server counter row (``show stat``)."""
        return parse_stat_csv(self.command("show stat"))

    def servers(self, backend: str) -> dict[str, ServerState]:
        """The servers of ``backend``: name -> address, port, admin and operational state, sessions."""
        states = parse_servers_state(self.command(f"show servers state {_name(backend)}"))
        sessions = {row.svname: row.scur for row in self._server_stats(backend)}
        return {name: ServerState(**fields, sessions=sessions.get(name, 0))
                for name, fields in states.items()}

    def sessions(self, backend: str, name: str) -> int:
        """Requests in flight on one server (``scur``)."""
        for row in self._server_stats(backend):
            if row.svname == name:
                return row.scur
        raise GatewayError(f"HAProxy has no server {name} in backend {backend}; "
                           "list the backend's servers to see which exist")

    # -- changing --------------------------------------------------------------------------

    def set_state(self, backend: str, name: str, state: AdminState) -> None:
        """ready: takes requests; drain: finishes its requests, gets no new ones; maint: off."""
        if state not in ADMIN_STATES:
            raise GatewayError(f"unknown server state {state!r}; use one of {', '.join(ADMIN_STATES)}")
        self.command(f"set server {_name(backend)}/{_name(name)} state {state}")

    def set_address(self, backend: str, name: str, address: str, port: int) -> None:
        """Point a pre-declared server slot at ``address:port`` (``0.0.0.0:1`` frees it).

        Meant for a slot in maintenance: one that is ready would get requests
        at the new address at once.
        """
        where = f"addr {_ip(address)} port {_port(port)}"
        line = f"set server {_name(backend)}/{_name(name)} {where}"
        answer = self.command(line)
        # HAProxy reports a refused address or port as a warning, not an error
        if any(word in answer.lower() for word in ("invalid", "problem", "not allowed", "can't")):
            raise GatewayError(f"HAProxy refused `{line}`: {answer.splitlines()[0]}")

    # -- internals -----------------------------------------------------------------------------

    def _server_stats(self, backend: str) -> list[StatRow]:
        # filter: this proxy, servers only (type mask 4), every server id
        return [row for row in parse_stat_csv(self.command(f"show stat {_name(backend)} 4 -1"))
                if row.kind == "server"]

    def _exchange(self, data: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(data.encode())
                return _read_all(sock).decode(errors="replace")
        except FileNotFoundError as exc:
            raise GatewayError(f"HAProxy's Runtime API socket {self.socket_path} does not exist; "
                               "is the gateway running? (flotilla's daemon starts it)") from exc
        except ConnectionRefusedError as exc:
            raise GatewayError(f"HAProxy refused a connection on {self.socket_path}; the gateway "
                               "has stopped or is restarting: try again in a moment") from exc
        except TimeoutError as exc:
            raise GatewayError(f"HAProxy did not answer on {self.socket_path} within "
                               f"{self.timeout:g}s; it may be overloaded or hung") from exc
        except OSError as exc:
            raise GatewayError(f"cannot talk to HAProxy on {self.socket_path}: {exc}") from exc


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _checked_answer(line: str, answer: str) -> str:
    """``answer`` without severity markers; GatewayError if HAProxy reported an error."""
    text = answer.lstrip("\n")
    found = _SEVERITY.match(text)
    clean = _SEVERITY.sub("", text).strip("\n")
    failed = (found and int(found.group(1)) <= _ERROR_SEVERITY) or clean.startswith("Unknown command")
    if failed:
        reason = clean.splitlines()[0] if clean else "an error"
        if reason.startswith("Unknown command"):
            reason = "Unknown command (see `help` on the Runtime API)"
        raise GatewayError(f"HAProxy refused `{line}`: {reason}{_advice(reason)}")
    return clean


def _advice(reason: str) -> str:
    lowered = reason.lower()
    if "no such backend" in lowered or "can't find backend" in lowered or "no such proxy" in lowered:
        return " (the backend is missing from the running configuration: reload the gateway " \
               "with a configuration that routes to this service)"
    if "no such server" in lowered:
        return " (servers are the backend's pre-declared slots, slot1, slot2...: list the " \
               "backend's servers to see which exist)"
    return ""


def parse_stat_csv(text: str) -> list[StatRow]:
    """The rows of ``show stat`` CSV (its header line starts with ``# ``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    reader = csv.DictReader([lines[0][2:], *lines[1:]])
    return [_stat_row(row) for row in reader]


def _stat_row(row: dict[str, str]) -> StatRow:
    def number(key: str) -> int:
        value = row.get(key) or "0"
        return int(value) if value.lstrip("-").isdigit() else 0

    return StatRow(
        pxname=row.get("pxname", ""), svname=row.get("svname", ""),
        kind=_STAT_TYPES.get(row.get("type", ""), "unknown"), status=row.get("status", ""),
        scur=number("scur"), qcur=number("qcur"), req_tot=number("req_tot"), stot=number("stot"),
        hrsp_5xx=number("hrsp_5xx"), rtime=number("rtime"), ttime=number("ttime"),
        rate=number("rate"), raw={k: v for k, v in row.items() if k and v is not None},
    )


def parse_servers_state(text: str) -> dict[str, dict]:
    """``show servers state`` (format 1) as name -> ServerState fields except sessions."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line[1:].split() for line in lines if line.startswith("#")), None)
    if header is None:
        return {}
    found = {}
    for line in lines:
        if line.startswith("#") or len(line.split()) < len(header):
            continue  # the version line, the header, anything unexpected
        row = dict(zip(header, line.split()))
        found[row["srv_name"]] = _server_fields(row)
    return found


def _server_fields(row: dict[str, str]) -> dict:
    admin = int(row["srv_admin_state"])
    state: AdminState = "maint" if admin & _MAINT_BITS else "drain" if admin & _DRAIN_BITS else "ready"
    return {
        "name": row["srv_name"],
        "address": row["srv_addr"],
        "port": int(row["srv_port"]),
        "admin": state,
        "operational": "down" if row["srv_op_state"] == "0" else "up",
    }


def _name(name: str) -> str:
    """A backend or server name, refused if it could smuggle in another command."""
    if not name or any(c in name for c in " ;/\t\r\n\\"):
        raise GatewayError(f"{name!r} is not a valid HAProxy backend or server name")
    return name


def _file(path: str) -> str:
    """A certificate or crt-list path, refused if it could smuggle in another command or word."""
    if not path.startswith("/") or any(c in path for c in " ;\t\r\n\\<"):
        raise GatewayError(f"{path!r} is not a usable certificate file path")
    return path


def _ip(address: str) -> str:
    """An IP address as HAProxy reads it in ``set server ... addr`` (IPv6 without brackets)."""
    try:
        return str(ipaddress.ip_address(str(address).strip("[]")))
    except ValueError:
        raise GatewayError(f"{address!r} is not an IP address (the gateway does not resolve names)") from None


def _port(port: int) -> int:
    """A port in 1-65535 (HAProxy would silently wrap a larger one)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise GatewayError(f"port {port!r} is not a port number in 1-65535")
    return port
