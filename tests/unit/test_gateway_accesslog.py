"""The gateway's access log: its format, the pipe drained into a file, rotation by size, reading back by app.

File and pipe work in a temporary directory, no HAProxy: the lines a real
HAProxy writes are tested in tests/integration/test_haproxy_runtime.py.
"""

from __future__ import annotations

import json
import os
import re
import stat

from flotilla.gateway.accesslog import AccessLog, log_format, open_pipe, parse_line


def line(backend: str, path: str = "/", status: int = 200) -> bytes:
    entry = {"time": 1.5, "backend": backend, "path": path, "status": status, "ms": {"total": 3}}
    return json.dumps(entry).encode() + b"\n"


def test_the_format_is_one_json_object_once_haproxy_fills_it_in():
    text = log_format(path_var="txn.path", request_id_var="txn.request_id")
    assert " " not in text  # HAProxy would split the directive at a space
    filled = re.sub(r"%\[[^]]*\]", "x", text)  # samples, always inside quotes
    filled = re.sub(r"%\{[^}]*\}[A-Za-z]+|%[A-Za-z]+", "1", filled)
    entry = json.loads(filled)
    assert set(entry) == {"time", "client", "frontend", "backend", "server", "method", "path", "status",
                          "bytes_in", "bytes_out", "ms", "termination", "retries", "request_id"}


def test_nothing_a_client_says_is_logged_but_the_path_and_the_request_id():
    text = log_format(path_var="txn.path", request_id_var="txn.request_id")
    samples = re.findall(r"%\[([^]]*)\]", text)
    variables = set(re.findall(r"%([A-Za-z]+)", re.sub(r"%\[[^]]*\]", "", text)))
    # no %r/%HU/%HQ (the query string), no %hr/%CC (captured headers, cookies)
    assert variables == {"Ts", "ms", "ci", "f", "b", "s", "HM", "ST", "U", "B", "TR", "Tw", "Tc", "Tr", "Ta",
                         "ts", "rc"}
    assert samples == ["var(txn.path),bytes(0,512),json(utf8s)", "var(txn.request_id),bytes(0,128),json(utf8s)"]


def test_a_line_names_its_app_and_service_and_notices_are_skipped():
    entry = parse_line(line("be_my-shop_web-2", "/x"))
    assert (entry["app"], entry["service"], entry["path"]) == ("my-shop", "web-2", "/x")
    no_route = parse_line(line("fe_127.0.0.1_8080"))  # the frontend answered: no app's
    assert (no_route["app"], no_route["service"]) == (None, None)
    for other in (b"Proxy fe_127.0.0.1_8080 stopped (cumulated conns: FE: 3, BE: 0).", b"{cut in the mid",
                  b"[1, 2]", b""):
        assert parse_line(other) is None


def access_log(tmp_path, **kwargs) -> AccessLog:
    return AccessLog(tmp_path / "access.log", pipe=tmp_path / "access.fifo", **kwargs)


def test_the_pipe_is_drained_into_the_file_complete_json_lines_only(tmp_path):
    log = access_log(tmp_path)
    assert log.pump() == 0  # no pipe yet: nothing, no error
    writer = open_pipe(tmp_path / "access.fifo")
    try:
        assert stat.S_ISFIFO((tmp_path / "access.fifo").stat().st_mode)
        assert log.pump() == 0  # an empty pipe does not block
        first, second = line("be_shop_web", "/1"), line("be_shop_web", "/2")
        os.write(writer, first + b"Proxy fe_127.0.0.1_8080 stopped.\n" + second[:9])
        log.pump()
        assert log.path.read_bytes() == first  # the notice is dropped, the half line waits
        os.write(writer, second[9:])
        log.pump()
        assert log.path.read_bytes() == first + second
    finally:
        os.close(writer)


def test_the_drain_keeps_whole_objects_without_parsing_them(tmp_path):
    log = access_log(tmp_path)
    writer = open_pipe(tmp_path / "access.fifo")
    try:
        entry = line("be_shop_web", "/1")
        os.write(writer, entry + b"[NOTICE] (1) : haproxy version is 2.6\n" + b'{"time":1,"path":"/cut\n')
        log.pump()
    finally:
        os.close(writer)
    assert log.path.read_bytes() == entry  # a notice and a line cut short (not ending with }) are dropped


class _OneWait:
    """A stop event that stops the loop at its first wait, counting the pumps before it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return bool(self.waits)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_the_drain_waits_after_a_short_read_so_lines_gather_in_batches(tmp_path, monkeypatch):
    log = access_log(tmp_path)
    pumps: list[int] = []
    real_pump = log.pump
    monkeypatch.setattr(log, "pump", lambda: pumps.append(real_pump()) or pumps[-1])
    writer = open_pipe(tmp_path / "access.fifo")
    try:
        os.write(writer, line("be_shop_web", "/1"))
        log.run(_OneWait())
    finally:
        os.close(writer)
    assert len(pumps) == 1 and pumps[0] > 0  # one read took the lines, then it waited (no read of an empty pipe)
    assert log.path.read_bytes() == line("be_shop_web", "/1")


def test_a_file_over_its_size_is_rotated_and_three_copies_are_kept(tmp_path):
    log = access_log(tmp_path, max_bytes=100, keep=3)
    for generation in range(5):
        log.path.write_bytes(line("be_shop_web", f"/{generation}") * 3)
        assert log.rotate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log", "access.log.1", "access.log.2",
                                                          "access.log.3"]
    assert log.path.read_bytes() == b""
    assert [parse_line(log.rotated(n).read_bytes().splitlines()[0])["path"] for n in (1, 2, 3)] == ["/4", "/3", "/2"]
    assert not log.rotate()  # small again: nothing to do


def test_draining_rotates_once_the_file_is_over_its_size(tmp_path):
    log = access_log(tmp_path, max_bytes=150)
    writer = open_pipe(tmp_path / "access.fifo")
    try:
        for number in range(3):
            os.write(writer, line("be_shop_web", f"/{number}"))
            log.pump()
    finally:
        os.close(writer)
    assert log.rotated(1).exists() and log.size() < 150


def test_tail_takes_the_last_lines_of_one_app_across_the_copies(tmp_path):
    log = access_log(tmp_path, max_bytes=10, keep=3)
    log.rotated(1).write_bytes(line("be_shop_web", "/old") + line("be_blog_web", "/blog"))
    log.path.write_bytes(line("be_shop_web", "/a") + b"[NOTICE] something\n" + line("be_shop_api", "/b"))
    shop = lambda entry: entry["app"] == "shop"  # noqa: E731 - a filter, as the API gives one
    assert [e["path"] for e in log.tail(2, keep=shop)] == ["/a", "/b"]
    assert [e["path"] for e in log.tail(3, keep=shop)] == ["/old", "/a", "/b"]
    assert [e["path"] for e in log.tail(None, keep=lambda e: True)] == ["/old", "/blog", "/a", "/b"]
    assert log.tail(0, keep=shop) == []


def test_a_follower_reads_complete_new_lines_and_follows_a_rotation(tmp_path):
    log = access_log(tmp_path, max_bytes=10, keep=3)
    log.path.write_bytes(line("be_shop_web", "/before"))
    follower = log.follower()
    assert follower.read() == []
    with open(log.path, "ab") as out:
        out.write(line("be_shop_web", "/1") + line("be_shop_web", "/2")[:10])
    assert [e["path"] for e in follower.read()] == ["/1"]  # the half line waits
    with open(log.path, "ab") as out:
        out.write(line("be_shop_web", "/2")[10:] + line("be_shop_web", "/3"))
    assert log.rotate()  # /2 and /3 are in the old file, unread
    with open(log.path, "ab") as out:
        out.write(line("be_shop_web", "/4"))
    assert [e["path"] for e in follower.read()] == ["/2", "/3", "/4"]


def test_a_follower_that_began_before_the_first_line_reads_from_the_start(tmp_path):
    log = access_log(tmp_path)
    log.rotated(1).write_bytes(line("be_shop_web", "/shown-by-the-tail"))
    follower = log.follower()
    log.path.write_bytes(line("be_shop_web", "/first"))
    assert [e["path"] for e in follower.read()] == ["/first"]
