"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright, against a real daemon,
Docker and HAProxy.

Why it exists: issue 19's acceptance. What a unit test of the HTML cannot show:
that the page fills itself from the event stream and stays live without a
reload (scale, a killed replica replaced, traffic on the chart), that the
Content-Security-Policy leaves nothing broken (no console error), that a
replica's log line with markup in it stays text, and that without the login
link nothing answers. Cheap on purpose: one app, three replicas, one browser
for the module. Screenshots go to build/artifacts/dashboard/ (the path is
printed).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, REPO, Flotilla, tear_down
from tests.support.cli import ps
from tests.support.load import shop_traffic
from tests.support.ports import free_port

pytestmark = pytest.mark.docker
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("FLOTILLA_ARTIFACTS", REPO / "build" / "artifacts")) / "dashboard"
WAIT_MS = 30_000  # what the page gets for a change to show (a loaded 2-core machine)
MARKUP = "<script>window.__owned=1</script><b>bold</b>"
SECRET = f"s3cret-{os.urandom(6).hex()}"


def spec(app: str, port: int) -> str:
    return f"""\
app: {app}
gateway: {{listen: "127.0.0.1:{port}"}}
services:
  web:
    image: shop-catalog:1
    port: 8000
    replicas: 2
    health: {{path: /healthz, interval: 1s, timeout: 500ms}}
    secrets: {{API_TOKEN: api-token}}
    routes:
      - {{host: shop.localhost, path: /}}
  noisy:
    image: {BASE_IMAGE}
    command: ["python3", "-c", "print('{MARKUP}'); raise SystemExit(3)"]
"""


@pytest.fixture(scope="module")
def playwright_browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install '.[test]' installs playwright")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing; scripts/setup.sh installs Debian's chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory, docker_client):
    """One daemon and one app for the module: web (2 replicas, routed) and a service that crash-loops."""
    fl = Flotilla(tmp_path_factory.mktemp("home"))
    app, port = f"d{os.urandom(4).hex()}", free_port()
    fl.apps.add(app)
    try:
        fl.run("secrets", "set", app, "api-token", input_text=SECRET)
        fl.run("up", "-d", "-f", str(fl.write_spec(tmp_path_factory.mktemp("spec"), spec(app, port))))
        _wait(lambda: sum(r["service"] == "web" and r["healthy"] for r in ps(fl, app)) == 2, "two healthy web")
        yield fl, app, port
    finally:
        tear_down(fl, docker_client)


@pytest.fixture(scope="module")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture
def page(playwright_browser, shop):
    """A logged-in tab (through the one-time link), recording console errors; none may occur."""
    fl, _, _ = shop
    context = playwright_browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(fl.json("dashboard")["url"])
    tab.wait_for_selector("#link.ok", timeout=WAIT_MS)
    tab.evaluate("window.__loaded = 1")  # gone if the page ever reloads
    yield tab
    assert tab.evaluate("window.__loaded") == 1, "the page reloaded"
    context.close()
    assert not errors, f"console errors: {errors}"


def _wait(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _row(page, app: str, service: str):
    return page.locator(f'article[data-app="{app}"] tr[data-service="{service}"]')


def test_live_view_lists_services_and_replicas(page, shop, artifacts):
    fl, app, _ = shop
    web = _row(page, app, "web")
    web.locator(".ready", has_text="2").wait_for(timeout=WAIT_MS)
    assert web.locator(".badge").first.inner_text() == "up"
    assert "shop-catalog:1" in web.inner_text() and "public" in web.inner_text()
    rows = [r for r in ps(fl, app) if r["service"] == "web"]
    names, names_full = {r["replica"] for r in rows}, {r["name"] for r in rows}
    for name in names:
        page.locator("#replicas td.name", has_text=name).wait_for(timeout=WAIT_MS)
    uptime = page.locator(f'#replicas tr[data-replica="{next(iter(names_full))}"] td.uptime').inner_text()
    assert re.fullmatch(r"\d+ (s|min \d+ s)", uptime), uptime
    assert page.locator("#routes").inner_text().count("shop.localhost") == 1
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 480, "height": 900})
    page.screenshot(path=str(artifacts / "dashboard-narrow.png"), full_page=True)


def test_markup_from_an_app_is_shown_as_text(page, shop):
    _, app, _ = shop
    event = page.locator("#events li.kind-crash").first
    event.wait_for(timeout=WAIT_MS)
    assert MARKUP in event.inner_text()  # the literal text, tags and all
    assert page.locator("#events b", has_text="bold").count() == 0
    assert page.evaluate("window.__owned") is None


def test_secrets_never_reach_the_page(page, shop):
    _, app, _ = shop
    _row(page, app, "web").wait_for(timeout=WAIT_MS)
    state = page.context.request.get(page.url.split("/dashboard/")[0] + "/dashboard/state.json")
    assert state.status == 200 and app in state.text()
    assert SECRET not in state.text() and SECRET not in page.content()


def test_scale_from_the_page(page, shop, artifacts):
    fl, app, _ = shop
    form = _row(page, app, "web").locator("form.scale")
    form.locator("input[name=replicas]").fill("3")
    form.locator("button").click()
    page.locator("#notice .badge.ok").wait_for(timeout=WAIT_MS)
    _row(page, app, "web").locator(".ready", has_text="3").wait_for(timeout=WAIT_MS)
    assert _row(page, app, "web").locator(".desired").inner_text() == "3"
    assert sum(r["service"] == "web" and r["healthy"] for r in ps(fl, app)) == 3  # `flotilla ps` agrees
    page.locator("#events li.kind-dashboard", has_text="web 2 -> 3, from the dashboard").wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "dashboard-scaled.png"), full_page=True)


def test_a_killed_replica_is_shown_then_replaced(page, shop, docker_client):
    fl, app, _ = shop
    victim = next(r for r in ps(fl, app) if r["service"] == "web")
    container = victim["container_id"][:12]
    page.locator(f'#replicas tr[data-container="{container}"] .badge.ok').wait_for(timeout=WAIT_MS)
    docker_client.containers.get(victim["container_id"]).kill()
    # Unhealthy, exited or gone: whichever the page caught first.
    page.wait_for_function(
        "id => { const r = document.querySelector(`#replicas tr[data-container=\"${id}\"]`);"
        " return !r || !r.querySelector('.badge.ok'); }", arg=container, timeout=WAIT_MS)
    # Its successor takes the same slot (and the same name), in a new container.
    page.locator(f'#replicas tr[data-replica="{victim["name"]}"]:not([data-container="{container}"]) .badge.ok'
                 ).wait_for(timeout=WAIT_MS)


def test_restart_from_the_page_replaces_the_replica(page, shop):
    fl, app, _ = shop
    victim = next(r for r in ps(fl, app) if r["service"] == "web" and r["healthy"])
    container = victim["container_id"][:12]
    page.locator(f'#replicas tr[data-container="{container}"] button').click()
    page.locator("#notice .badge.ok", has_text=f"restarted {victim['replica']}").wait_for(timeout=WAIT_MS)
    page.locator(f'#replicas tr[data-replica="{victim["name"]}"]:not([data-container="{container}"]) .badge.ok'
                 ).wait_for(timeout=WAIT_MS)
    assert victim["container_id"] not in {r["container_id"] for r in ps(fl, app)}
    page.locator("#events li.kind-dashboard", has_text=f"restarted {victim['replica']}, from the dashboard"
                 ).wait_for(timeout=WAIT_MS)


def test_traffic_moves_the_request_rate_chart(page, shop, artifacts):
    fl, app, port = shop
    chart = page.locator(f'.chart-block[data-key="{app}/web"] .chart-requests')
    chart.wait_for(timeout=WAIT_MS)
    latency = page.locator(f'.chart-block[data-key="{app}/web"] .chart-latency')
    with shop_traffic(port, rate=40):
        page.wait_for_function("el => Number(el.dataset.max) >= 10", arg=chart.element_handle(), timeout=WAIT_MS)
        page.wait_for_function("el => Number(el.dataset.points) > 0", arg=latency.element_handle(),
                               timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "dashboard-traffic.png"), full_page=True)


def test_nothing_answers_without_the_login(playwright_browser, shop):
    fl, app, _ = shop
    link = fl.json("dashboard")["url"]
    base = link.split("/dashboard/")[0]
    context = playwright_browser.new_context()
    try:
        for path in ("/dashboard/", "/dashboard/state.json", "/dashboard/stream",
                     "/dashboard/static/dashboard.js"):
            assert context.request.get(base + path).status == 401, path
        assert context.request.post(f"{base}/dashboard/apps/{app}/scale",
                                    form={"service": "web", "replicas": "0"}).status == 401
        assert context.new_page().goto(link).status == 200  # logs in (303 to the page)
        assert context.new_page().goto(link).status == 403  # the link works once
    finally:
        context.close()


def test_a_cross_site_post_is_refused(page, playwright_browser, shop):
    """A page on another origin posts to the scale action: no cookie goes with it (SameSite=Strict), and
    with the cookie but a foreign Origin, or without the CSRF token, the dashboard refuses too."""
    fl, app, _ = shop
    desired = _row(page, app, "web").locator(".desired").inner_text()
    action = page.url.split("/dashboard/")[0] + f"/dashboard/apps/{app}/scale"
    with _attacker_page(action) as attacker_url:
        other = page.context.new_page()
        other.goto(attacker_url)
        with other.expect_response(action) as answer:
            other.locator("button").click()
        assert answer.value.status in (401, 403)
        other.close()
    request = page.context.request
    evil = request.post(action, form={"service": "web", "replicas": "1"},
                        headers={"Origin": "http://evil.example", "X-CSRF-Token": "guess"})
    no_token = request.post(action, form={"service": "web", "replicas": "1"},
                            headers={"Origin": page.url.split("/dashboard/")[0]})
    assert (evil.status, no_token.status) == (403, 403)
    time.sleep(2)  # not a synchronisation: time for a wrongly accepted scale to show
    assert _row(page, app, "web").locator(".desired").inner_text() == desired
    assert {e["kind"] for e in fl.json("events", app)} & {"dashboard"} <= {"dashboard"}


class _attacker_page:  # noqa: N801 - used as a context manager, named for what it serves
    """A page on another loopback origin whose form posts to ``action`` (what a malicious site would do)."""

    def __init__(self, action: str) -> None:
        body = (f'<form method="post" action="{action}"><input name="service" value="web">'
                '<input name="replicas" value="1"><button>go</button></form>').encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's name
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.2:{self._server.server_address[1]}/"

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
