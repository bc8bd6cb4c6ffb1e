"""The gateway end to end: real HAProxy in front of real containers, through the CLI."""

from __future__ import annotations

import http.client
import json
import pwd
import select
import signal
import socket
import subprocess
import time

import pytest

from tests.support.cli import in_container, ps
from tests.support.load import shop_traffic, wait_for_answers
from tests.support.ports import free_port
from tests.support.specs import routed_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.docker


def get(port: int, path: str, *, host: str, headers: dict | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture
def routed_app(flotilla, app_name, tmp_path):
    port = free_port()
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, routed_spec(app_name, port))), "--timeout", "90")
    return app_name, port


def haproxy_masters(flotilla) -> list[int]:
    pid_file = flotilla.home / "gateway" / "haproxy.pid"
    return [int(pid_file.read_text().split()[0])] if pid_file.exists() else []


def test_routes_by_host_and_path_and_strips_prefixes(flotilla, routed_app):
    app, port = routed_app
    status, body, _ = get(port, "/debug/request?x=1", host="shop.localhost")
    seen = json.loads(body)
    assert status == 200 and seen["service"] == "web" and seen["path"] == "/debug/request?x=1"
    status, body, _ = get(port, "/api/debug/request?q=2", host="eu.shop.example:8080")
    assert status == 200 and json.loads(body)["path"] == "/debug/request?q=2"
    status, body, _ = get(port, "/apix", host="eu.shop.example")
    assert status == 404 and body.strip() == "no route for eu.shop.example/apix"
    status, body, _ = get(port, "/", host="unknown.example")
    assert status == 404 and body.strip() == "no route for unknown.example/"
    served = {json.loads(get(port, "/whoami", host="shop.localhost")[1])["replica"] for _ in range(20)}
    assert served == {"web-1", "web-2"}
    table = flotilla.json("routes", app)
    assert [(r["host"], r["path"], r["service"], r["replicas_in_gateway"]) for r in table] == [
        ("shop.localhost", "/", "web", 2),
        ("*.shop.example", "/api", "web", 2),
    ]
    assert {r["replica"]: r["gateway"] for r in ps(flotilla, app)} == {
        "internal-1": None, "web-1": "ready", "web-2": "ready",
    }


def test_forwarding_headers_reach_the_service(routed_app):
    _, port = routed_app
    forged = {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"}
    seen = json.loads(get(port, "/debug/request", host="shop.localhost", headers=forged)[1])["headers"]
    headers = {k.lower(): v for k, v in seen.items()}
    assert headers["x-forwarded-for"] == "127.0.0.1" and "forwarded" not in headers  # the connection's, only
    assert headers["x-forwarded-proto"] == "http"
    assert len(headers["x-request-id"]) == 36
    given = json.loads(get(port, "/debug/request", host="shop.localhost", headers={"X-Request-ID": "abc-123"})[1])
    assert {k.lower(): v for k, v in given["headers"].items()}["x-request-id"] == "abc-123"


def gateway_log(flotilla, *args: str) -> list[dict]:
    return [json.loads(line) for line in flotilla.run("logs", "--gateway", *args, "--json").stdout.splitlines()]


def test_the_gateway_logs_each_request_of_an_app_without_its_secrets(flotilla, routed_app):
    app, port = routed_app
    secrets = {"Authorization": "Bearer secret-token-91", "Cookie": "sid=cookie-secret-91", "X-Request-ID": "gw-1"}
    assert get(port, "/debug/request?token=query-secret-91", host="shop.localhost", headers=secrets)[0] == 200
    entry = wait_for(lambda: next((e for e in gateway_log(flotilla, app, "--tail", "20") if e["request_id"] == "gw-1"),
                                  None), timeout=10, interval=0.2, what="the request in the gateway's log")
    assert (entry["app"], entry["service"], entry["status"], entry["method"], entry["path"]) == (
        app, "web", 200, "GET", "/debug/request")
    assert entry["ms"]["total"] >= 0 and entry["server"].startswith("slot")
    text = (flotilla.home / "gateway" / "access.log").read_text()
    assert not [s for s in ("secret-token-91", "cookie-secret-91", "query-secret-91", "Bearer") if s in text]
    last = flotilla.run("logs", "--gateway", app, "web", "--tail", "1").stdout
    assert f"{app}/web" in last and " 200 GET /debug/request " in last


def test_the_gateway_log_can_be_followed(flotilla, routed_app):
    app, port = routed_app
    follow = subprocess.Popen([*flotilla.command_prefix(), "logs", "--gateway", app, "-f", "--tail", "0", "--json"],
                              env=flotilla.env, stdout=subprocess.PIPE, text=True)
    try:
        deadline, line = time.monotonic() + 15, ""
        while not line and time.monotonic() < deadline:
            get(port, "/whoami", host="shop.localhost", headers={"X-Request-ID": "gw-followed"})
            if select.select([follow.stdout], [], [], 0.5)[0]:
                line = follow.stdout.readline()
        assert json.loads(line)["request_id"] == "gw-followed"
    finally:
        follow.terminate()
        follow.wait(10)


def test_an_internal_service_is_unreachable_through_the_gateway(routed_app):
    _, port = routed_app
    for host in ("internal", "internal:8000", "shop.localhost", "x.shop.example", "localhost", "127.0.0.1"):
        for path in ("/", "/cart/ann", "/whoami", "/api/whoami", "/internal/whoami"):
            status, body, headers = get(port, path, host=host)
            assert not headers.get("X-Served-By", "").startswith("internal/"), (host, path, body)
            assert '"internal"' not in body, (host, path, body)


def test_metrics_count_requests_per_service(flotilla, routed_app):
    app, port = routed_app
    for _ in range(30):
        get(port, "/items", host="shop.localhost")

    def web_metrics() -> dict | None:  # the daemon samples HAProxy's counters every second
        web = next(m for m in flotilla.json("metrics", app) if m["service"] == "web")
        return web if web["requests_total"] >= 30 else None

    web = wait_for(web_metrics, timeout=15, interval=0.2, what="the 30 requests in the metrics")
    assert web["http_5xx_total"] == 0
    text = flotilla.client()._open("GET", "/metrics")[0].read().decode()
    assert f'flotilla_service_requests_total{{app="{app}",service="web"}}' in text
    assert f'flotilla_service_ready_replicas{{app="{app}",service="web"}} 2' in text


def test_a_second_app_may_not_take_a_route_or_a_busy_port(flotilla, routed_app, tmp_path):
    app, port = routed_app
    other = f"{app}x"
    flotilla.apps.add(other)
    clash = flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, routed_spec(other, port), "b.yaml")),
                         check=False)
    assert clash.returncode == 4
    assert f"route *.shop.example/api on 127.0.0.1:{port} is already served by app {app}" in clash.stderr
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        taken = flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, routed_spec(other, busy), "c.yaml")),
                             check=False)
    assert taken.returncode == 4 and f"gateway.listen 127.0.0.1:{busy} is not available" in taken.stderr
    assert other not in {a["app"] for a in flotilla.client().request("GET", "/v1/apps")["apps"]}


def test_down_of_the_last_routed_app_stops_the_gateway(flotilla, routed_app):
    app, port = routed_app
    masters = haproxy_masters(flotilla)
    assert masters
    flotilla.run("down", app)
    wait_for(lambda: not _alive(masters[0]), timeout=15, what="HAProxy to stop")
    with pytest.raises(OSError):
        get(port, "/", host="shop.localhost")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except OSError:
        return False


def haproxy_workers(flotilla) -> set[str]:
    master = haproxy_masters(flotilla)[0]
    return set(subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split())


def uid_of(pid: int | str) -> int:
    """The real uid of a process, from /proc/PID/status (``Uid: real effective saved fs``)."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Uid:")).split()[1])


def test_workers_run_as_the_gateway_user_and_a_reload_still_binds(flotilla, routed_app, tmp_path):
    app, port = routed_app
    gateway_uid = pwd.getpwnam("haproxy").pw_uid
    assert uid_of(haproxy_masters(flotilla)[0]) == 0  # the master keeps root, to bind on reloads
    assert {uid_of(pid) for pid in haproxy_workers(flotilla)} == {gateway_uid}
    other = f"{app}y"
    flotilla.apps.add(other)
    new_port = free_port()  # a new frontend: the reload must bind it after the workers dropped root
    flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, routed_spec(other, new_port), "other.yaml")),
                 "--timeout", "90")
    assert get(new_port, "/whoami", host="shop.localhost")[0] == 200
    assert get(port, "/whoami", host="shop.localhost")[0] == 200
    assert {uid_of(pid) for pid in haproxy_workers(flotilla)} == {gateway_uid}
    # the Runtime API (a root-only socket) still answers the daemon: the new app's replicas are in rotation
    assert [r["replicas_in_gateway"] for r in flotilla.json("routes", other)] == [2, 2]


def test_scaling_under_load_fails_no_request(flotilla, routed_app):
    app, port = routed_app
    workers = haproxy_workers(flotilla)
    with shop_traffic(port) as load:
        wait_for_answers(load, 200)
        flotilla.run("scale", app, "web=10", "--wait", "--timeout", "60")
        wait_for_answers(load, 200)
        flotilla.run("scale", app, "web=2", "--wait", "--timeout", "60")
        wait_for_answers(load, 200)
    result = load.stop()
    assert result.sent >= 200 * 3, result.summary()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    assert len(result.served_by) >= 3, result.served_by  # traffic reached the new replicas
    assert haproxy_workers(flotilla) == workers, "replicas must change at run time, without a reload"


def test_rolling_replacement_under_load_fails_no_request(flotilla, app_name, routed_app, tmp_path):
    app, port = routed_app
    before = {r["container_id"] for r in ps(flotilla, app)}
    changed = flotilla.write_spec(tmp_path, routed_spec(app, port, env=", COLOR: blue"), "v2.yaml")
    with shop_traffic(port) as load:
        wait_for_answers(load, 200)
        flotilla.run("up", "-f", str(changed), "--timeout", "90")
        wait_for_answers(load, 200)
    result = load.stop()
    after = {r["container_id"] for r in ps(flotilla, app) if r["service"] == "web"}
    assert not before & after
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])


def test_daemon_killed_under_load_fails_no_request_and_is_adopted(flotilla, routed_app):
    app, port = routed_app
    masters = haproxy_masters(flotilla)
    with shop_traffic(port) as load:
        wait_for_answers(load, 200)
        flotilla.kill_daemon(signal.SIGKILL)
        wait_for_answers(load, 400)  # served with no daemon at all
        flotilla.run("ps", app)  # a new daemon starts and adopts the gateway
        wait_for_answers(load, 400)
    result = load.stop()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    assert haproxy_masters(flotilla) == masters and _alive(masters[0])
    running = subprocess.run(["pgrep", "-f", f"haproxy -W -f {flotilla.home}/gateway/haproxy.cfg"],
                             capture_output=True, text=True).stdout.split()
    assert len(running) == 2, running  # one master, one worker: no second gateway


def test_route_change_reloads_without_dropping_requests(flotilla, routed_app, tmp_path):
    app, port = routed_app
    extra = routed_spec(app, port).replace(
        "      - {host: shop.localhost, path: /}\n",
        "      - {host: shop.localhost, path: /}\n      - {host: new.localhost, path: /v2, strip_prefix: true}\n",
    )
    with shop_traffic(port) as load:
        wait_for_answers(load, 200)
        flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, extra, "routes.yaml")))
        wait_for_answers(load, 300)  # through the reloaded HAProxy, while the old worker finishes
    result = load.stop()
    assert result.failed == 0, result.summary() + "\n" + "\n".join(result.failures[:10])
    status, body, _ = get(port, "/v2/whoami", host="new.localhost")
    assert status == 200 and json.loads(body)["service"] == "web"


def test_outside_host_reaches_the_gateway_but_no_container(flotilla, app_name, tmp_path, docker_client):
    from tests.support.netns import outside_host

    with outside_host() as outside:
        port = free_port(outside.host_ip)
        spec = routed_spec(app_name, port, listen_host=outside.host_ip)
        flotilla.run("up", "-f", str(flotilla.write_spec(tmp_path, spec)), "--timeout", "90")
        status, body = outside.http_get(f"http://{outside.host_ip}:{port}/whoami", host_header="shop.localhost")
        assert status == 200 and '"web"' in body
        rows = ps(flotilla, app_name)
        subnet = docker_client.networks.get(f"flotilla-{app_name}-internal").attrs["IPAM"]["Config"][0]["Subnet"]
        outside.add_route(subnet, via=outside.host_ip)
        for row in rows:
            assert not outside.tcp_connect(row["ip"], 8000), f"{row['replica']} answered from outside"
        for row in rows:
            container = docker_client.containers.get(row["container_id"])
            assert not any(container.attrs["NetworkSettings"]["Ports"].values() or [None])
        # still reachable from inside the app, so the check above is not vacuous
        web = next(r for r in rows if r["service"] == "web")
        assert '"service": "internal"' in in_container(docker_client, web["container_id"], """
import urllib.request
print(urllib.request.urlopen("http://internal:8000/whoami", timeout=2).read().decode())
""")
        flotilla.run("down", app_name)
