"""Minimal shape checks for the custom resources Flotilla renders, which no pinned OpenAPI schema covers.

kubernetes-validate ships the schemas of Kubernetes' own kinds only; KEDA's
ScaledObject and the Gateway API's HTTPRoute are CRDs. These checks encode
the parts of their published schemas that Flotilla uses (field names, types,
enums, limits), and borrow the HPA schema for the ScaledObject's ``behavior``,
which KEDA copies verbatim into the HPA it creates. Each returns a list of
problems, empty when the object is fine.
"""

from __future__ import annotations

import re

SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback"}
TRIGGER_KEYS = {"type", "name", "metadata", "metricType", "authenticationRef", "useCachedMetrics"}
HTTPROUTE_SPEC = {"parentRefs", "hostnames", "rules"}
PARENT_REF = {"group", "kind", "namespace", "name", "sectionName", "port"}
RULE_KEYS = {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"}
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _common(obj: dict, api_version: str) -> list[str]:
    problems = []
    if obj.get("apiVersion") != api_version:
        problems.append(f"apiVersion must be {api_version}")
    meta = obj.get("metadata", {})
    if not NAME.match(meta.get("name", "")) or len(meta.get("name", "")) > 63:
        problems.append(f"metadata.name {meta.get('name')!r} is not a DNS label")
    if not meta.get("namespace"):
        problems.append("metadata.namespace is missing")
    return problems


def check_scaled_object(obj: dict, *, validate_hpa=None) -> list[str]:
    """KEDA ScaledObject (keda.sh/v1alpha1)."""
    problems = _common(obj, "keda.sh/v1alpha1")
    spec = obj.get("spec", {})
    problems += [f"spec.{k} is not a ScaledObject field" for k in set(spec) - SCALED_OBJECT_SPEC]
    if not isinstance(spec.get("scaleTargetRef", {}).get("name"), str):
        problems.append("spec.scaleTargetRef.name is required")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
        problems.append("spec.minReplicaCount/maxReplicaCount must be integers with 0 <= min <= max")
    for key in ("cooldownPeriod", "pollingInterval"):
        if key in spec and not (isinstance(spec[key], int) and spec[key] >= 0):
            problems.append(f"spec.{key} must be a non-negative integer")
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        problems.append("spec.triggers must be a non-empty list")
    for i, trigger in enumerate(triggers or []):
        problems += [f"spec.triggers[{i}].{k} is not a trigger field" for k in set(trigger) - TRIGGER_KEYS]
        if not isinstance(trigger.get("type"), str):
            problems.append(f"spec.triggers[{i}].type is required")
        metadata = trigger.get("metadata")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            problems.append(f"spec.triggers[{i}].metadata must map names to strings")
        if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value", "Utilization"):
            problems.append(f"spec.triggers[{i}].metricType is not AverageValue, Value or Utilization")
        if trigger.get("type") == "prometheus" and not {"serverAddress", "query", "threshold"} <= set(metadata or {}):
            problems.append(f"spec.triggers[{i}]: prometheus needs serverAddress, query and threshold")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        problems += _check_windows(behavior)
        problems += validate_hpa(behavior) if validate_hpa else []
    return problems


def _check_windows(behavior: dict) -> list[str]:
    """The API server's own rule (not in the OpenAPI schema): windows of 0 to 3600 seconds."""
    return [f"behavior.{direction}.stabilizationWindowSeconds must be 0..3600"
            for direction, rules in behavior.items()
            if not 0 <= rules.get("stabilizationWindowSeconds", 0) <= 3600]


def check_http_route(obj: dict) -> list[str]:
    """Gateway API HTTPRoute (gateway.networking.k8s.io/v1)."""
    problems = _common(obj, "gateway.networking.k8s.io/v1")
    spec = obj.get("spec", {})
    problems += [f"spec.{k} is not an HTTPRoute field" for k in set(spec) - HTTPROUTE_SPEC]
    for ref in spec.get("parentRefs", []):
        problems += [f"parentRefs.{k} is not a ParentReference field" for k in set(ref) - PARENT_REF]
        if not ref.get("name"):
            problems.append("parentRefs[].name is required")
    hostnames = spec.get("hostnames", [])
    if len(hostnames) > 16 or not all(HOSTNAME.match(h) and len(h) <= 253 for h in hostnames):
        problems.append(f"hostnames {hostnames} are not (at most 16) valid hostnames")
    rules = spec.get("rules", [])
    if not 1 <= len(rules) <= 16:
        problems.append("spec.rules must hold 1 to 16 rules")
    for i, rule in enumerate(rules):
        problems += [f"rules[{i}].{k} is not a rule field" for k in set(rule) - RULE_KEYS]
        problems += _check_rule(i, rule)
    return problems


def _check_rule(i: int, rule: dict) -> list[str]:
    problems = []
    types = set()
    for match in rule.get("matches", []):
        path = match.get("path", {})
        types.add(path.get("type"))
        if path.get("type") not in ("Exact", "PathPrefix", "RegularExpression") or \
                not str(path.get("value", "")).startswith("/"):
            problems.append(f"rules[{i}].matches path {path} is not valid")
    for flt in rule.get("filters", []):
        if flt.get("type") == "URLRewrite":
            path = flt.get("urlRewrite", {}).get("path", {})
            if path.get("type") == "ReplacePrefixMatch" and types != {"PathPrefix"}:
                problems.append(f"rules[{i}]: ReplacePrefixMatch needs PathPrefix matches only")
            if path.get("type") not in ("ReplacePrefixMatch", "ReplaceFullPath"):
                problems.append(f"rules[{i}]: URLRewrite path type {path.get('type')} is not valid")
    for ref in rule.get("backendRefs", []):
        if not ref.get("name") or not isinstance(ref.get("port"), int) or not 1 <= ref["port"] <= 65535:
            problems.append(f"rules[{i}].backendRefs {ref} needs a name and a port")
    return problems
