"""The real ``haproxy -c`` accepts every configuration Flotilla renders.

Why it exists: a configuration HAProxy refuses would take the whole gateway
down at the next reload, and only HAProxy itself can say what it accepts. This
runs the ``haproxy`` binary (a subprocess, so not in tests/unit) on rendered
text; ``-c`` only parses, so nothing listens and no Docker is needed. Skipped,
with the reason, where HAProxy is missing. What the text says is tested,
purely, in tests/unit/test_gateway_config.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.gateway.config import render_config
from flotilla.gateway.model import Server
from tests.support.gateway_specs import app, build, route, servers, service

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not Path(HAPROXY).exists(),
                                   reason=f"HAProxy is not installed ({HAPROXY}); apt-get install haproxy")


def haproxy_check(tmp_path: Path, text: str) -> None:
    """``haproxy -c`` on ``text``: accepted, and without a warning."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    result = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, f"haproxy -c refused:\n{result.stderr}\n---\n{text}"
    assert "[WARNING]" not in result.stderr, result.stderr


CONFIGS = {
    "no apps": lambda: build(),
    "one app": lambda: build(app("shop", web=service(route("shop.localhost"))),
                             replicas={("shop", "web"): servers("shop-web", 2)}),
    "several apps and frontends": lambda: build(
        app("shop", web=service(route("shop.localhost")), api=service(route("shop.localhost", "/api"))),
        app("blog", port=48081, web=service(route("blog.localhost"), route("www.blog.localhost"))),
        app("docs", port=48081, web=service(route("docs.localhost", "/v1"))),
        app("v6", host="::1", port=48082, web=service(route("v6.localhost"))),
        replicas={("shop", "web"): servers("shop-web", 2), ("blog", "web"): servers("blog-web", 1)}),
    "wildcard and strip_prefix": lambda: build(app(
        "shop", api=service(route("*.shop.example", "/api/", strip=True),
                            route("shop.localhost", "/api/v1/", strip=True)))),
    "servers enabled and disabled": lambda: build(
        app("shop", web=service(route("shop.localhost"))),
        replicas={("shop", "web"): servers("shop-web", 4, disabled=(1, 3))
                  + [Server("shop-web-5-abc123", "fd00::5", 8000, True)]}),
    "names with dashes": lambda: build(
        app("my-shop-2", **{"front-end": service(route("my-shop.localhost")),
                            "back-end": service(route("my-shop.localhost", "/back-end", strip=True))}),
        replicas={("my-shop-2", "front-end"): servers("my-shop-2-front-end", 2)}),
    "body limits from one byte to 1 TiB": lambda: build(app(
        "shop", web=service(route("shop.localhost"), max_body=1),
        api=service(route("shop.localhost", "/api"), max_body=1024 ** 4))),
    "paths that need quoting": lambda: build(app(
        "shop", web=service(route("shop.localhost", "/it's\"$x", strip=True),
                            route("shop.localhost", r"/a\b(c)[d]{e}|f*+.^", strip=True),
                            route("shop.localhost", "/%41;,=@~!&"), route("*.a-b.c"))),
        replicas={("shop", "web"): servers("shop-web", 1)}),
}


@needs_haproxy
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_haproxy_accepts_the_rendered_config(name, tmp_path):
    haproxy_check(tmp_path, render_config(CONFIGS[name](),
                                          runtime_socket=str(tmp_path / "haproxy.sock")))


_PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="?#")
_paths = st.lists(st.text(_PATH_CHARS, min_size=1, max_size=12), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts))


@needs_haproxy
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=st.lists(_paths, min_size=1, max_size=4, unique=True), strip=st.booleans(),
       wildcard=st.booleans())
def test_printable_ascii_paths_render_a_valid_config_even_unvalidated(tmp_path, paths, strip, wildcard):
    host = "*.shop.example" if wildcard else "shop.localhost"
    config = build(app("shop", web=service(*(route(host, p, strip) for p in paths))))
    haproxy_check(tmp_path, render_config(config, runtime_socket=str(tmp_path / "h.sock")))
