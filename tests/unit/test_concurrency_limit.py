"""A service's ``concurrency`` and ``queue_timeout``: validated, rendered for HAProxy and for Kubernetes.

Issue 18: the limit per replica becomes ``maxconn`` on each of the backend's
server slots, so requests over it wait in HAProxy's queue (where any replica
that frees a slot or joins takes them), for ``queue_timeout``, then get the
gateway's 503 with Retry-After, counted from the backend's ``econ``.
"""

from __future__ import annotations

import re

import pytest

from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.engines.kubernetes.render import render
from flotilla.errors import SpecError
from flotilla.gateway.config import build_gateway_config, render_config
from flotilla.gateway.metrics import MetricsWindow, backend_sample
from flotilla.gateway.model import Server
from flotilla.gateway.runtime import StatRow
from flotilla.spec import spec_from_dict, spec_to_dict


def app(**service) -> dict:
    body = {"image": "x:1", "port": 8000, "routes": [{"host": "w.localhost", "path": "/"}], **service}
    return {"app": "shop", "services": {"worker": body}}


def backend_text(**service) -> str:
    spec = spec_from_dict(app(**service))
    servers = {("shop", "worker"): [Server(name="shop-worker-1", address="10.0.0.2", port=8000, enabled=True)]}
    text = render_config(build_gateway_config({"shop": spec}, servers), runtime_socket="/tmp/h.sock")
    return text[text.index("backend be_shop_worker"):]


def test_concurrency_becomes_maxconn_on_every_slot_with_the_queue_timeout_and_a_503_with_retry_after():
    text = backend_text(concurrency=4, queue_timeout="5s")
    slots = [line for line in text.splitlines() if line.strip().startswith("server slot")]
    assert len(slots) == 101 and all(" maxconn 4" in line for line in slots)
    assert "server slot1 10.0.0.2:8000 maxconn 4 # shop-worker-1" in text  # before the comment, not in it
    assert "timeout queue 5000ms" in text
    assert re.search(r'http-error status 503 .*"no replica of worker was free within 5000ms; .*hdr Retry-After 1', text)


def test_concurrency_alone_queues_for_the_default_ten_seconds():
    assert "timeout queue 10000ms" in backend_text(concurrency=2)


def test_without_the_setting_the_backend_is_as_before():
    text = backend_text()
    assert "maxconn" not in text and "http-error" not in text and "timeout queue" not in text


@pytest.mark.parametrize(("service", "message"), [
    ({"concurrency": 0}, "services.worker.concurrency: must be between 1 and 10000, got 0"),
    ({"concurrency": "4"}, "services.worker.concurrency: expected an integer"),
    ({"queue_timeout": "5s"}, "queue_timeout needs concurrency: without a limit nothing queues"),
    ({"concurrency": 2, "queue_timeout": "2m"}, "queue_timeout: must be at most 60s, got 120s"),
    ({"concurrency": 2, "autoscale": {"min": 1, "max": 3, "target": {"concurrency": 3}}},
     "target concurrency 3 is above the limit of 2 per replica, so it can never be reached"),
])
def test_bad_settings_are_refused_saying_what_to_do(service, message):
    with pytest.raises(SpecError) as caught:
        spec_from_dict(app(**service))
    assert message in str(caught.value)


def test_an_unrouted_service_cannot_have_a_gateway_limit():
    with pytest.raises(SpecError, match="concurrency is applied by the gateway, and this service has no routes"):
        spec_from_dict({"app": "shop", "services": {"worker": {"image": "x:1", "concurrency": 3}}})


def test_the_settings_round_trip_through_the_stored_form():
    spec = spec_from_dict(app(concurrency=4, queue_timeout="1.5s"))
    assert (spec.services["worker"].concurrency, spec.services["worker"].queue_timeout) == (4, 1.5)
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert "concurrency" not in spec_to_dict(spec_from_dict(app()))["services"]["worker"]


def row(svname: str, **values) -> StatRow:
    base = dict(pxname="be_shop_worker", svname=svname, kind="server", status="UP", scur=0, qcur=0,
                req_tot=0, stot=0, hrsp_5xx=0, rtime=0, ttime=0, rate=0)
    raw = {k: str(v) for k, v in values.pop("raw", {}).items()}
    return StatRow(**{**base, **values}, raw=raw)


def test_a_sample_counts_queue_timeouts_keeps_the_queue_out_of_in_flight_and_times_serving_slots():
    backend = row("BACKEND", kind="backend", scur=38, qcur=30, req_tot=500, hrsp_5xx=3, rtime=90,
                  raw={"econ": 3})
    servers = [row("slot1", stot=100, rtime=200), row("slot2", stot=50, rtime=220),
               row("slot3", status="MAINT", stot=9, rtime=900),  # out of rotation: left out
               row("activator", stot=2, rtime=4000)]  # held a cold start: left out
    sample = backend_sample(backend, servers, at=1.0)
    assert (sample.in_flight, sample.queued, sample.unserved_total, sample.service_ms) == (8, 30, 3, 210.0)
    window = MetricsWindow()
    window.add("shop", "worker", sample)
    current = window.current("shop", "worker")
    assert current.to_dict()["unserved_total"] == 3 and current.service_ms == 210.0


def test_arrivals_count_when_a_request_enters_the_backend_not_when_it_is_done():
    # HAProxy 2.6, measured: 5 requests in a backend (1 served, 4 queued): stot 5, req_tot 0.
    window = MetricsWindow()
    window.add("shop", "worker", backend_sample(row("BACKEND", kind="backend", stot=100, req_tot=100), [], at=1.0))
    window.add("shop", "worker", backend_sample(row("BACKEND", kind="backend", stot=160, req_tot=120), [], at=2.0))
    current = window.current("shop", "worker")
    assert (current.arrival_rps, current.rps) == (60.0, 20.0)


def test_kubernetes_carries_the_limit_as_the_haproxy_ingress_annotations():
    objects = render(spec_from_dict(app(concurrency=4, queue_timeout="5s")), options=RenderOptions())
    ingress = next(o for o in objects if o["kind"] == "Ingress")
    notes = ingress["metadata"]["annotations"]
    assert notes["haproxy.org/pod-maxconn"] == "4" and notes["haproxy.org/timeout-queue"] == "5000ms"
    plain = render(spec_from_dict(app()), options=RenderOptions())
    assert not any(k.startswith("haproxy.org/") for o in plain if o["kind"] == "Ingress"
                   for k in o["metadata"]["annotations"])
