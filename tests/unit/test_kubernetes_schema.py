"""Rendered manifests against Kubernetes' own schema (strict) and against checkov's policies.

Every object rendered from examples/shop and from tests/kubernetes/every-feature.yaml, in
both routing modes and both autoscaling modes, with Secrets included, is validated
with kubernetes-validate against the OpenAPI schema of a pinned Kubernetes version,
in strict mode (an unknown field is an error). The two CRDs (KEDA's ScaledObject,
Gateway API's HTTPRoute) are not in that schema; tests/kubernetes/crd_shapes.py checks
their shape instead. (checkov runs in tests/integration/test_kubernetes_checkov.py.)
"""

from __future__ import annotations

import functools
import json

import pytest

from tests.kubernetes.crd_shapes import check_http_route, check_scaled_object
from tests.kubernetes.variants import variants

K8S_VERSION = "1.33.0"  # pinned: a recent release most managed clusters run

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install it)")


@pytest.fixture(scope="module")
def rendered():
    return variants()


@pytest.fixture(scope="module", autouse=True)
def _cached_schemas():
    """kubernetes-validate reads its schema files for every object; read each once here."""
    utils = kv.utils
    original = utils.schema_contents
    utils.schema_contents = functools.lru_cache(maxsize=None)(original)
    yield
    utils.schema_contents = original


def _schema_problems(obj: dict) -> list[str]:
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        return [f"{obj['kind']} {obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def _hpa_behavior_problems(behavior: dict) -> list[str]:
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": behavior}}
    return _schema_problems(hpa)


def test_every_builtin_object_validates_strictly(rendered):
    problems, checked = [], 0
    for variant, objects in rendered.items():
        for obj in objects:
            if obj["kind"] in ("ScaledObject", "HTTPRoute"):
                continue
            checked += 1
            problems += [f"{variant}: {p}" for p in _schema_problems(obj)]
    assert not problems, "\n".join(problems)
    assert checked > 100


def test_strict_mode_catches_unknown_fields(rendered):
    deployment = next(o for o in rendered["shop-ingress"] if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert _schema_problems(broken)


def test_custom_resources_have_the_right_shape(rendered):
    seen = set()
    for variant, objects in rendered.items():
        for obj in objects:
            if obj["kind"] == "ScaledObject":
                problems = check_scaled_object(obj, validate_hpa=_hpa_behavior_problems)
            elif obj["kind"] == "HTTPRoute":
                problems = check_http_route(obj)
            else:
                continue
            seen.add(obj["kind"])
            assert not problems, f"{variant} {obj['kind']} {obj['metadata']['name']}: {problems}"
    assert seen == {"ScaledObject", "HTTPRoute"}
    bad = json.loads(json.dumps(next(o for o in rendered["every-ingress-keda"] if o["kind"] == "ScaledObject")))
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 10
    behavior = bad["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    behavior["scaleDown"]["stabilizationWindowSeconds"] = 7200
    assert len(check_scaled_object(bad, validate_hpa=_hpa_behavior_problems)) == 2
