"""A small NetworkPolicy evaluator: may this pod open a connection to that pod on this port?

It implements the rules of networking.k8s.io/v1 that Flotilla's policies use,
the way a conforming network plugin applies them: a connection needs both
the source's egress and the destination's ingress to allow it; a pod that
no policy of a direction selects is open in that direction; a selected pod
accepts what the union of its policies' rules allows; a peer with only a
podSelector means pods of the policy's own namespace, with a
namespaceSelector pods of the matching namespaces (narrowed by a podSelector
given with it); an absent ``from``/``to`` or ``ports`` means all. Namespaces
carry ``kubernetes.io/metadata.name`` as the API server sets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(default_factory=dict)


def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector; ``{}`` selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespace_labels(name: str) -> dict:
    return {"kubernetes.io/metadata.name": name}


def _peer_matches(peer: dict, pod: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # Flotilla's policies use no IP blocks; pods are matched by labels
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(pod.namespace)):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), pod.labels)


def _port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _side_allows(policies: list[dict], *, subject: Pod, peer: Pod, port: int, protocol: str, direction: str) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    relevant = [p for p in policies if p["metadata"]["namespace"] == subject.namespace
                and direction in p["spec"].get("policyTypes", ["Ingress"])
                and selects(p["spec"]["podSelector"], subject.labels)]
    if not relevant:
        return True
    for policy in relevant:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(x, peer, policy["metadata"]["namespace"]) for x in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies: list[dict], source: Pod, target: Pod, port: int, protocol: str = "TCP") -> bool:
    """True when ``source`` may connect to ``target`` on ``port``."""
    policies = [p for p in policies if p["kind"] == "NetworkPolicy"]
    egress = _side_allows(policies, subject=source, peer=target, port=port, protocol=protocol, direction="Egress")
    ingress = _side_allows(policies, subject=target, peer=source, port=port, protocol=protocol, direction="Ingress")
    return egress and ingress


def pods_of(objects: list[dict]) -> dict[str, Pod]:
    """One pod per Deployment, StatefulSet and Job, with its template's labels, keyed by workload name."""
    pods = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = obj["spec"]["template"]["metadata"]["labels"]
            pods[obj["metadata"]["name"]] = Pod(obj["metadata"]["name"], obj["metadata"]["namespace"], labels)
    return pods
