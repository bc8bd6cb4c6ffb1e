"""Names, labels and quantities shared by every rendered object.

Ownership works on Kubernetes as on one host: every object carries
``io.flotilla.app`` (what ``apply`` prunes by) and the well-known
``app.kubernetes.io/*`` labels, so both Flotilla and ordinary tooling
(``kubectl get -l``, dashboards) can find an app's objects. Pod selectors use
only the Flotilla labels, which never change for a given service, because a
Deployment's selector is immutable once created.
"""

from __future__ import annotations

import hashlib
import re

from flotilla import labels as fl
from flotilla.errors import ConflictError
from flotilla.spec.units import GIB, MIB

MANAGER = "flotilla"
CACHE = "io.flotilla.cache"
EGRESS = "io.flotilla.egress"
SECRET_VERSIONS = "io.flotilla.secret-versions"
APP_SECRET = "flotilla-secrets"  # one Secret per app namespace; keys are the vault's secret names
RESERVED_NAMESPACES = ("default",)


def namespace_of(app: str) -> str:
    """Each app lives in a namespace named after it (``kube-*`` and ``default`` are refused)."""
    if app in RESERVED_NAMESPACES or app.startswith("kube-"):
        raise ConflictError(f"app {app!r} would deploy into Kubernetes' own namespace {app!r}; rename the app")
    return app


def common_labels(app: str, *, component: str, role: str) -> dict[str, str]:
    """Labels of every object belonging to ``component`` (a service or a cache) of ``app``."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": f"{app}-{component}",
        "app.kubernetes.io/part-of": app,
        "app.kubernetes.io/managed-by": MANAGER,
        **fl.owned(app, role=role),
    }


def app_labels(app: str) -> dict[str, str]:
    """Labels of objects that belong to the whole app (namespace, policies, its Secret)."""
    return {"app.kubernetes.io/part-of": app, "app.kubernetes.io/managed-by": MANAGER, **fl.owned(app, role="app")}


def service_labels(app: str, service: str, *, role: str = "service") -> dict[str, str]:
    return {**common_labels(app, component=service, role=role), fl.SERVICE: service}


def cache_labels(app: str, cache: str, *, role: str = "cache") -> dict[str, str]:
    return {**common_labels(app, component=cache, role=role), CACHE: cache}


def service_selector(app: str, service: str) -> dict[str, str]:
    return {fl.APP: app, fl.SERVICE: service}


def cache_selector(app: str, cache: str) -> dict[str, str]:
    """Every pod of a cache: its nodes and its forming Job's (the StatefulSet's selector, which cannot change)."""
    return {fl.APP: app, CACHE: cache}


def cache_node_selector(app: str, cache: str) -> dict[str, str]:
    """A cache's nodes only, never its forming Job's pod: what the headless Service and the PDB select.

    A PodDisruptionBudget that also matches a Job's pod cannot count its
    expected pods (a Job has no scale subresource) and allows no disruption
    at all, so every node drain would block.
    """
    return {**cache_selector(app, cache), fl.ROLE: "cache-node"}


def header(api_version: str, kind: str, *, name: str, namespace: str | None, labels: dict[str, str]) -> dict:
    """``apiVersion``, ``kind`` and ``metadata`` of an object."""
    metadata: dict = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(labels)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def cpu_quantity(cpus: float) -> str:
    """0.5 -> ``500m``; 2 -> ``2``."""
    millis = max(1, round(cpus * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    """Bytes as Kubernetes reads them: whole GiB or MiB with their binary suffix, else plain bytes."""
    if size % GIB == 0:
        return f"{size // GIB}Gi"
    if size % MIB == 0:
        return f"{size // MIB}Mi"
    return str(size)


def literal(text: str) -> str:
    """Escape ``$`` so the kubelet does not expand ``$(VAR)`` in an env value or an argument."""
    return text.replace("$", "$$")


def dns_label(text: str, *, limit: int = 63) -> str:
    """A DNS label made from free text; a short hash keeps shortened or altered names distinct."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if slug == text and len(slug) <= limit:
        return slug
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{slug[: limit - 7].rstrip('-')}-{digest}"


def short_hash(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()[:8]
