"""The gateway manager's boundary: nothing but a FlotillaError leaves ``apply``.

The daemon syncs the gateway once per app; an exception of another type from
deep inside config building (issue 12: a ValueError for an IPv6 zone, a
UnicodeEncodeError for a lone surrogate) escaped the reconcile and stopped
every other app's. These specs are built directly, past validation (which
refuses them, see test_spec_errors), to reach the boundary itself. HAProxy
is pointed at a path that does not exist, so nothing here ever runs it.
"""

from __future__ import annotations

import re

import pytest

from flotilla.errors import GatewayError
from flotilla.gateway import process
from flotilla.gateway.config import build_gateway_config, render_config
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.process import GatewayFiles
from flotilla.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec


def routed_app(*, path: str = "/", listen_host: str = "127.0.0.1") -> AppSpec:
    web = ServiceSpec(image="img:1", port=8000, routes=(RouteSpec(host="shop.localhost", path=path),))
    return AppSpec(app="shop", gateway=GatewaySpec(listen_host=listen_host, listen_port=18081),
                   services={"web": web})


@pytest.fixture
def manager(tmp_path, monkeypatch) -> GatewayManager:
    monkeypatch.setattr(process, "HAPROXY", str(tmp_path / "no-haproxy-here"))
    return GatewayManager(files=GatewayFiles(tmp_path / "gateway"))


def test_an_ipv6_zone_in_the_listen_address_is_a_gateway_error(manager):
    with pytest.raises(GatewayError, match="frontend name 'fe_::1%1_18081' is not valid") as caught:
        manager.apply({"shop": routed_app(listen_host="::1%1")}, {})
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("path, shown", [("/\ud800", r"'\ud800'"), ("/a\x00b", r"'\x00'"),
                                         ("/a\rb", r"'\r'")])
def test_a_path_the_configuration_cannot_hold_is_a_gateway_error_before_any_file(manager, path, shown):
    with pytest.raises(GatewayError, match=re.escape(f"cannot hold {shown}")) as caught:
        manager.apply({"shop": routed_app(path=path)}, {})
    assert isinstance(caught.value.__cause__, ValueError)
    assert not manager.files.candidate.exists() and not manager.files.config.exists()


def test_the_renderer_refuses_what_haproxy_or_utf_8_could_not_take():
    config = build_gateway_config({"shop": routed_app(path="/a\x00b")}, {})
    with pytest.raises(ValueError, match=r"cannot hold '\\x00' \(line \d+, after '    # r0: shop.localhost/a'\)"):
        render_config(config, runtime_socket="/run/h.sock")
