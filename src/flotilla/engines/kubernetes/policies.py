"""The line between outside and inside, drawn with NetworkPolicies.

On one host only the gateway can reach a public service and nothing outside
the app can reach an internal one. Here the same line is:

* ``default-deny-ingress``: no pod of the namespace accepts a connection
  unless another policy below allows it;
* ``<service>-from-app``: every service with a port accepts connections from
  the app's own service pods, on its port only (services find each other by
  name, as on one host);
* ``<service>-from-ingress``: a service with routes also accepts the ingress
  controller (or Gateway data plane) pods, on its port only; nothing else
  outside the namespace gets in;
* ``<cache>-clients``: a Redis Cluster accepts its client port from the
  services that list the cache, and its client and bus ports from its own
  pods (the nodes and the Job that forms the cluster), and nothing else;
* ``<service>-egress`` / ``<cache>-egress``: what has ``egress: false`` (the
  default; caches always) may only open connections to pods of its own
  namespace and to the cluster DNS. Services with ``egress: true`` get no
  egress policy: they may connect anywhere, like the one-host egress network.

A policy only works where the cluster's network plugin enforces
NetworkPolicy (Calico, Cilium, ...); see docs/kubernetes.md.
"""

from __future__ import annotations

from flotilla import labels
from flotilla.engines.kubernetes import meta
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.engines.kubernetes.workloads import REDIS_PORT
from flotilla.spec.models import AppSpec

REDIS_BUS_PORT = REDIS_PORT + 10000
API = "networking.k8s.io/v1"


def policy_objects(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    objects = [default_deny(spec.app)]
    for name in sorted(spec.services):
        objects += service_policies(spec, name, options=options)
    for cache in sorted(spec.caches):
        objects += cache_policies(spec, cache, options=options)
    return objects


def _policy(app: str, name: str, *, selector: dict, types: list[str], extra_labels: dict | None = None) -> dict:
    obj = meta.header(API, "NetworkPolicy", name=name, namespace=meta.namespace_of(app),
                      labels={**meta.app_labels(app), **(extra_labels or {})})
    obj["spec"] = {"podSelector": selector, "policyTypes": types}
    return obj


def default_deny(app: str) -> dict:
    """Ingress in policyTypes and no ingress rule denies all; no ``ingress: []``, which the server drops."""
    return _policy(app, "default-deny-ingress", selector={}, types=["Ingress"])


def app_pods(app: str) -> dict:
    """The app's service pods (not its cache nodes, which are no clients of services)."""
    return {"podSelector": {"matchLabels": {labels.APP: app, labels.ROLE: "replica"}}}


def service_policies(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    svc = spec.services[name]
    selector = {"matchLabels": meta.service_selector(spec.app, name)}
    tag = {labels.SERVICE: name}
    objects = []
    if svc.port is not None:
        ports = [{"protocol": "TCP", "port": svc.port}]
        inside = _policy(spec.app, f"{name}-from-app", selector=selector, types=["Ingress"], extra_labels=tag)
        inside["spec"]["ingress"] = [{"from": [app_pods(spec.app)], "ports": ports}]
        objects.append(inside)
        if svc.routes:
            outside = _policy(spec.app, f"{name}-from-ingress", selector=selector, types=["Ingress"],
                              extra_labels=tag)
            outside["spec"]["ingress"] = [{"from": [dict(options.ingress_controller_selector)], "ports": ports}]
            objects.append(outside)
    if not svc.egress:
        objects.append(_egress_policy(spec.app, f"{name}-egress", selector=selector, options=options,
                                      extra_labels=tag))
    return objects


def cache_policies(spec: AppSpec, cache: str, *, options: RenderOptions) -> list[dict]:
    selector = {"matchLabels": meta.cache_selector(spec.app, cache)}
    tag = {meta.CACHE: cache}
    consumers = sorted(name for name, svc in spec.services.items() if cache in svc.caches)
    own = {"podSelector": selector}
    rules = [{"from": [own], "ports": [{"protocol": "TCP", "port": REDIS_PORT},
                                       {"protocol": "TCP", "port": REDIS_BUS_PORT}]}]
    if consumers:
        clients = {"podSelector": {"matchLabels": {labels.APP: spec.app}, "matchExpressions": [
            {"key": labels.SERVICE, "operator": "In", "values": consumers}]}}
        rules.append({"from": [clients], "ports": [{"protocol": "TCP", "port": REDIS_PORT}]})
    allow = _policy(spec.app, f"{cache}-clients", selector=selector, types=["Ingress"], extra_labels=tag)
    allow["spec"]["ingress"] = rules
    egress = _egress_policy(spec.app, f"{cache}-egress", selector=selector, options=options, extra_labels=tag)
    return [allow, egress]


def _egress_policy(app: str, name: str, *, selector: dict, options: RenderOptions, extra_labels: dict) -> dict:
    obj = _policy(app, name, selector=selector, types=["Egress"], extra_labels=extra_labels)
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    obj["spec"]["egress"] = [
        {"to": [{"podSelector": {}}]},
        {"to": [dict(options.dns_selector)], "ports": dns_ports},
    ]
    return obj
