"""What a cluster says back after an apply: its warnings, and how far each rollout has got.

``flotilla apply`` waits for its rollout as ``up`` does on one host, so it
must read, from the objects the API server returns, whether a Deployment or
StatefulSet is available, and whether waiting longer can help: a pod that
cannot pull its image, one in a crash loop, one no node can take, a failed
Job, a Deployment past its progress deadline. And the server's ``Warning``
headers (deprecations, "would violate PodSecurity"), which the Python client
drops, are parsed here for the user to see.

Pure: plain dicts in (as the API returns them), plain data out; apply.py
does the reading and the waiting, and ``pod_row`` shapes what ``flotilla
status --target kubernetes`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flotilla import labels
from flotilla.engines.kubernetes.meta import CACHE

# Waiting reasons of a container that more waiting will not fix.
STUCK_WAITING = frozenset({
    "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
WORKLOADS = ("Deployment", "StatefulSet")
_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


def parse_warning(header: str) -> str:
    """The text of one ``Warning: 299 - "text"`` header (RFC 7234), or the header as it came."""
    match = _WARNING.match(header)
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else header.strip()


@dataclass(frozen=True)
class Progress:
    """One Deployment or StatefulSet, as its status says."""

    kind: str
    name: str
    desired: int
    updated: int
    available: int
    done: bool

    def line(self) -> str:
        state = "available" if self.done else "rolling out"
        return (f"{self.kind} {self.name}: {self.available}/{self.desired} available, "
                f"{self.updated}/{self.desired} up to date ({state})")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "desired": self.desired, "updated": self.updated,
                "available": self.available, "done": self.done}


@dataclass(frozen=True)
class Stuck:
    """Why a rollout will not finish by waiting: the object, the cluster's reason and its message."""

    subject: str
    reason: str
    message: str

    def line(self) -> str:
        return f"{self.subject}: {self.reason}{f' ({self.message})' if self.message else ''}"


def progress(obj: Mapping) -> Progress:
    """How far a Deployment or StatefulSet has rolled out."""
    spec, status, metadata = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    seen = int(status.get("observedGeneration") or 0) >= int(metadata.get("generation") or 0)
    if obj["kind"] == "Deployment":
        available = int(status.get("availableReplicas") or 0)
        done = seen and updated == desired and available == desired and int(status.get("replicas") or 0) == desired
    else:
        available = int(status.get("availableReplicas", status.get("readyReplicas")) or 0)
        same_revision = status.get("currentRevision") == status.get("updateRevision")
        done = seen and updated == desired and available == desired and same_revision
    return Progress(kind=obj["kind"], name=metadata.get("name", "?"), desired=desired, updated=updated,
                    available=available, done=done)


def stuck(*, workloads: Iterable[Mapping], pods: Iterable[Mapping], jobs: Iterable[Mapping]) -> list[Stuck]:
    """Every state among these objects that waiting will not resolve."""
    found = [s for w in workloads for s in _deadline_passed(w)]
    found += [s for p in pods for s in _pod_stuck(p)]
    found += [s for j in jobs for s in _job_failed(j)]
    return found


def _deadline_passed(workload: Mapping) -> list[Stuck]:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return [Stuck(f"{workload['kind']} {workload['metadata']['name']}", "ProgressDeadlineExceeded",
                          condition.get("message", ""))]
    return []


def _pod_stuck(pod: Mapping) -> list[Stuck]:
    name, status = f"Pod {pod['metadata']['name']}", pod.get("status") or {}
    found = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            found.append(Stuck(name, "Unschedulable", condition.get("message", "")))
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            found.append(Stuck(f"{name} container {container.get('name', '?')}", waiting["reason"],
                               waiting.get("message", "")))
    return found


def pod_row(pod: Mapping) -> dict:
    """One row of ``flotilla status --target kubernetes``: a pod as ``ps`` shows a replica."""
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    pod_labels = metadata.get("labels") or {}
    containers = status.get("containerStatuses") or []
    waiting = [c["state"]["waiting"].get("reason", "Waiting") for c in containers
               if (c.get("state") or {}).get("waiting")]
    return {
        "service": pod_labels.get(labels.SERVICE) or pod_labels.get(CACHE) or "-",
        "pod": metadata.get("name", "?"),
        "state": waiting[0] if waiting else status.get("phase", "Unknown"),
        "ready": f"{sum(1 for c in containers if c.get('ready'))}/{len(containers)}",
        "restarts": sum(int(c.get("restartCount") or 0) for c in containers),
        "image": ",".join(c.get("image", "?") for c in containers) or "-",
        "node": (pod.get("spec") or {}).get("nodeName") or "-",
        "ip": status.get("podIP") or "-",
    }


def _job_failed(job: Mapping) -> list[Stuck]:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return [Stuck(f"Job {job['metadata']['name']}", condition.get("reason") or "Failed",
                          condition.get("message", ""))]
    return []
