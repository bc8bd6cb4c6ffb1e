"""ACME routes on Kubernetes (engines/kubernetes/certmanager.py): cert-manager's annotation, strictly valid."""

from __future__ import annotations

import pytest

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.spec import parse_spec

SPEC = """
app: a
gateway: {listen: "127.0.0.1:8080", https_port: 8443}
services:
  s:
    image: i:1
    port: 80
    routes: [{host: shop.example.com, tls: {acme: true}}]
  plain:
    image: i:1
    port: 80
    routes: [{host: plain.example.com}]
"""


def ingress(objects, name):
    return next(o for o in objects if o["kind"] == "Ingress" and o["metadata"]["name"] == name)


def test_an_ingress_with_an_acme_route_names_the_cluster_issuer_and_others_do_not():
    spec = parse_spec(SPEC, filename="t.yaml", environ={})
    objects = render(spec, options=RenderOptions())
    assert ingress(objects, "s")["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert "cert-manager.io/cluster-issuer" not in ingress(objects, "plain")["metadata"]["annotations"]
    chosen = render(spec, options=RenderOptions(acme_issuer="letsencrypt-staging"))
    assert ingress(chosen, "s")["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-staging"


def test_the_annotated_ingress_validates_strictly():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    objects = render(parse_spec(SPEC, filename="t.yaml", environ={}), options=RenderOptions())
    kv.validate(ingress(objects, "s"), "1.33.0", strict=True)
