"""What a cluster looks like, as far as rendering needs to know: the choices a spec cannot make.

The spec describes the application; how a particular cluster receives traffic
(an ingress-nginx controller or a Gateway API implementation), where its DNS
and its Prometheus live, and which image runs Redis, belong to the cluster.
``RenderOptions`` holds those choices with defaults that fit a common cluster
(ingress-nginx, CoreDNS, KEDA with Prometheus), so ``render`` stays a pure
function of ``(spec, options)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

IngressMode = Literal["ingress", "gateway-api"]
AutoscaleMode = Literal["keda", "hpa-external"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

INGRESS_MODES: tuple[str, ...] = ("ingress", "gateway-api")
AUTOSCALE_MODES: tuple[str, ...] = ("keda", "hpa-external")
PULL_POLICIES: tuple[str, ...] = ("Always", "IfNotPresent", "Never")


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


# ingress-nginx as installed by its Helm chart or static manifests.
DEFAULT_INGRESS_PEER = _frozen({
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
})
# CoreDNS (and kube-dns) pods carry k8s-app=kube-dns in kube-system on every common distribution.
DEFAULT_DNS_PEER = _frozen({
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
})
# Metrics of ingress-nginx scraped by a ServiceMonitor (kube-prometheus-stack), which renames the
# metric's own namespace/service labels to exported_*: requests per second, and in-flight
# requests by Little's law (request seconds per second = the average number in flight).
DEFAULT_RPS_QUERY = (
    'sum(rate(nginx_ingress_controller_requests{{exported_namespace="{namespace}",'
    'exported_service="{service}"}}[1m]))'
)
DEFAULT_CONCURRENCY_QUERY = (
    'sum(rate(nginx_ingress_controller_request_duration_seconds_sum{{exported_namespace="{namespace}",'
    'exported_service="{service}"}}[1m]))'
)


@dataclass(frozen=True)
class GatewayRef:
    """The Gateway (Gateway API) that HTTPRoutes attach to."""

    name: str
    namespace: str | None = None
    section_name: str | None = None

    @classmethod
    def parse(cls, text: str) -> GatewayRef:
        """``NAME``, ``NAMESPACE/NAME`` or ``NAMESPACE/NAME:LISTENER``."""
        rest, _, section = text.partition(":")
        namespace, _, name = rest.rpartition("/")
        if not name:
            raise ValueError(f"{text!r}: write the Gateway as NAME, NAMESPACE/NAME or NAMESPACE/NAME:LISTENER")
        return cls(name=name, namespace=namespace or None, section_name=section or None)


@dataclass(frozen=True)
class RenderOptions:
    """The cluster's side of rendering; every field has a default that suits a common cluster."""

    ingress_mode: IngressMode = "ingress"
    ingress_class: str = "nginx"
    gateway_ref: GatewayRef | None = None
    ingress_controller_selector: Mapping = field(default_factory=lambda: DEFAULT_INGRESS_PEER)
    dns_selector: Mapping = field(default_factory=lambda: DEFAULT_DNS_PEER)
    include_secrets: bool = False
    secret_values: Mapping[str, bytes] = field(default_factory=lambda: _frozen({}))
    cache_passwords: Mapping[str, bytes] = field(default_factory=lambda: _frozen({}))
    secret_versions: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    autoscale_mode: AutoscaleMode = "keda"
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    rps_query: str = DEFAULT_RPS_QUERY
    concurrency_query: str = DEFAULT_CONCURRENCY_QUERY
    image_pull_policy: PullPolicy = "Always"
    redis_image: str = "redis:7"
    run_as_user: int = 10001
    cluster_domain: str = "cluster.local"
    storage_class: str | None = None
    # Registries with a login in the vault (engines/kubernetes/registries.py): pods
    # pulling from them reference their image pull Secret; the values only with include_secrets.
    registry_logins: tuple[str, ...] = ()
    registry_values: Mapping[str, tuple[str, str]] = field(default_factory=lambda: _frozen({}))
    # HTTPS (engines/kubernetes/routing.py): cert-manager's ClusterIssuer for ACME routes, and the vault
    # certificates' (chain, key) by name, for their kubernetes.io/tls Secrets (only with include_secrets).
    cluster_issuer: str = "letsencrypt"
    tls_values: Mapping[str, tuple[bytes, bytes]] = field(default_factory=lambda: _frozen({}))

    def __post_init__(self) -> None:
        _check_choice("ingress_mode", self.ingress_mode, choices=INGRESS_MODES)
        _check_choice("autoscale_mode", self.autoscale_mode, choices=AUTOSCALE_MODES)
        _check_choice("image_pull_policy", self.image_pull_policy, choices=PULL_POLICIES)
        if self.ingress_mode == "gateway-api" and self.gateway_ref is None:
            raise ValueError("gateway-api mode needs the Gateway to attach routes to (gateway_ref, --gateway NS/NAME)")
        if self.run_as_user < 1:
            raise ValueError("run_as_user must be a non-root UID (1 or more; 10000 or more avoids host UIDs)")


def _check_choice(name: str, value: str, *, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
