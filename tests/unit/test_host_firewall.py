"""The names and rules of the host guard (engines/docker/firewall.py), without iptables."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flotilla.engines.docker.firewall import BRIDGE_PREFIX, IFNAMSIZ, IPV4, IPV6, bridge_name, chain_rules


@given(st.text(min_size=1, max_size=200))
def test_every_network_gets_a_bridge_name_linux_accepts_and_the_guard_matches(network):
    name = bridge_name(network)
    assert name.startswith(BRIDGE_PREFIX) and len(name) <= IFNAMSIZ
    assert name == bridge_name(network)


def test_two_networks_of_an_app_get_two_bridges():
    assert bridge_name("flotilla-shop-internal") != bridge_name("flotilla-shop-egress")


def test_the_host_answers_only_what_it_began_and_refuses_the_rest_at_once():
    for family in (IPV4, IPV6):
        accept, refuse = chain_rules(family)
        assert accept[-2:] == ["-j", "RETURN"] and "ESTABLISHED,RELATED" in accept
        assert refuse[:2] == ["-j", "REJECT"]  # never DROP: a replica's connect fails at once
