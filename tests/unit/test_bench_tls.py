"""benchmarks/tls.py's pure parts: the spec it writes, wrk's output read back, rounds merged, ratios judged.

A benchmark that reads its own figures wrong reports a wrong verdict with
confidence, so what it computes from wrk's numbers is tested here, without
running wrk, Docker or a proxy.
"""

from __future__ import annotations

from benchmarks import tls
from benchmarks.proxy_harness import BenchError, WrkResult, median_result, parse_wrk
from flotilla.spec import parse_spec

WRK_OUTPUT = """\
Running 4s test @ https://localhost:44987/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  800.00us  20.00ms   90.00%
  Latency Distribution
     50%  950.00us
     75%    1.20ms
     90%    1.80ms
     99%    4.10ms
  64000 requests in 4.00s, 9.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec:  16000.00
Transfer/sec:      2.25MB
"""


def result(rate: float, *, cpu_us: float | None = None, errors: str = "") -> WrkResult:
    requests = int(rate * 4)
    return WrkResult(requests_per_s=rate, p50_ms=1.0, p99_ms=2.0, requests=requests, errors=errors,
                     cpu_s=None if cpu_us is None else cpu_us * requests / 1e6)


def test_the_spec_it_writes_is_valid_with_and_without_https_and_keeps_the_replica_command():
    with_tls = parse_spec(tls.flotilla_spec(port=18080, https_port=18443), filename="flotilla.yaml", environ={})
    plain = parse_spec(tls.flotilla_spec(port=18080, https_port=None), filename="flotilla.yaml", environ={})
    route = with_tls.services["static"].routes[0]
    assert with_tls.gateway.https_port == 18443 and plain.gateway.https_port is None
    assert (route.host, route.tls.certificate, route.tls.redirect) == (tls.HOST, tls.CERT_NAME, False)
    assert plain.services["static"].routes[0].tls is None
    service = with_tls.services["static"]
    assert service.command[-1].startswith('printf "%s" "$NGINX_CONF"')  # not interpolated away
    assert service.env["NGINX_CONF"] == tls.REPLICA_CONF


def test_wrk_output_reads_back_with_its_errors():
    parsed = parse_wrk(WRK_OUTPUT)
    figures = (parsed.requests_per_s, round(parsed.p50_ms, 6), parsed.p99_ms, parsed.requests)
    assert figures == (16000.0, 0.95, 4.1, 64000)
    assert parsed.errors == "socket errors: connect 0, read 3, write 0, timeout 0"


def test_the_median_round_takes_each_figure_and_the_cpu_per_request_median():
    merged = median_result([result(100, cpu_us=30), result(300, cpu_us=10), result(200, cpu_us=20)])
    assert merged.requests_per_s == 200 and round(merged.cpu_us_per_request, 6) == 20
    assert median_result([result(100), result(200)]).cpu_us_per_request is None


def test_a_case_that_failed_in_any_round_failed():
    failed = BenchError("wrk exited 1")
    rounds = [{"nginx": {"https": result(100)}}, {"nginx": {"https": failed}}, {"nginx": {"https": result(300)}}]
    assert tls.merge_rounds(rounds)["nginx"]["https"] is failed
    assert tls.merge_rounds(rounds[:1] + rounds[2:])["nginx"]["https"].requests_per_s == 200


def test_the_ratio_is_the_median_of_each_rounds_flotilla_over_its_best_peer():
    # Side by side in each round: 1.0, 0.3 (a slow spell for Flotilla only), 1.0. The medians of the
    # sides taken apart (50 against 100) would say 0.5.
    rounds = [{"flotilla": {"https": result(100)}, "nginx": {"https": result(100)}, "caddy": {"https": result(20)}},
              {"flotilla": {"https": result(30)}, "nginx": {"https": result(100)}, "caddy": {"https": result(50)}},
              {"flotilla": {"https": result(50)}, "nginx": {"https": result(40)}, "caddy": {"https": result(50)}}]
    outcome = {"rounds": rounds, "results": tls.merge_rounds(rounds)}
    judged = tls.ratio(outcome, "https")
    assert judged["rounds"] == [1.0, 0.3, 1.0] and judged["value"] == 1.0
    assert judged["best_peer"] == "nginx" and judged["met"] is True


def test_an_invalid_peer_is_not_the_best_and_a_missing_flotilla_is_not_judged():
    rounds = [{"flotilla": {"https": result(90)}, "nginx": {"https": result(500, errors="3 non-2xx/3xx responses")},
               "caddy": {"https": result(60)}}]
    outcome = {"rounds": rounds, "results": tls.merge_rounds(rounds)}
    assert tls.ratio(outcome, "https") == {"value": 1.5, "rounds": [1.5], "best_peer": "caddy", "met": True}
    assert tls.ratio(outcome, "handshake") is None
