"""HTTPS routes on Kubernetes: Ingress tls sections, kubernetes.io/tls Secrets, cert-manager for ACME."""

from __future__ import annotations

import pytest

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.errors import NotFoundError
from flotilla.spec import load_spec
from tests.kubernetes.variants import FIXTURES, TLS_VALUES

SPEC = load_spec(FIXTURES / "tls.yaml")


def by_name(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_tls_routes_get_tls_sections_and_acme_its_own_ingress_with_the_issuer():
    ingresses = by_name(render(SPEC, options=RenderOptions(cluster_issuer="staging")), "Ingress")
    assert sorted(ingresses) == ["web", "web-noredirect", "web-strip-acme"]
    assert ingresses["web"]["spec"]["tls"] == [{"hosts": ["*.secure.example", "secure.example"],
                                                "secretName": "tls-site"}]
    assert "cert-manager.io/cluster-issuer" not in ingresses["web"]["metadata"]["annotations"]
    acme = ingresses["web-strip-acme"]
    assert acme["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "staging"
    (section,) = acme["spec"]["tls"]
    assert section["hosts"] == ["api.example"] and section["secretName"].startswith("tls-acme-api-example-")
    assert ingresses["web-noredirect"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"
    assert [r["host"] for r in ingresses["web"]["spec"]["rules"]] == ["*.secure.example", "plain.example",
                                                                      "secure.example"]


def test_vault_certificates_become_tls_secrets_only_with_their_values():
    assert "tls-site" not in by_name(render(SPEC, options=RenderOptions()), "Secret")
    secret = by_name(render(SPEC, options=RenderOptions(include_secrets=True, tls_values=TLS_VALUES)),
                     "Secret")["tls-site"]
    assert secret["type"] == "kubernetes.io/tls" and sorted(secret["data"]) == ["tls.crt", "tls.key"]
    with pytest.raises(NotFoundError, match="flotilla certs set secure NAME"):
        render(SPEC, options=RenderOptions(include_secrets=True))
