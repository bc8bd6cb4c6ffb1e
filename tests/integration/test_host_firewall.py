"""Replicas cannot reach the host (engines/docker/firewall.py), tried from inside real replicas.

Issue 13, break 8: a replica on an ``internal: true`` network connected to a
port the host listens on, through the host's address on the bridge. The host
listens here on every address (0.0.0.0, a port of its own), and replicas try
the host's addresses on both of the app's bridges. The host's own connections
to replicas (the health prober, the gateway) must still work: the app comes
up healthy and serves through the gateway.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess

import pytest

from flotilla import labels
from flotilla.naming import home_identity
from tests.support.cli import in_container, ps
from tests.support.ports import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker

TRY_CONNECT = """
import json, socket, sys
results = {{}}
for address in {addresses!r}:
    try:
        socket.create_connection((address, {port}), timeout=3).close()
        results[address] = "connected"
    except OSError as exc:
        results[address] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(results))
"""


def spec(app: str, gateway_port: int) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{gateway_port}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    routes: [{{host: shop.localhost, path: /}}]
  fetcher:
    image: shop-catalog:1
    port: 8000
    egress: true
"""


@pytest.fixture
def host_listener():
    """A TCP port the host listens on, on every address, for the test's lifetime."""
    listener = socket.create_server(("0.0.0.0", free_port()), backlog=16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def gateways(docker_client, app: str) -> dict[str, str]:
    """Each of the app's networks by name, with the host's address on its bridge."""
    networks = docker_client.networks.list(filters={"label": f"io.flotilla.app={app}"})
    return {n.name: n.attrs["IPAM"]["Config"][0]["Gateway"] for n in networks}


def served(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz", headers={"Host": "shop.localhost"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def attempts(docker_client, container_id: str, addresses: list[str], port: int) -> dict[str, str]:
    return json.loads(in_container(docker_client, container_id, TRY_CONNECT.format(addresses=addresses, port=port)))


def test_no_replica_reaches_a_host_port_yet_the_host_reaches_replicas(
        flotilla, app_name, tmp_path, docker_client, host_listener):
    gateway_port = free_port()
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec(app_name, gateway_port))), "--timeout", "90")
    wait_for(lambda: served(gateway_port), timeout=30, what="the gateway (on the host) reaching a replica")
    host_addresses = sorted(gateways(docker_client, app_name).values())
    assert len(host_addresses) == 2  # the internal and the egress bridge
    for replica in ps(flotilla, app_name):
        tried = attempts(docker_client, replica["container_id"], host_addresses, host_listener)
        assert "connected" not in tried.values(), (replica["service"], tried)


def test_the_guard_is_one_chain_made_once_however_often_it_is_ensured(flotilla, app_name, tmp_path):
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec(app_name, free_port()))), "--timeout", "90")
    flotilla.kill_daemon()
    flotilla.run("ps", app_name)  # a new daemon guards the host again at its start
    chain = subprocess.run(["iptables", "-S", "FLOTILLA-HOST"], capture_output=True, text=True, check=True)
    assert chain.stdout.splitlines()[1:] == [
        "-A FLOTILLA-HOST -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A FLOTILLA-HOST -j REJECT --reject-with icmp-admin-prohibited",
    ]
    inputs = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=True).stdout
    assert inputs.count("-i fl-+ -j FLOTILLA-HOST") == 1


def test_a_network_made_before_the_guard_gets_a_jump_for_its_bridge(flotilla, app_name, docker_client):
    """A network an older Flotilla made has Docker's ``br-`` bridge name: the next daemon start guards it."""
    home_labels = labels.owned(app_name, role="network", home=home_identity(flotilla.home))
    network = docker_client.networks.create(f"flotilla-{app_name}-internal", driver="bridge", internal=True,
                                            labels=home_labels)
    jump = ["-i", f"br-{network.id[:12]}", "-j", "FLOTILLA-HOST"]
    try:
        flotilla.run("ps")  # starts this home's daemon
        assert subprocess.run(["iptables", "-C", "INPUT", *jump], capture_output=True).returncode == 0
    finally:
        network.remove()
        subprocess.run(["iptables", "-D", "INPUT", *jump], capture_output=True)
