"""Who owns a host on a shared listen address: ``check_gateway`` refuses a route that takes another app's requests.

Apps on one ``gateway.listen`` share a frontend, where exact hosts and longer
paths are tried first. Issue 12: a second app routing ``shop.localhost/login``
(under the first app's ``shop.localhost/``) or ``admin.shop.example`` (under
its ``*.shop.example``) took the first app's requests. The rule: a host, with
every path under it, belongs to one app; a wildcard with every host it matches.
``check_gateway`` is pure given the active specs; the check that the address
is free (a socket bind) is replaced here wherever it would run.
"""

from __future__ import annotations

import pytest

from flotilla.daemon import operations
from flotilla.daemon.operations import check_gateway
from flotilla.errors import ConflictError
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec

LISTEN = "127.0.0.1:8080"


def app(name: str, *routes: str, port: int = 8080) -> AppSpec:
    """An app whose one service routes each ``host/path`` given."""
    specs = tuple(RouteSpec(host=r.split("/", 1)[0], path="/" + r.split("/", 1)[1]) for r in routes)
    web = ServiceSpec(image="img:1", port=8000, routes=specs)
    return AppSpec(app=name, gateway=GatewaySpec(listen_port=port), services={"web": web})


@pytest.fixture
def port_probes(monkeypatch) -> list[tuple[str, int]]:
    probed: list[tuple[str, int]] = []
    monkeypatch.setattr(operations, "_check_port_free", lambda host, port: probed.append((host, port)))
    return probed


@pytest.mark.parametrize("owner_route, taker_route, owned", [
    ("shop.localhost/", "shop.localhost/login", "shop.localhost"),
    ("shop.localhost/api", "shop.localhost/", "shop.localhost"),
    ("*.shop.example/", "admin.shop.example/", "admin.shop.example"),
    ("admin.shop.example/", "*.shop.example/", "admin.shop.example"),
    ("*.shop.example/api", "*.shop.example/", "*.shop.example"),
])
def test_a_route_under_a_host_another_app_owns_is_refused_naming_the_owner(owner_route, taker_route, owned):
    with pytest.raises(ConflictError) as caught:
        check_gateway(app("blog", taker_route), [app("shop", owner_route)])
    host, _, path = owner_route.partition("/")
    assert caught.value.message == (
        f"route {taker_route} on {LISTEN} would take requests of app shop: host {owned} belongs to "
        f"shop, which routes {host}/{path} (a host and every path under it belong to one app, a "
        "wildcard host and every host it matches too); route another host in blog, move the route "
        "into app shop, or give blog its own gateway.listen")


def test_the_same_route_is_already_served_and_every_clash_is_counted():
    with pytest.raises(ConflictError) as caught:
        check_gateway(app("blog", "shop.localhost/", "*.shop.example/api", "blog.localhost/"),
                      [app("shop", "shop.localhost/", "*.shop.example/api")])
    assert caught.value.message == (
        f"route *.shop.example/api on {LISTEN} is already served by app shop (1 more of blog's "
        "routes clash too); route another host in blog, move the route into app shop, or give "
        "blog its own gateway.listen")


@pytest.mark.parametrize("owner_route, neighbour_route", [
    ("shop.localhost/", "blog.localhost/"),
    ("shop.localhost/", "api.shop.localhost/"),  # a subdomain is another host
    ("*.shop.example/", "shop.example/"),  # a wildcard does not match its own suffix
    ("*.shop.example/", "a.b.shop.example/"),  # nor two labels more
    ("*.shop.example/", "*.a.shop.example/"),  # so these two match no host in common
])
def test_hosts_no_request_can_match_twice_may_belong_to_two_apps(owner_route, neighbour_route, port_probes):
    check_gateway(app("blog", neighbour_route), [app("shop", owner_route)])
    assert port_probes == []  # the gateway holds the address already


def test_the_same_host_on_another_address_is_another_frontend(port_probes):
    check_gateway(app("blog", "shop.localhost/login", port=8081), [app("shop", "shop.localhost/")])
    assert port_probes == [("127.0.0.1", 8081)]


def test_an_app_may_change_its_own_routes_and_pass_over_apps_without_routes(port_probes):
    shop = app("shop", "shop.localhost/", "*.shop.example/")
    check_gateway(app("shop", "shop.localhost/login", "admin.shop.example/"), [shop, app("quiet")])
    assert port_probes == []


def test_the_owner_named_is_the_first_app_by_name_when_stored_apps_already_share_a_host():
    # possible for apps stored before hosts had owners
    with pytest.raises(ConflictError, match="would take requests of app alpha: host shop.localhost"):
        check_gateway(app("new", "shop.localhost/x"),
                      [app("zulu", "shop.localhost/z"), app("alpha", "shop.localhost/")])
