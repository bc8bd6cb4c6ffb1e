"""How `flotilla logs --gateway` prints one request: pure formatting of the API's JSON entry."""

from __future__ import annotations

import time

from flotilla.cli.render import access_line


def test_a_request_reads_as_when_where_status_what_how_long_how_much_who():
    entry = {"time": 1_700_000_000.25, "app": "shop", "service": "web", "status": 200, "method": "GET",
             "path": "/items", "ms": {"total": 12}, "bytes_out": 512, "client": "127.0.0.1", "request_id": "abc"}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
    assert access_line(entry) == f"{when}  shop/web         200 GET /items  12ms 512B  127.0.0.1  abc"


def test_a_request_without_a_route_says_so_and_missing_fields_print_as_dashes():
    assert "(no route)" in access_line({"time": 0, "app": None, "service": None, "status": 404})
    assert access_line({"time": 0}).split()[2:] == ["(no", "route)", "-", "-", "-", "-1ms", "0B", "-", "-"]
