"""The gateway's routing table and its haproxy.cfg: what is routed where, and what the text says.

Pure: models, rendering and parsing of Runtime API answers, no process run.
That HAProxy itself accepts the rendered text is tested by running it, in
tests/integration/test_gateway_config_haproxy.py.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.errors import SpecError
from flotilla.gateway.config import (
    SLOTS_PER_BACKEND,
    build_gateway_config,
    gateway_threads,
    normalize_path,
    render_config,
    shadowed_routes,
)
from flotilla.gateway.model import (
    GatewayConfig,
    Server,
    backend_name,
    frontend_name,
    host_matches,
    hosts_overlap,
    parse_backend_name,
)
from flotilla.spec import spec_from_dict
from flotilla.spec.models import AutoscaleSpec, AutoscaleTarget, ServiceSpec
from tests.support.gateway_specs import app, build, route, servers, service

SOCKET = "/run/flotilla-test/haproxy.sock"


def rendered(config: GatewayConfig, **kwargs) -> str:
    return render_config(config, runtime_socket=SOCKET, **kwargs)


# -- names --------------------------------------------------------------------------------------

def test_backend_names_keep_dashes_and_cannot_collide():
    assert backend_name("shop", "web") == "be_shop_web"
    assert backend_name("my-shop", "web-api") == "be_my-shop_web-api"
    # with '-' turned into '_' these two would both be be_a_b_c
    assert backend_name("a-b", "c") != backend_name("a", "b-c")


def test_backend_name_round_trips_and_ignores_other_proxies():
    assert parse_backend_name(backend_name("my-shop", "web-2")) == ("my-shop", "web-2")
    assert parse_backend_name("fe_127.0.0.1_8080") is None
    assert parse_backend_name("be_a_b_c") is None
    assert parse_backend_name("stats") is None


@pytest.mark.parametrize("app_name, service_name", [("Shop", "web"), ("shop", "web_x"),
                                                    ("shop", "a b"), ("", "web")])
def test_names_a_spec_would_refuse_are_refused(app_name, service_name):
    with pytest.raises(ValueError, match="not a valid Flotilla name"):
        backend_name(app_name, service_name)


def test_frontend_names_come_from_the_address():
    assert frontend_name("127.0.0.1", 8080) == "fe_127.0.0.1_8080"
    assert frontend_name("::1", 8080) == "fe_::1_8080"
    assert frontend_name("localhost", 80) == "fe_localhost_80"


@pytest.mark.parametrize("bad, message", [
    (Server("web 1", "10.0.0.1", 80, True), "not valid for HAProxy"),
    (Server("web;1", "10.0.0.1", 80, True), "not valid for HAProxy"),
    (Server("web-1", "web.internal", 80, True), "not an IP address"),
    (Server("web-1", "10.0.0.1", 0, True), "outside 1-65535"),
])
def test_servers_haproxy_could_not_take_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        build(app("shop", web=service(route("shop.localhost"))), replicas={("shop", "web"): [bad]})


@pytest.mark.parametrize("given_path, expected", [("/", "/"), ("/api", "/api"), ("/api/", "/api"),
                                                  ("/a/b//", "/a/b"), ("//", "/")])
def test_route_paths_are_normalized_without_trailing_slash(given_path, expected):
    assert normalize_path(given_path) == expected


# -- what is routed -----------------------------------------------------------------------------

def test_only_routed_services_get_a_backend():
    config = build(app("shop", web=service(route("shop.localhost")), db=service(),
                       worker=ServiceSpec(image="w:1")),
                   replicas={("shop", "web"): servers("shop-web", 1),
                             ("shop", "db"): servers("shop-db", 2)})
    assert [b.name for b in config.backends] == ["be_shop_web"]
    assert config.backend("shop", "db") is None
    text = rendered(config)
    assert "be_shop_db" not in text and "shop-db-" not in text and "10.1.0.2" not in text


def test_an_app_without_routes_renders_nothing():
    config = build(app("quiet", db=service()), app("shop", port=48081, web=service(route("s.localhost"))))
    assert [f.apps for f in config.frontends] == [("shop",)]
    assert "quiet" not in rendered(config)


def test_exact_hosts_come_before_wildcards_then_longer_paths():
    config = build(app("shop",
                       web=service(route("shop.localhost"), route("*.shop.localhost", "/api/v2")),
                       api=service(route("shop.localhost", "/api"), route("*.shop.localhost")),
                       v2=service(route("shop.localhost", "/api/v2"))))
    order = [(r.host, r.path) for r in config.frontends[0].routes]
    assert order == [("shop.localhost", "/api/v2"), ("shop.localhost", "/api"),
                     ("shop.localhost", "/"), ("*.shop.localhost", "/api/v2"),
                     ("*.shop.localhost", "/")]


def test_equal_priority_is_broken_by_host_then_path():
    config = build(app("shop", b=service(route("b.localhost", "/x")),
                       a=service(route("a.localhost", "/y")),
                       c=service(route("a.localhost", "/x"))))
    order = [(r.host, r.path) for r in config.frontends[0].routes]
    assert order == [("a.localhost", "/x"), ("a.localhost", "/y"), ("b.localhost", "/x")]


def test_wildcards_match_one_label_and_exact_hosts_match_exactly():
    text = rendered(build(app("shop", web=service(route("shop.localhost")),
                              api=service(route("*.shop.example")))))
    assert "var(txn.host) -m str shop.localhost" in text
    assert r"var(txn.host) -m reg '^[^.]+\.shop\.example$'" in text


@pytest.mark.parametrize("host, matches", [
    ("a.shop.example", True), ("a-1.shop.example", True), ("shop.example", False),
    ("a.b.shop.example", False), (".shop.example", False), ("ashop.example", False),
])
def test_host_matches_a_wildcard_as_the_rendered_regex_does(host, matches):
    text = rendered(build(app("shop", api=service(route("*.shop.example")))))
    pattern = re.search(r"acl r0_host var\(txn.host\) -m reg '(.*)'", text).group(1)
    assert host_matches("*.shop.example", host) is matches
    assert (re.search(pattern, host) is not None) is matches


@pytest.mark.parametrize("first, second, overlap", [
    ("shop.localhost", "shop.localhost", True), ("shop.localhost", "api.shop.localhost", False),
    ("*.shop.example", "admin.shop.example", True), ("admin.shop.example", "*.shop.example", True),
    ("*.shop.example", "*.shop.example", True), ("*.shop.example", "*.a.shop.example", False),
    ("*.shop.example", "shop.example", False),
])
def test_hosts_overlap_when_one_request_could_match_both(first, second, overlap):
    assert hosts_overlap(first, second) is overlap


def test_routes_are_selected_then_stripped_then_dispatched():
    text = rendered(build(app("shop", api=service(route("shop.localhost", "/api", strip=True)))))
    lines = [line.strip() for line in text.splitlines()]
    select = lines.index("http-request set-var(txn.route) str(r0) if !route_found r0_host r0_path")
    not_found = next(i for i, line in enumerate(lines) if line.startswith("http-request return status 404"))
    strip = lines.index(r"http-request replace-path '^/api/?(.*)' '/\1' if { var(txn.route) -m str r0 }")
    use = lines.index("use_backend be_shop_api if { var(txn.route) -m str r0 }")
    assert select < not_found < strip < use
    assert "acl r0_path path -m str /api" in lines and "acl r0_path path -m beg /api/" in lines


def test_root_route_has_no_path_condition_and_no_strip():
    text = rendered(build(app("shop", web=service(route("shop.localhost", "/", strip=True)))))
    assert "r0_path" not in text
    assert "replace-path" not in text


def test_apps_sharing_an_address_share_one_frontend():
    config = build(app("shop", web=service(route("shop.localhost"))),
                   app("blog", web=service(route("blog.localhost"))),
                   app("docs", port=48090, web=service(route("docs.localhost"))))
    assert [(f.name, f.apps) for f in config.frontends] == [
        ("fe_127.0.0.1_48080", ("blog", "shop")), ("fe_127.0.0.1_48090", ("docs",))]
    assert rendered(config).count("bind 127.0.0.1:48080") == 1


def test_a_route_claimed_by_two_apps_is_reported_as_shadowed():
    config = build(app("blog", web=service(route("same.localhost"))),
                   app("shop", web=service(route("same.localhost"))))
    frontend = config.frontends[0]
    assert [r.app for r in frontend.routes] == ["blog", "shop"]
    assert [r.app for r in shadowed_routes(frontend)] == ["shop"]


def test_servers_fill_slots_in_order_disabled_ones_in_maintenance_the_rest_free():
    config = build(app("shop", web=service(route("shop.localhost"))),
                   replicas={("shop", "web"): list(reversed(servers("shop-web", 3, disabled=(2,))))})
    assert [s.name for s in config.backends[0].servers] == [
        "shop-web-1-abc123", "shop-web-2-abc123", "shop-web-3-abc123"]
    text = rendered(config)
    assert "server slot1 10.1.0.1:8000 # shop-web-1-abc123\n" in text
    assert "server slot2 10.1.0.2:8000 disabled # shop-web-2-abc123\n" in text
    assert "server slot4 0.0.0.0:1 disabled\n" in text
    assert f"server slot{SLOTS_PER_BACKEND} 0.0.0.0:1 disabled\n" in text
    assert f"server slot{SLOTS_PER_BACKEND + 1} " not in text


def test_same_input_gives_the_same_text_whatever_the_order():
    apps = [app("shop", web=service(route("shop.localhost"), route("*.shop.localhost", "/x")),
                api=service(route("shop.localhost", "/api", strip=True))),
            app("blog", port=48081, web=service(route("blog.localhost")))]
    replicas = {("shop", "web"): servers("shop-web", 3), ("blog", "web"): servers("blog-web", 2)}
    first = rendered(build_gateway_config({a.app: a for a in apps}, replicas))
    again = rendered(build_gateway_config({a.app: a for a in reversed(apps)},
                                          {k: list(reversed(v)) for k, v in reversed(replicas.items())}))
    assert first == again


def test_global_section_serves_the_runtime_api_and_never_daemonizes():
    text = render_config(build(), runtime_socket="/srv/gw/haproxy.sock", max_drain_seconds=25)
    assert "master-worker" in text
    assert "stats socket /srv/gw/haproxy.sock mode 600 level admin expose-fd listeners" in text
    assert "hard-stop-after 25s" in text
    assert re.search(r"^\s*daemon\s*$", text, re.MULTILINE) is None
    for line in ("balance leastconn", "option redispatch 1", "retries 3",
                 "retry-on conn-failure empty-response",
                 "timeout http-request 10s", "timeout queue 10s"):
        assert line in text


def test_a_small_host_runs_one_haproxy_thread_and_a_larger_one_haproxys_default():
    assert [gateway_threads(cpus) for cpus in (1, 2, 3, 16)] == [1, 1, None, None]
    one = render_config(build(), runtime_socket="/srv/gw/haproxy.sock", threads=1)
    assert "nbthread 1" in [line.strip() for line in one.splitlines()]
    default = render_config(build(), runtime_socket="/srv/gw/haproxy.sock")
    assert "nbthread" not in default  # HAProxy's own: a thread per CPU


def test_requests_are_logged_as_json_on_stdout_with_the_path_taken_before_any_rewrite():
    text = rendered(build(app("shop", api=service(route("shop.localhost", "/api", strip=True)))))
    lines = [line.strip() for line in text.splitlines()]
    assert "log stdout len 4096 format raw local0" in lines
    assert "log global" in lines and "option dontlognull" in lines
    assert [line for line in lines if line.startswith("log-format '{\"time\":")]
    path_var = lines.index("http-request set-var(txn.path) path")
    assert path_var < next(i for i, line in enumerate(lines) if "replace-path" in line)


def test_x_forwarded_for_is_the_connections_address_never_the_clients():
    lines = [line.strip() for line in rendered(build(app("shop", web=service(route("shop.localhost"))))).splitlines()]
    assert "http-request set-header X-Forwarded-For %[src]" in lines
    assert "http-request del-header Forwarded" in lines
    assert not [line for line in lines if "forwardfor" in line]  # option forwardfor appends to what came


def backend_rules(max_body: int) -> list[str]:
    text = rendered(build(app("shop", web=service(route("shop.localhost"), max_body=max_body))))
    backend = text[text.index("backend be_shop_web"):]
    return [line.strip() for line in backend.splitlines() if line.strip().startswith("http-request")]


REFUSE_64K = ('http-request deny status 413 content-type text/plain string "request body over 64 KiB (max_body of '
              'web)\\n" hdr X-Request-ID %[var(txn.request_id)] if { req.body_size gt 65536 }')


def test_a_backend_refuses_long_bodies_from_their_length_then_waits_and_counts_chunked_ones():
    assert backend_rules(64 * 1024) == [
        REFUSE_64K,
        "http-request wait-for-body time 10s",
        REFUSE_64K,
        'http-request deny status 411 content-type text/plain string "a request body over 14 KiB needs a '
        'Content-Length\\n" hdr X-Request-ID %[var(txn.request_id)] if !{ req.hdr(content-length) -m found } '
        '{ req.body_len ge 14336 }',
        "http-request set-header X-Flotilla-Backend be_shop_web",
    ]


def test_a_max_body_within_one_buffer_is_counted_for_chunked_bodies_too():
    rules = backend_rules(1000)
    assert [r for r in rules if "status 411" in r] == []
    assert rules.count('http-request deny status 413 content-type text/plain string "request body over 1000 bytes '
                       '(max_body of web)\\n" hdr X-Request-ID %[var(txn.request_id)] if '
                       '{ req.body_size gt 1000 }') == 2


def test_no_routes_at_all_renders_only_global_and_defaults():
    text = rendered(build(app("quiet", db=service())))
    assert re.search(r"^(frontend|backend) ", text, re.MULTILINE) is None
    assert "stats socket" in text


def test_a_socket_path_with_spaces_is_quoted(tmp_path):
    text = render_config(build(), runtime_socket="/tmp/a dir/it's.sock")
    assert "stats socket '/tmp/a dir/it'\\''s.sock' mode 600" in text


# -- what the spec lets through is what the text says ----------------------------------------------

# Every Unicode category, lone surrogates and what breaks config files. That haproxy -c loads what
# passes is in tests/abuse/test_spec_fuzz.py, which draws whole specs.
_TRICKY = st.sampled_from(["\x00", "\ud800", "\r", "\n", " ", "#", "?", "'", '"', "\\", "%", "%4a", "$", "é"])
_path_text = st.lists(st.text(st.characters(), max_size=3) | st.characters(categories=["Cs"]) | _TRICKY
                      | st.sampled_from(["api", "v1", "/", "-", "~", "(", ")", "*", "@"]), max_size=5).map("".join)


@settings(max_examples=200, deadline=None)
@given(paths=st.lists(_path_text.map("/{}".format), min_size=1, max_size=4), strip=st.booleans(),
       wildcard=st.booleans())
def test_any_path_the_spec_allows_renders_as_written_in_ascii(paths, strip, wildcard):
    host = "*.shop.example" if wildcard else "shop.localhost"
    try:
        spec = spec_from_dict({"app": "shop", "services": {"web": {"image": "img:1", "port": 8000, "routes": [
            {"host": host, "path": p, "strip_prefix": strip} for p in paths]}}})
    except SpecError:
        return
    config = build(spec)
    text = rendered(config)
    assert text.isascii()
    lines = [line.strip() for line in text.splitlines()]
    for number, routed in enumerate(config.frontends[0].routes):
        acl = next((line for line in lines if line.startswith(f"acl r{number}_path path -m str ")), None)
        assert routed.path == "/" or shlex.split(acl)[-1] == routed.path  # HAProxy quotes as a shell does


# -- reading Runtime API answers (pure parsing; the live API is in tests/integration) ------------

SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be_shop_web 1 ready-1 10.0.0.1 2 0 1 1 33 1 0 2 0 0 0 0 - 8000 - 0 0 - - 0
3 be_shop_web 2 disabled-2 10.0.0.2 0 5 1 1 33 1 0 0 8 0 0 0 - 8000 - 0 0 - - 0
3 be_shop_web 3 enabled-later-3 10.0.0.3 2 4 1 1 33 1 0 0 8 0 0 0 - 8000 - 0 0 - - 0
3 be_shop_web 4 draining-4 fd00::4 2 8 1 1 33 1 0 0 8 0 0 0 - 8001 - 0 0 - - 0
3 be_shop_web 5 added-5 10.0.0.5 0 1 1 1 0 1 0 0 0 0 0 0 - 8000 - 0 0 - - 0
"""  # noqa: E501 - HAProxy's `show servers state` answer, verbatim


def test_servers_state_admin_bits_are_read_as_haproxy_means_them():
    from flotilla.gateway.runtime import parse_servers_state

    states = parse_servers_state(SERVERS_STATE)
    assert {name: (s["admin"], s["operational"]) for name, s in states.items()} == {
        "ready-1": ("ready", "up"),
        "disabled-2": ("maint", "down"),  # `disabled` in the config: CMAINT | FMAINT
        "enabled-later-3": ("ready", "up"),  # CMAINT stays set after `state ready`
        "draining-4": ("drain", "up"),
        "added-5": ("maint", "down"),  # `add server` starts in maintenance
    }
    assert (states["draining-4"]["address"], states["draining-4"]["port"]) == ("fd00::4", 8001)


def test_stat_csv_rows_are_typed():
    from flotilla.gateway.runtime import parse_stat_csv

    text = ("# pxname,svname,qcur,scur,stot,status,type,rate,hrsp_5xx,req_tot,rtime,ttime,\n"
            "fe_127.0.0.1_8080,FRONTEND,,3,40,OPEN,0,2,1,40,,,\n"
            "be_shop_web,BACKEND,1,3,38,UP,1,2,1,38,12,15,\n"
            "be_shop_web,web-1,0,2,20,no check,2,1,0,,11,14,\n")
    rows = parse_stat_csv(text)
    assert [(r.kind, r.scur, r.qcur, r.req_tot, r.stot) for r in rows] == [
        ("frontend", 3, 0, 40, 40), ("backend", 3, 1, 38, 38), ("server", 2, 0, 0, 20)]
    assert (rows[1].rtime, rows[1].ttime, rows[1].hrsp_5xx, rows[2].status) == (12, 15, 1, "no check")
    assert parse_stat_csv("") == []


# -- the activator (scale from zero) ------------------------------------------------------------

ACTIVATOR_SOCKET = "/run/flotilla-activator/abc/activator.sock"


def zero_app():
    scaled = ServiceSpec(image="img:1", port=8000, routes=(route("z.test"),),
                         autoscale=AutoscaleSpec(min=0, max=3, target=AutoscaleTarget(concurrency=2)))
    return app("shop", web=scaled, always=service(route("a.test")), inner=service())


def backend_text(text: str, name: str) -> str:
    return text.split(f"backend {name}\n", 1)[1].split("\n\n", 1)[0]


def test_a_service_that_may_scale_to_zero_has_the_activator_on_its_unix_socket_disabled_until_held():
    config = build_gateway_config({"shop": zero_app()}, {}, activator=ACTIVATOR_SOCKET)
    text = rendered(config)
    line = f"server activator unix@{ACTIVATOR_SOCKET} maxconn 64"
    assert f"{line} disabled" in backend_text(text, "be_shop_web")
    assert "activator" not in backend_text(text, "be_shop_always").replace("Flotilla's activator", "")
    assert "be_shop_inner" not in text, "an internal service has no backend, so no activator either"
    assert "127.0.0.1" not in backend_text(text, "be_shop_web"), "no loopback port another user could bind"
    held = rendered(build_gateway_config({"shop": zero_app()}, {}, activator=ACTIVATOR_SOCKET,
                                         held={("shop", "web")}))
    assert f"{line}\n" in backend_text(held, "be_shop_web") + "\n"


def test_without_an_activator_no_backend_names_one():
    text = rendered(build_gateway_config({"shop": zero_app()}, {}, held={("shop", "web")}))
    assert "server activator" not in text
