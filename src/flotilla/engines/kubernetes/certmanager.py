"""ACME on Kubernetes: the cluster's cert-manager issues, Flotilla only asks for it.

On one host the daemon orders certificates itself (daemon/acme.py); in a cluster
that is cert-manager's job, and an Ingress asks for it with one annotation
naming the issuer. The issuer belongs to the cluster, not to the spec, so its
name is a render option (``--acme-issuer``). The Ingress's ``tls`` section, the
Secret cert-manager fills, is rendered with the other TLS routes (routing.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.spec.models import RouteSpec

CLUSTER_ISSUER = "cert-manager.io/cluster-issuer"


def cert_manager_annotations(routes: Iterable[RouteSpec], *, options: RenderOptions) -> dict[str, str]:
    """The annotation that makes cert-manager issue for an Ingress with an ACME route; none without one."""
    if not any(route.tls is not None and route.tls.acme for route in routes):
        return {}
    return {CLUSTER_ISSUER: options.acme_issuer}
