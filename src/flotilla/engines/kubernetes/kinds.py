"""The kinds of object Flotilla renders, in the order they are applied.

One table serves the renderer (output order), ``apply`` (order of creation,
reverse order of pruning) and pruning (which kinds to list for leftovers).
The order puts the namespace first, the NetworkPolicies before any pod can
start (so no pod ever runs unprotected), Secrets and ConfigMaps before the
workloads that mount them, and routes last, once their backends exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    namespaced: bool = True
    crd: bool = False  # a custom resource: absent from clusters without its operator


KINDS: tuple[Kind, ...] = (
    Kind("v1", "Namespace", namespaced=False),
    Kind("networking.k8s.io/v1", "NetworkPolicy"),
    Kind("v1", "Secret"),
    Kind("v1", "ConfigMap"),
    Kind("v1", "Service"),
    Kind("apps/v1", "StatefulSet"),
    Kind("apps/v1", "Deployment"),
    Kind("batch/v1", "Job"),
    Kind("batch/v1", "CronJob"),
    Kind("policy/v1", "PodDisruptionBudget"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler"),
    Kind("keda.sh/v1alpha1", "ScaledObject", crd=True),
    Kind("networking.k8s.io/v1", "Ingress"),
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", crd=True),
)
_RANK = {(k.api_version, k.kind): i for i, k in enumerate(KINDS)}
WORKLOADS_RANK = _RANK[("apps/v1", "StatefulSet")]  # the first kind whose pods serve


def rank(obj: dict) -> int:
    """Position of an object's kind in the apply order."""
    try:
        return _RANK[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(f"Flotilla does not render {obj.get('apiVersion')} {obj.get('kind')}") from None


def sort_key(obj: dict) -> tuple[int, str]:
    return rank(obj), obj["metadata"]["name"]


def key(obj: dict) -> tuple[str, str, str]:
    """Identity of an object within an app: (apiVersion, kind, name)."""
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
