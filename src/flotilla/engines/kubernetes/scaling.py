"""``autoscale`` as a HorizontalPodAutoscaler, or a KEDA ScaledObject when traffic drives it.

* CPU only: an ``autoscaling/v2`` HPA on average utilization. Flotilla
  requests exactly the spec's ``cpus``, so "70% of the request" means what
  ``cpu: 70%`` means on one host.
* ``concurrency`` or ``rps`` (with or without ``cpu``), mode ``keda`` (the
  default): a KEDA ScaledObject with a Prometheus trigger per target, plus a
  ``cpu`` trigger. KEDA runs the HPA itself (so no HPA of Flotilla's competes
  with it) and is the only way to ``min: 0``. Needs KEDA and a Prometheus
  that scrapes the ingress controller (the queries are options).
* mode ``hpa-external``: an HPA on the External metrics ``flotilla_rps`` and
  ``flotilla_concurrency``, selected by namespace and service, for clusters
  with a Prometheus adapter configured to serve them; ``min`` is at least 1.

``scale_down_delay`` becomes the HPA's scale-down stabilization window (at
most one hour, the API's limit) and, with KEDA, also the cool-down before
scaling to zero. Targets are per replica everywhere (``AverageValue``).

A service's ``concurrency`` (the gateway's limit per replica) has no core
Kubernetes form: kube-proxy and ingress-nginx send every request on at once.
It is rendered on the service's Ingress as the HAProxy Kubernetes Ingress
Controller's ``haproxy.org/pod-maxconn`` (and ``queue_timeout`` as its
``haproxy.org/timeout-queue``), which that controller honours (dividing the
limit among its own replicas) and others ignore; docs/kubernetes.md says what
does not carry over.
"""

from __future__ import annotations

from flotilla.engines.kubernetes import meta
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.spec.models import AppSpec, AutoscaleSpec, ServiceSpec

MAX_STABILIZATION = 3600
KEDA_API = "keda.sh/v1alpha1"
HAPROXY_INGRESS = "haproxy.org/"


def concurrency_annotations(svc: ServiceSpec) -> dict[str, str]:
    """The Ingress annotations that carry ``concurrency`` and ``queue_timeout``; {} without a limit."""
    if svc.concurrency is None:
        return {}
    found = {HAPROXY_INGRESS + "pod-maxconn": str(svc.concurrency)}
    if svc.queue_timeout is not None:
        found[HAPROXY_INGRESS + "timeout-queue"] = f"{max(1, round(svc.queue_timeout * 1000))}ms"
    return found


def autoscaler_objects(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    objects = []
    for name in sorted(spec.services):
        scale = spec.services[name].autoscale
        if scale is None:
            continue
        traffic = scale.target.concurrency is not None or scale.target.rps is not None
        if traffic and options.autoscale_mode == "keda":
            objects.append(scaled_object(spec, name, scale=scale, options=options))
        else:
            objects.append(hpa(spec, name, scale=scale))
    return objects


def _target_ref(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def _window(scale: AutoscaleSpec) -> int:
    return min(MAX_STABILIZATION, round(scale.scale_down_delay))


def behavior(scale: AutoscaleSpec) -> dict:
    """Scale up at once; scale down only after the lower need lasted ``scale_down_delay``."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": _window(scale)},
    }


def hpa(spec: AppSpec, name: str, *, scale: AutoscaleSpec) -> dict:
    obj = meta.header("autoscaling/v2", "HorizontalPodAutoscaler", name=name,
                      namespace=meta.namespace_of(spec.app), labels=meta.service_labels(spec.app, name))
    obj["spec"] = {
        "scaleTargetRef": _target_ref(name),
        "minReplicas": max(1, scale.min),  # the HPA cannot go to zero (KEDA can)
        "maxReplicas": scale.max,
        "metrics": hpa_metrics(spec, name, scale=scale),
        "behavior": behavior(scale),
    }
    return obj


def hpa_metrics(spec: AppSpec, name: str, *, scale: AutoscaleSpec) -> list[dict]:
    """External metrics first, CPU last: the order the API server stores them in.

    ``metrics`` is an atomic list, and a server that keeps HPAs through
    autoscaling/v1 (1.26 does) gives the CPU target back after the others. In
    any other order every apply would rewrite the object.
    """
    metrics = []
    for metric, value in (("flotilla_concurrency", scale.target.concurrency), ("flotilla_rps", scale.target.rps)):
        if value is None:
            continue
        selector = {"matchLabels": {"namespace": meta.namespace_of(spec.app), "service": name}}
        metrics.append({"type": "External", "external": {
            "metric": {"name": metric, "selector": selector},
            "target": {"type": "AverageValue", "averageValue": _quantity(value)}}})
    if scale.target.cpu is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": max(1, round(scale.target.cpu))}}})
    return metrics


def scaled_object(spec: AppSpec, name: str, *, scale: AutoscaleSpec, options: RenderOptions) -> dict:
    obj = meta.header(KEDA_API, "ScaledObject", name=name, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, name))
    obj["spec"] = {
        "scaleTargetRef": _target_ref(name),
        "minReplicaCount": scale.min,
        "maxReplicaCount": scale.max,
        "cooldownPeriod": max(1, round(scale.scale_down_delay)),
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(scale)}},
        "triggers": keda_triggers(spec, name, scale=scale, options=options),
    }
    return obj


def keda_triggers(spec: AppSpec, name: str, *, scale: AutoscaleSpec, options: RenderOptions) -> list[dict]:
    namespace = meta.namespace_of(spec.app)
    triggers = []
    for metric, query, value in (("concurrency", options.concurrency_query, scale.target.concurrency),
                                 ("rps", options.rps_query, scale.target.rps)):
        if value is None:
            continue
        triggers.append({"type": "prometheus", "name": metric, "metadata": {
            "serverAddress": options.prometheus_address,
            "query": query.format(namespace=namespace, service=name),
            "threshold": _number(value),
            "ignoreNullValues": "true",
        }})
    if scale.target.cpu is not None:
        triggers.append({"type": "cpu", "name": "cpu", "metricType": "Utilization",
                         "metadata": {"value": str(max(1, round(scale.target.cpu)))}})
    return triggers


def _number(value: float) -> str:
    """KEDA reads thresholds as strings: ``10``, ``2.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as is, fractions in milli-units (``2.5`` -> ``2500m``)."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"
