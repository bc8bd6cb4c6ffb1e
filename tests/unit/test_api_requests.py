"""Malformed API requests are answered 400 Bad Request with a sentence, not 409 or 500.

Pure: the request is read from an in-memory handler (headers and a byte
stream), and the error-to-status table is checked for every error class.
"""

from __future__ import annotations

import io

import pytest

from flotilla import errors
from flotilla.daemon.api import HTTP_STATUS, Request, _decode_value, _status_of
from flotilla.daemon.operations import _check_counts
from flotilla.spec import parse_spec


class Handler:
    def __init__(self, body: bytes, *, path: str = "/v1/apps", length: str | None = None) -> None:
        self.path = path
        self.headers = {"Content-Length": length if length is not None else str(len(body))}
        self.rfile = io.BytesIO(body)


def read(body: bytes, **kwargs) -> dict:
    return Request(Handler(body, **kwargs), {}).json()


@pytest.mark.parametrize(("body", "length", "says"), [
    (b"{not json", None, "not JSON"),
    (b"\xff\xfe", None, "not JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"{}", "twelve", "is not a number of bytes"),
])
def test_a_body_that_cannot_be_read_is_a_bad_request(body, length, says):
    with pytest.raises(errors.BadRequestError, match=says) as info:
        read(body, length=length)
    assert _status_of(info.value) == 400


def test_a_readable_body_and_an_empty_one_are_objects():
    assert read(b'{"spec": {}}') == {"spec": {}}
    assert read(b"") == {}


def test_query_numbers_must_be_whole_numbers():
    req = Request(Handler(b"", path="/v1/apps/shop/events?since=abc&limit=5"), {})
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
