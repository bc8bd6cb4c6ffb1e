"""The manifests Flotilla renders, in every mode the schema and policy checks cover.

Why it exists: the strict schema test (tests/unit/test_kubernetes_schema.py)
and the checkov test (tests/integration/test_kubernetes_checkov.py) judge the
same renderings of examples/shop, tests/kubernetes/every-feature.yaml and tests/kubernetes/tls.yaml
(Ingress or Gateway API, KEDA or HPA, Secrets included); they are made here once.
"""

from __future__ import annotations

from pathlib import Path

from flotilla.engines.kubernetes import GatewayRef, RenderOptions, render
from flotilla.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "kubernetes"
SECRETS = {"db-password": b"v1", "tls-key": b"v2", "api-token": b"v3"}
PASSWORDS = {"sessions": b"p1", "events": b"p2"}
TLS_VALUES = {"site": (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                       b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")}


def variants() -> dict[str, list[dict]]:
    """Each rendering's objects, by a name saying its modes."""
    shop = load_spec(REPO / "examples" / "shop" / "flotilla.yaml")
    every = load_spec(FIXTURES / "every-feature.yaml")
    secure = load_spec(FIXTURES / "tls.yaml")
    gateway = GatewayRef(name="public", namespace="infra")
    full = {"include_secrets": True, "secret_values": SECRETS, "cache_passwords": PASSWORDS}
    return {
        "shop-ingress": render(shop, options=RenderOptions()),
        "shop-gateway": render(shop, options=RenderOptions(ingress_mode="gateway-api", gateway_ref=gateway)),
        "every-ingress-keda": render(every, options=RenderOptions(**full)),
        "every-gateway-hpa": render(every, options=RenderOptions(ingress_mode="gateway-api", gateway_ref=gateway,
                                                                 autoscale_mode="hpa-external", **full)),
        "tls-ingress": render(secure, options=RenderOptions(include_secrets=True, tls_values=TLS_VALUES,
                                                            cluster_issuer="letsencrypt-staging")),
    }
