"""The API's answers, in-process: routes, refusals, bodies, errors, the bearer token, the worker pool.

Pure: the ASGI app is called with a scope and in-memory receive/send (no
socket, no uvicorn), its parts are small stand-ins, and the error-to-status
table is checked for every error class. What needs a real server (idle and
slow connections, oversized heads on the wire) is in tests/abuse.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from flotilla import errors
from flotilla.daemon import api as api_module
from flotilla.daemon.api import HTTP_STATUS, Api, BearerToken, Request, _decode_value, _status_of, stream_logs
from flotilla.daemon.operations import _check_counts
from flotilla.daemon.serving import MIB, BodyRefused, ClientGone, HeadLimit, read_body
from flotilla.gateway.accesslog import AccessLog
from flotilla.spec import parse_spec

# -- stand-ins for the daemon's parts ------------------------------------------------------


class Apps:
    def stored(self):
        return [SimpleNamespace(name="shop", status="active", updated=1.5)]


class Operations:
    """``submit`` raises what a test puts in ``raises``; ``scale`` waits for ``release``."""

    def __init__(self) -> None:
        self.raises: Exception | None = None
        self.release = threading.Event()
        self.scaling = 0

    def submit(self, spec, *, dry_run):
        if self.raises:
            raise self.raises
        return {"spec": spec, "dry_run": dry_run}

    def scale(self, app, counts):
        self.scaling += 1
        self.release.wait(10)
        return {"app": app, "replicas": counts}


class Status:
    def app_status(self, app):
        raise errors.NotFoundError(f"no app named {app!r}")

    def runtime_spec(self, app):
        if app != "shop":
            raise errors.NotFoundError(f"no app named {app!r}")
        return parse_spec("app: shop\nservices:\n  web: {image: x}\n  api: {image: x}\n", filename="f.yaml",
                          environ={})


def make_api(access_log: AccessLog | None = None) -> tuple[Api, Operations]:
    operations = Operations()
    return Api(apps=Apps(), operations=operations, status=Status(), history=None, engine=None,
               access_log=access_log or AccessLog(MISSING / "access.log", pipe=MISSING / "access.fifo")), operations


MISSING = Path("/nonexistent/flotilla-test")


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    reads: int  # how many times the app called receive()

    def json(self) -> dict:
        return json.loads(self.body)


def scope_of(method: str, target: str, headers: dict[str, str]) -> dict:
    path, _, query = target.partition("?")
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


async def ask(app, method: str, target: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    """One request to ``app``; the body comes in one message, then the client waits (a disconnect never comes)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        if pending:
            return pending.pop()
        await anyio.sleep_forever()

    async def send(message):
        sent.append(message)

    await app(scope_of(method, target, headers or {}), receive, send)
    return Answer(status=sent[0]["status"], headers=dict(sent[0]["headers"]),
                  body=b"".join(m.get("body", b"") for m in sent[1:]), reads=reads)


def request(app, method: str, target: str, **kwargs) -> Answer:
    return anyio.run(lambda: ask(app, method, target, **kwargs))


# -- routes ----------------------------------------------------------------------------------


def test_a_route_answers_json_with_or_without_a_trailing_slash():
    api, _ = make_api()
    for target in ("/v1/apps", "/v1/apps/"):
        answer = request(api, "GET", target)
        assert answer.status == 200 and answer.headers[b"content-type"] == b"application/json"
        assert answer.json() == {"apps": [{"app": "shop", "status": "active", "updated": 1.5}]}


def test_an_unknown_path_is_404_and_a_known_one_with_another_method_405_both_unread():
    api, _ = make_api()
    missing = request(api, "GET", "/v2/nothing", body=b"ignored")
    wrong = request(api, "PATCH", "/v1/apps", body=b"ignored")
    assert (missing.status, wrong.status) == (404, 405)
    assert missing.json() == {"error": "not_found", "message": "GET /v2/nothing is not part of the API"}
    assert wrong.json() == {"error": "not_found", "message": "PATCH /v1/apps is not part of the API"}
    assert missing.reads == wrong.reads == 0 and wrong.headers[b"connection"] == b"close"


def test_url_parameters_are_decoded_after_the_path_is_split():
    api, _ = make_api()
    answer = request(api, "GET", "/v1/apps/a%2Fb")
    assert answer.status == 404 and answer.json()["message"] == "no app named 'a/b'"


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "says"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_a_body_that_cannot_be_read_is_a_bad_request(body, says):
    with pytest.raises(errors.BadRequestError, match=says) as info:
        Request({}, "", body).json()
    assert _status_of(info.value) == 400
    answer = request(make_api()[0], "POST", "/v1/apps", body=body)
    assert answer.status == 400 and says in answer.json()["message"]


def test_a_readable_body_and_an_empty_one_are_objects():
    assert Request({}, "", b'{"spec": {}}').json() == {"spec": {}}
    assert Request({}, "", b"").json() == {}


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read():
    answer = request(make_api()[0], "POST", "/v1/apps", headers={"Content-Length": str(10 * MIB)})
    assert answer.status == 413 and answer.reads == 0 and answer.headers[b"connection"] == b"close"
    assert answer.json() == {"error": "bad_request",
                             "message": f"the request body is {10 * MIB} bytes; at most 1 MiB is accepted"}


def chunks(*messages: dict):
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        await anyio.sleep_forever()

    return receive


def test_an_undeclared_body_is_counted_and_refused_once_over_the_limit():
    receive = chunks(*({"type": "http.request", "body": b"x" * 600, "more_body": True} for _ in range(3)))
    with pytest.raises(BodyRefused, match="over 1 KiB") as info:
        anyio.run(lambda: read_body({}, receive, limit=1024, timeout=5))
    assert info.value.status == 413


def test_a_body_that_trickles_is_refused_at_its_deadline():
    receive = chunks({"type": "http.request", "body": b"x", "more_body": True})
    started = time.monotonic()
    with pytest.raises(BodyRefused, match=r"did not arrive within 0.2 s \(1 bytes came\)") as info:
        anyio.run(lambda: read_body({"content-length": "100"}, receive, limit=1024, timeout=0.2))
    assert info.value.status == 408 and time.monotonic() - started < 1


def test_a_client_that_leaves_mid_body_is_noticed():
    receive = chunks({"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(ClientGone):
        anyio.run(lambda: read_body({}, receive, limit=1024, timeout=5))


# -- errors ----------------------------------------------------------------------------------


def test_a_flotilla_error_is_answered_with_its_status_and_sentence():
    api, operations = make_api()
    operations.raises = errors.ConflictError("shop.localhost is routed by app admin")
    answer = request(api, "POST", "/v1/apps", body=b'{"spec": {}}')
    assert answer.status == 409
    assert answer.json() == {"error": "conflict", "message": "shop.localhost is routed by app admin"}


def test_an_unexpected_error_is_a_500_sentence_and_its_traceback_stays_in_the_log(caplog):
    api, operations = make_api()
    operations.raises = RuntimeError("the vault key is 1234")
    answer = request(api, "POST", "/v1/apps", body=b"{}")
    assert answer.status == 500
    assert answer.json() == {"error": "internal",
                             "message": "internal error (RuntimeError); the daemon's log has the details"}
    assert "Traceback" in caplog.text and "the vault key is 1234" in caplog.text


def test_query_numbers_must_be_whole_numbers():
    req = Request({}, "since=abc&limit=5")
    assert req.number("limit", default=1000) == 5
    assert req.number("missing", default=7) == 7
    with pytest.raises(errors.BadRequestError, match=r"\?since='abc': write a whole number"):
        req.number("since", default=0)


def test_a_secret_value_that_is_not_base64_is_a_bad_request():
    with pytest.raises(errors.BadRequestError, match="base64"):
        _decode_value("not base64!")


SHOP = parse_spec("app: shop\nservices:\n  web: {image: x, port: 8000}\n", filename="f.yaml", environ={})


@pytest.mark.parametrize("counts", [{}, [], {"web": "three"}, {"web": -1}, {"web": True}, {"web": 101}])
def test_scale_counts_that_are_not_counts_are_bad_requests(counts):
    with pytest.raises(errors.BadRequestError):
        _check_counts(SHOP, counts)


def test_every_error_class_maps_to_one_status_and_unknown_ones_to_500():
    assert _status_of(errors.SpecError([])) == 400
    assert _status_of(errors.SecretNotFoundError("x")) == 404
    assert _status_of(errors.EngineUnavailableError("x")) == 503
    assert _status_of(errors.GatewayError("x")) == 500
    assert set(HTTP_STATUS) <= {c for c in vars(errors).values() if isinstance(c, type)}


def test_every_error_class_is_in_errors_py_and_round_trips_by_code():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FlotillaError)]
    assert len({c.code for c in classes}) == len(classes), "each class has its own code"
    for cls in classes:
        if cls is not errors.SpecError:
            assert type(errors.error_from_dict(cls("m").to_dict())) is cls


# -- the gates before any work ---------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic s3cret", "s3cret", "Bearer s3cret-and-more"])
def test_without_the_token_a_request_is_401_and_nothing_is_read_or_done(authorization):
    api, operations = make_api()
    operations.raises = AssertionError("the handler ran")
    headers = {"Authorization": authorization} if authorization else {}
    answer = request(BearerToken(api, token="s3cret"), "POST", "/v1/apps", body=b"{}", headers=headers)
    assert answer.status == 401 and answer.reads == 0 and answer.headers[b"connection"] == b"close"
    assert answer.json()["error"] == "unauthorized"


def test_with_the_token_a_request_is_served():
    gate = BearerToken(make_api()[0], token="s3cret")
    for authorization in ("Bearer s3cret", "bearer  s3cret "):
        assert request(gate, "GET", "/v1/apps", headers={"Authorization": authorization}).status == 200


def test_a_head_over_the_limit_is_431_before_the_app_sees_it():
    api, operations = make_api()
    operations.raises = AssertionError("the handler ran")
    answer = request(HeadLimit(api, limit=1024), "POST", "/v1/apps", headers={"X-Big": "a" * 2000})
    assert answer.status == 431 and answer.reads == 0
    assert answer.json() == {"error": "bad_request", "message": "the request line and headers are over 1 KiB; "
                                                                "send less"}


def test_when_every_worker_is_busy_a_request_waits_then_gets_503_and_health_still_answers(monkeypatch):
    monkeypatch.setattr(api_module, "WORKERS", 2)
    monkeypatch.setattr(api_module, "WORKER_WAIT", 0.3)
    api, operations = make_api()

    async def scenario():
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(lambda: ask(api, "POST", "/v1/apps/shop/scale", body=b'{"replicas": {"web": 2}}'))
            await anyio.sleep(0.1)
            health = await ask(api, "GET", "/v1/health")
            busy = await ask(api, "POST", "/v1/apps/shop/scale", body=b'{"replicas": {"web": 3}}')
            operations.release.set()
        return health, busy

    health, busy = anyio.run(scenario)
    assert health.status == 200 and health.json()["ok"] is True
    assert busy.status == 503 and "2 API workers were all taken for 0.3 s; nothing was done" in busy.json()["message"]
    assert operations.scaling == 2


# -- logs ------------------------------------------------------------------------------------


def access_log_with(tmp_path: Path, *backends: str) -> AccessLog:
    lines = [json.dumps({"backend": b, "path": f"/{i}", "status": 200}) for i, b in enumerate(backends)]
    (tmp_path / "access.log").write_text("".join(f"{line}\n" for line in lines))
    return AccessLog(tmp_path / "access.log", pipe=tmp_path / "access.fifo")


def entries(answer: Answer) -> list[tuple[str, str, str]]:
    return [(e["app"], e["service"], e["path"]) for e in map(json.loads, answer.body.splitlines())]


def test_the_gateway_log_of_an_app_or_a_service_is_its_json_lines(tmp_path):
    api, _ = make_api(access_log_with(tmp_path, "be_shop_web", "be_blog_web", "fe_127.0.0.1_8080", "be_shop_api"))
    answer = request(api, "GET", "/v1/apps/shop/gateway-logs")
    assert answer.headers[b"content-type"] == b"application/x-ndjson"
    assert entries(answer) == [("shop", "web", "/0"), ("shop", "api", "/3")]
    assert entries(request(api, "GET", "/v1/apps/shop/gateway-logs?tail=1")) == [("shop", "api", "/3")]
    assert entries(request(api, "GET", "/v1/apps/shop/gateway-logs?service=web")) == [("shop", "web", "/0")]
    assert [e[2] for e in entries(request(api, "GET", "/v1/gateway/logs"))] == ["/0", "/1", "/2", "/3"]


def test_the_gateway_log_of_an_unknown_app_or_service_is_404():
    api, _ = make_api()
    assert request(api, "GET", "/v1/apps/nope/gateway-logs").json()["message"] == "no app named 'nope'"
    answer = request(api, "GET", "/v1/apps/shop/gateway-logs?service=db")
    assert (answer.status, answer.json()["message"]) == (404, "app shop has no service 'db'; it has: web, api")
    assert request(api, "GET", "/v1/apps/shop/gateway-logs?tail=ten").status == 400


class Logs:
    """An engine whose replicas print ``lines`` and then, when following, a line every 10 ms for ever."""

    def __init__(self, lines: dict[str, list[bytes]]) -> None:
        self.lines = lines
        self.finished = threading.Event()

    def logs(self, container_id, *, follow, tail):
        try:
            yield from self.lines[container_id]
            while follow:
                time.sleep(0.01)
                yield b"tick\n"
        finally:
            self.finished.set()


def replica(name: str) -> SimpleNamespace:
    return SimpleNamespace(replica=name, container_id=name)


def test_logs_of_every_replica_are_merged_and_prefixed():
    engine = Logs({"web-1": [b"one\ntw", b"o\n"], "web-10": [b"three"]})

    async def read_all() -> bytes:
        return b"".join([chunk async for chunk in stream_logs(engine, [replica("web-1"), replica("web-10")],
                                                             follow=False, tail="all")])

    out = anyio.run(read_all).decode().splitlines()
    assert sorted(out) == ["web-1  | one", "web-1  | two", "web-10 | three"]


def test_a_followed_log_stops_its_readers_when_the_client_goes():
    engine = Logs({"web-1": [b"first\n"]})

    async def read_one_then_leave() -> bytes:
        lines = stream_logs(engine, [replica("web-1")], follow=True, tail="all")
        first = await lines.__anext__()
        await lines.aclose()  # what Starlette does when the client disconnects
        return first

    assert anyio.run(read_one_then_leave).startswith(b"web-1 | first\n")
    assert engine.finished.wait(2), "the reader thread still follows the log"
