"""Which pods the rendered NetworkPolicies let reach which: the public/internal line on Kubernetes.

Public services are reachable from outside the app only by the ingress
controller, and only on their port; internal services only from the app's
own pods; a Redis Cluster only from the services that list it (and its own
nodes); services without egress reach only their namespace and the DNS.
Checked with a small evaluator (tests/kubernetes/netpol_eval.py), itself
checked against hand-made cases first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.spec import load_spec
from tests.kubernetes.netpol_eval import Pod, allowed, pods_of, selects

HERE = Path(__file__).resolve().parents[1] / "kubernetes"
INGRESS = Pod("controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
INGRESS_OTHER = Pod("admission", "ingress-nginx", {"app.kubernetes.io/name": "something-else"})
STRANGER = Pod("stranger", "other", {"app": "stranger"})
DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"})


@pytest.fixture(scope="module")
def objects():
    return render(load_spec(HERE / "every-feature.yaml"), options=RenderOptions())


@pytest.fixture(scope="module")
def pods(objects):
    found = pods_of(objects)
    assert {"web", "api", "search", "worker", "sessions", "events"} <= set(found)
    return found


def test_evaluator_basics():
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "d", "namespace": "a"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}}
    allow = {"kind": "NetworkPolicy", "metadata": {"name": "x", "namespace": "a"},
             "spec": {"podSelector": {"matchLabels": {"r": "db"}}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"r": "web"}}}],
                                   "ports": [{"port": 5432}]}]}}
    db, web, foreign_web = Pod("db", "a", {"r": "db"}), Pod("web", "a", {"r": "web"}), Pod("w", "b", {"r": "web"})
    assert allowed([], foreign_web, db, 5432)
    assert not allowed([deny], web, db, 5432)
    assert allowed([deny, allow], web, db, 5432)
    assert not allowed([deny, allow], web, db, 5433)
    assert not allowed([deny, allow], foreign_web, db, 5432)  # a bare podSelector means the policy's namespace
    assert selects({"matchExpressions": [{"key": "s", "operator": "In", "values": ["x"]}]}, {"s": "x"})
    assert not selects({"matchExpressions": [{"key": "s", "operator": "NotIn", "values": ["x"]}]}, {"s": "x"})


def test_public_services_from_the_ingress_controller_only_on_their_port(objects, pods):
    spec = load_spec(HERE / "every-feature.yaml")
    for name, svc in spec.services.items():
        if svc.port is None:
            continue
        public = bool(svc.routes)
        assert allowed(objects, INGRESS, pods[name], svc.port) is public, name
        assert not allowed(objects, INGRESS, pods[name], svc.port + 1), name
        assert not allowed(objects, INGRESS_OTHER, pods[name], svc.port), name
        assert not allowed(objects, STRANGER, pods[name], svc.port), name


def test_every_service_is_reachable_from_the_apps_own_pods(objects, pods):
    spec = load_spec(HERE / "every-feature.yaml")
    for name, svc in spec.services.items():
        if svc.port is None:
            continue
        for client in spec.services:
            assert allowed(objects, pods[client], pods[name], svc.port), f"{client} -> {name}"
        assert not allowed(objects, pods["sessions"], pods[name], svc.port), f"cache node -> {name}"


def test_redis_cluster_from_its_consumers_only(objects, pods):
    spec = load_spec(HERE / "every-feature.yaml")
    for cache in spec.caches:
        node = pods[cache]
        consumers = {n for n, s in spec.services.items() if cache in s.caches}
        for name in spec.services:
            assert allowed(objects, pods[name], node, 6379) is (name in consumers), f"{name} -> {cache}"
            assert not allowed(objects, pods[name], node, 16379), f"{name} -> {cache} bus"
        assert not allowed(objects, INGRESS, node, 6379)
        assert not allowed(objects, STRANGER, node, 6379)
        job = next(p for n, p in pods.items() if n.startswith(f"{cache}-form-"))
        assert allowed(objects, node, node, 6379) and allowed(objects, node, node, 16379)
        assert allowed(objects, job, node, 6379)
    assert not allowed(objects, pods["sessions"], pods["events"], 6379)


def test_a_cache_is_closed_to_the_other_caches_nodes_and_jobs_and_to_pods_of_no_service(objects, pods):
    """Issue 13, break 1, on Kubernetes: only a cache's own pods reach its bus, only its consumers its port."""
    for cache, other in (("sessions", "events"), ("events", "sessions")):
        job = next(p for n, p in pods.items() if n.startswith(f"{other}-form-"))
        for port in (6379, 16379):
            assert not allowed(objects, pods[other], pods[cache], port), f"{other} -> {cache}:{port}"
            assert not allowed(objects, job, pods[cache], port), f"{other}'s job -> {cache}:{port}"
    bare = Pod("debug", pods["sessions"].namespace, {"io.flotilla.app": pods["sessions"].labels["io.flotilla.app"]})
    assert not allowed(objects, bare, pods["sessions"], 6379) and not allowed(objects, bare, pods["sessions"], 16379)


def test_egress_false_reaches_only_the_namespace_and_dns(objects, pods):
    spec = load_spec(HERE / "every-feature.yaml")
    for name, svc in spec.services.items():
        assert allowed(objects, pods[name], STRANGER, 443) is svc.egress, name
        assert allowed(objects, pods[name], DNS, 53, "UDP"), name
        assert allowed(objects, pods[name], DNS, 53, "TCP"), name
    assert not allowed(objects, pods["sessions"], STRANGER, 443)
    assert allowed(objects, pods["web"], pods["search"], 7700)


def test_shop_example_keeps_catalog_and_cart_internal():
    objects = render(load_spec(Path(__file__).resolve().parents[2] / "examples/shop/flotilla.yaml"),
                     options=RenderOptions())
    pods = pods_of(objects)
    assert allowed(objects, INGRESS, pods["web"], 8000)
    assert not allowed(objects, INGRESS, pods["catalog"], 8000)
    assert not allowed(objects, INGRESS, pods["cart"], 8000)
    assert allowed(objects, pods["web"], pods["catalog"], 8000)
    assert not allowed(objects, STRANGER, pods["web"], 8000)


def test_ingress_controller_selector_is_configurable(pods):
    spec = load_spec(HERE / "every-feature.yaml")
    traefik = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}}}
    objects = render(spec, options=RenderOptions(ingress_controller_selector=traefik))
    proxy = Pod("traefik", "traefik", {"app.kubernetes.io/name": "traefik"})
    assert allowed(objects, proxy, pods["web"], 8000)
    assert not allowed(objects, INGRESS, pods["web"], 8000)
