"""The dashboard, in-process: its login, sessions and CSRF gate, its escaping, and the numbers it charts.

Pure: the ASGI app is called with a scope and in-memory receive/send (the
helpers of test_api_requests), its daemon parts are small stand-ins, the
clock is a variable. The browser half is tests/browser/test_dashboard.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flotilla.daemon.api import BearerToken
from flotilla.daemon.store import Event
from flotilla.errors import NotFoundError
from flotilla.gateway.metrics import Sample
from flotilla.spec import parse_spec
from flotilla.web import Dashboard, views
from flotilla.web.latency import Percentiles, percentile
from flotilla.web.sessions import LOGIN_TTL, Sessions, csrf_ok
from flotilla.web.state import EventFeed, Reader, traffic_series
from tests.unit.test_api_requests import request

ORIGIN = "http://127.0.0.1:4000"
MARKUP = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Apps:
    def require(self, app):
        if app != "shop":
            raise NotFoundError(f"no app named {app!r}")
        return SimpleNamespace(services={"web": SimpleNamespace(replicas=2)})


class Operations:
    def __init__(self) -> None:
        self.scaled: list = []

    def scale(self, app, counts):
        self.scaled.append((app, counts))


class Events:
    def __init__(self) -> None:
        self.recorded: list = []

    def record(self, app, kind, subject, message):
        self.recorded.append((app, kind, subject, message))


@pytest.fixture
def dash():
    parts = SimpleNamespace(apps=Apps(), status=None, history=None, metrics=None, operations=Operations(),
                            events=Events(), snapshots=None, traffic=None, engine=None, wakeups=None,
                            access_log=None)
    board = Dashboard(parts, base_url="http://127.0.0.1:4000", clock=Clock())
    board.parts = parts
    return board


def logged_in(dash) -> tuple[str, str]:
    """A session cookie header and its CSRF token, through the one-time login URL."""
    token = dash.login_url().split("token=")[1]
    answer = request(dash, "GET", f"/dashboard/login?token={token}")
    cookie = answer.headers[b"set-cookie"].decode()
    session = dash.sessions.find(cookie.split(";")[0].split("=", 1)[1])
    return cookie.split(";")[0], session.csrf


def scale(dash, headers: dict):
    return request(dash, "POST", "/dashboard/apps/shop/scale", body=b"service=web&replicas=3",
                   headers={"content-type": "application/x-www-form-urlencoded", "host": "127.0.0.1:4000",
                            "content-length": "22", **headers})


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard", "/dashboard/state.json", "/dashboard/stream",
                                  "/dashboard/static/dashboard.js", "/dashboard/apps/shop/scale"])
def test_nothing_answers_without_a_session(dash, path):
    answer = request(dash, "GET", path)
    assert answer.status == 401 and b"flotilla dashboard" in answer.body
    assert answer.headers[b"content-security-policy"].startswith(b"default-src 'none'; script-src 'self'")


def test_a_login_link_works_once_and_gives_a_strict_httponly_cookie(dash):
    token = dash.login_url().split("token=")[1]
    first = request(dash, "GET", f"/dashboard/login?token={token}")
    assert first.status == 303 and first.headers[b"location"] == b"/dashboard/"
    cookie = first.headers[b"set-cookie"].decode().lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert request(dash, "GET", f"/dashboard/login?token={token}").status == 403
    assert request(dash, "GET", "/dashboard/login?token=guessed").status == 403


def test_a_session_opens_the_page_with_its_csrf_token(dash):
    cookie, csrf = logged_in(dash)
    page = request(dash, "GET", "/dashboard/", headers={"cookie": cookie})
    assert page.status == 200 and csrf.encode() in page.body
    assert b"<script>" not in page.body.replace(b"<script src=", b"")  # no inline script


def test_login_links_and_sessions_expire():
    clock = Clock()
    sessions = Sessions(clock=clock)
    late = sessions.new_login()
    clock.now += LOGIN_TTL + 1
    assert sessions.log_in(late) is None
    session = sessions.log_in(sessions.new_login())
    assert sessions.find(session.id) == session
    clock.now += 13 * 3600
    assert sessions.find(session.id) is None
    assert not csrf_ok(session, None) and not csrf_ok(session, "x") and csrf_ok(session, session.csrf)


# -- actions: the cross-site gate ------------------------------------------------------------


CSRF = object()  # stands for the session's own CSRF token


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example", "x-csrf-token": CSRF},  # another site's page (it cannot know the token)
    {"x-csrf-token": CSRF},  # no Origin at all
    {"origin": ORIGIN, "x-csrf-token": CSRF, "sec-fetch-site": "cross-site"},  # the browser's own word
    {"origin": ORIGIN, "x-csrf-token": "guess"},  # a wrong token
    {"origin": ORIGIN},  # no token
])
def test_an_action_from_another_site_is_refused_and_does_nothing(dash, headers):
    cookie, csrf = logged_in(dash)
    answer = scale(dash, {"cookie": cookie, **{k: csrf if v is CSRF else v for k, v in headers.items()}})
    assert answer.status == 403 and answer.body.startswith(b"Refused")
    assert dash.parts.operations.scaled == [] and dash.parts.events.recorded == []


def test_an_action_from_the_page_scales_and_says_it_came_from_the_dashboard(dash):
    cookie, csrf = logged_in(dash)
    answer = scale(dash, {"cookie": cookie, "origin": ORIGIN, "x-csrf-token": csrf, "sec-fetch-site": "same-origin"})
    assert answer.status == 200 and b"badge ok" in answer.body
    assert dash.parts.operations.scaled == [("shop", {"web": 3})]
    assert dash.parts.events.recorded == [("shop", "dashboard", "web", "web 2 -> 3, from the dashboard")]


def test_a_session_opens_only_the_dashboard_on_the_api_listener(dash):
    cookie, _ = logged_in(dash)
    scope = {"type": "http", "path": "/v1/apps", "raw_path": b"/v1/apps",
             "headers": [(b"cookie", cookie.encode())], "query_string": b""}
    assert not dash.admits(scope)
    assert dash.admits({**scope, "path": "/dashboard/", "raw_path": b"/dashboard/"})
    gate = BearerToken(dash, token="secret-token", admits=dash.admits)
    assert request(gate, "GET", "/v1/apps", headers={"cookie": cookie}).status == 401
    assert request(gate, "GET", "/dashboard/", headers={"cookie": cookie}).status == 200
    assert request(gate, "GET", "/dashboard/").status == 401  # the dashboard's own refusal


# -- escaping ----------------------------------------------------------------------------------


def test_every_value_from_an_app_is_escaped():
    service = {"name": MARKUP, "desired": 1, "ready": 1, "running": 1, "image": MARKUP, "public": True,
               "cache": None, "autoscale": {"min": 1, "max": 3, "reason": MARKUP}}
    replica = {"service": MARKUP, "replica": MARKUP, "name": MARKUP, "state": MARKUP, "healthy": False,
               "health": MARKUP, "gateway": MARKUP, "current": True, "container_id": MARKUP}
    app = {"app": MARKUP, "services": [service], "replicas": [replica], "caches": [], "converged": True,
           "routes": [{"service": MARKUP, "public": True, "listen": MARKUP, "host": MARKUP, "path": MARKUP}],
           "error": MARKUP}
    event = {"id": 1, "app": MARKUP, "time": 0.0, "kind": MARKUP, "subject": MARKUP, "message": MARKUP}
    for html in (views.services([app]), views.replicas([app], now=0.0), views.routes([app]), views.events([event]),
                 views.notice(MARKUP, ok=False), views.page(csrf=MARKUP)):
        assert "<script>alert" not in html and "<img" not in html and MARKUP not in html, html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img" in views.events([event])


# -- what the charts draw --------------------------------------------------------------------


def test_traffic_series_are_rates_per_second_and_survive_a_counter_reset():
    samples = (Sample(10.0, 100, 1, 0, 0, 2.0), Sample(11.0, 150, 2, 1, 5, 3.0), Sample(13.0, 20, 0, 0, 0, 1.0))
    t, rps, in_flight, queued, errors_per_s = traffic_series(samples, offset=1000.0)
    assert t == [1011.0, 1013.0] and rps == [50.0, 0.0] and in_flight == [2, 0] and queued == [1, 0]
    assert errors_per_s == [5.0, 0.0]


def test_percentiles_per_second_once_the_second_is_over():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0 and percentile([1.0] * 19 + [100.0], 0.95) == 1.0
    window = Percentiles(seconds=60)
    entries = [{"app": "shop", "service": "web", "time": 100.2 + i / 100, "ms": {"total": i}} for i in range(20)]
    window.add(entries, now=101.0)
    assert window.series("shop", "web") == [[], [], []]  # second 100 is not settled yet
    window.add([{"app": "shop", "service": "web", "time": 100.9, "ms": {"total": 100}},
                {"app": None, "service": None, "time": 100.5, "ms": {"total": 7}}], now=103.0)
    assert window.series("shop", "web") == [[100], [10.0], [19.0]]
    window.add([], now=300.0)
    assert window.series("shop", "web") == [[], [], []]  # out of the window


def test_restart_drains_then_stops_the_replica_and_wakes_the_reconciler(dash):
    calls: list = []
    replica = SimpleNamespace(name="shop-web-1-abc123", replica="web-1", service="web", container_id="c1")
    dash.actions = dash.actions.__class__(
        apps=Apps(), operations=Operations(), events=dash.parts.events,
        snapshots=SimpleNamespace(latest=lambda spec: SimpleNamespace(replicas=(replica,))),
        traffic=SimpleNamespace(drain=lambda app, r: calls.append(("drain", app, r.name))),
        engine=SimpleNamespace(remove_replica=lambda cid, graceful: calls.append(("remove", cid, graceful))),
        wakeups=SimpleNamespace(trigger=lambda app: calls.append(("wake", app))))
    cookie, csrf = logged_in(dash)
    answer = request(dash, "POST", "/dashboard/apps/shop/replicas/shop-web-1-abc123/restart",
                     headers={"cookie": cookie, "origin": ORIGIN, "host": "127.0.0.1:4000", "x-csrf-token": csrf})
    assert answer.status == 200 and b"restarted web-1" in answer.body
    assert calls == [("drain", "shop", "shop-web-1-abc123"), ("remove", "c1", True), ("wake", "shop")]
    assert dash.parts.events.recorded == [("shop", "dashboard", "web", "restarted web-1, from the dashboard")]
    gone = request(dash, "POST", "/dashboard/apps/shop/replicas/nope/restart",
                   headers={"cookie": cookie, "origin": ORIGIN, "host": "127.0.0.1:4000", "x-csrf-token": csrf})
    assert b"badge bad" in gone.body and b"no replica" in gone.body


def test_the_command_explains_itself_with_an_example():
    from click.testing import CliRunner

    from flotilla.cli.main import cli

    shown = CliRunner().invoke(cli, ["dashboard", "--help"])
    assert shown.exit_code == 0 and "Example:" in shown.output and "flotilla dashboard --open" in shown.output
    assert "--json" in shown.output and "60 seconds" in shown.output
    assert "dashboard" in CliRunner().invoke(cli, ["--help"]).output
    assert "--dashboard-listen" in CliRunner().invoke(cli, ["daemon", "--help"]).output


def test_the_reader_shares_one_picture_a_second_and_draws_scaling_decisions():
    spec = parse_spec("app: shop\nservices:\n  web:\n    image: shop-web:1\n    port: 8000\n"
                      "    env: {API_KEY: hunter2}\n    routes: [{host: shop.localhost}]\n",
                      filename="f.yaml", environ={})
    reads: list[str] = []

    def app_status(app):
        reads.append(app)
        return {"app": app, "services": [{"name": "web", "desired": 3, "ready": 2, "running": 3, "cache": None}],
                "replicas": [], "caches": [], "converged": False}

    events = [Event(1, "shop", 5.0, "autoscale", "web", "in flight 9.0 > 3.0 x 2: 2 -> 3"),
              Event(2, "shop", 6.0, "create", "web-3", "started"), Event(3, "shop", 7.0, "scale", "api", "api 1 -> 2")]
    clock = Clock()
    reader = Reader(apps=SimpleNamespace(active=lambda: [spec]), status=SimpleNamespace(app_status=app_status),
                    history=SimpleNamespace(events=lambda app, since, limit: [e for e in events if e.id > since]),
                    metrics=SimpleNamespace(samples=lambda app, service: ()), clock=clock, monotonic=lambda: 0.0)
    first = reader.picture()
    assert reader.picture() is first and reads == ["shop"]  # every tab within the second gets the same one
    clock.now += 1.0
    second = reader.picture()
    chart = second.charts["shop/web"]
    assert chart["decisions"] == [{"time": 5.0, "kind": "autoscale", "message": "in flight 9.0 > 3.0 x 2: 2 -> 3"}]
    assert chart["replicas"] == [[1000.0, 1001.0], [3, 3], [2, 2]] and chart["public"] is True
    assert second.apps[0]["services"][0]["image"] == "shop-web:1"
    assert "hunter2" not in repr(second)  # the spec's environment never reaches the page
    assert [e["id"] for e in second.events] == [3, 2, 1]  # newest first


def test_uptime_is_counted_from_the_replicas_latest_start():
    assert [views.duration(s) for s in (0, 59, 61, 3600 * 3 + 1200, 86400 * 2 + 3600 * 4)] == [
        "0 s", "59 s", "1 min 1 s", "3 h 20 min", "2 d 4 h"]
    events = [Event(1, "shop", 10.0, "create", "web-1", "started"), Event(2, "shop", 50.0, "create", "web-1", "again"),
              Event(3, "shop", 60.0, "create", "web-2", "started")]
    store = SimpleNamespace(calls=[], events=lambda app, since, limit: store.calls.append(since) or
                            [e for e in events if e.id > since])
    feed = EventFeed(store)
    assert [e["id"] for e in feed.read("shop")] == [1, 2, 3] and feed.started("shop", "web-1") == 50.0
    events.append(Event(4, "shop", 70.0, "remove", "web-2", "removed"))
    assert [e["id"] for e in feed.read("shop")] == [1, 2, 3, 4] and store.calls == [0, 3]  # only new ones
    running = {"state": "running", "started": 50.0, "replica": "web-1", "name": "n", "healthy": True,
               "health": "", "gateway": None, "current": True, "container_id": "c"}
    assert "1 min 40 s" in views.replicas([{"app": "shop", "replicas": [running]}], now=150.0)
    feed.keep(set())
    assert feed.started("shop", "web-1") is None


def test_a_pinned_image_is_shown_with_its_digest():
    spec = parse_spec("app: shop\nservices:\n  web:\n    image: shop-web:1\n    port: 8000\n",
                      filename="f.yaml", environ={})
    pinned = "registry.example/shop-web:1@sha256:3f4a1b2c5d6e"

    def app_status(app):
        return {"app": app, "services": [{"name": "web", "desired": 1, "ready": 1, "running": 1, "cache": None,
                                          "image": pinned}], "replicas": [], "caches": [], "converged": True}

    reader = Reader(apps=SimpleNamespace(active=lambda: [spec]), status=SimpleNamespace(app_status=app_status),
                    history=SimpleNamespace(events=lambda app, since, limit: []),
                    metrics=SimpleNamespace(samples=lambda app, service: ()), clock=Clock(), monotonic=lambda: 0.0)
    assert reader.picture().apps[0]["services"][0]["image"] == pinned
