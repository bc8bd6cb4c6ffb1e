"""A stand-in for the Kubernetes API server on 127.0.0.1, for testing ``apply`` without a cluster.

It answers just enough for the official client: version and discovery
(``/version``, ``/api``, ``/apis``, one resource list per group version, built
from the kinds Flotilla renders), server-side apply PATCH, GET of one object,
LIST with an equality label selector, and DELETE. Every request is recorded
(method, path, query, content type, body) so tests can assert what the client
sent. Stored objects get ``managedFields`` naming the field manager, as a real
server does, so pruning can tell Flotilla's objects from others'.

Like a real server it keeps an object's ``status`` across applies (another
manager's field), drops empty lists and mappings (``omitempty``), and gives a
new ``resourceVersion`` only when an apply changed what it stores: ``writes``
counts those. ``warnings`` puts a ``Warning`` header on the answers of a kind's
patches. It runs no controller: a test sets a workload's status itself
(``settle``, ``set_status``), as kube-controller-manager would.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from flotilla.engines.kubernetes.kinds import KINDS, Kind

SERVED_TOO = (Kind("v1", "Pod"),)  # read by `apply`'s rollout wait; Flotilla renders none
PLURALS = {"NetworkPolicy": "networkpolicies", "Ingress": "ingresses", "PodDisruptionBudget": "poddisruptionbudgets",
           "HorizontalPodAutoscaler": "horizontalpodautoscalers"}


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind.lower() + "s")


@dataclass
class Request:
    method: str
    path: str
    query: dict
    content_type: str
    body: bytes


@dataclass
class FakeApiServer:
    """Objects by (apiVersion, kind, namespace, name); requests in order."""

    without: tuple[str, ...] = ()  # kinds this "cluster" does not serve (no CRD installed)
    refusals: dict = field(default_factory=dict)  # (method, kind) -> (status, message)
    objects: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)
    warnings: dict = field(default_factory=dict)  # kind -> the text of a Warning header on its patches
    version: int = 0
    writes: int = 0  # applies that changed a stored object
    # A Job applied here ends at once, as a cluster's Job controller would report it: succeeded,
    # or failed for a name in ``failing_jobs`` (before_deploy Jobs are waited for, batch.py).
    failing_jobs: set = field(default_factory=set)

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kinds(self):
        return [k for k in (*KINDS, *SERVED_TOO) if k.kind not in self.without]

    def set_status(self, kind: str, name: str, status: dict) -> None:
        for key, obj in self.objects.items():
            if key[1] == kind and key[3] == name:
                obj["status"] = status

    def settle(self) -> None:
        """Every Deployment and StatefulSet fully rolled out, as its controller would report it."""
        for (_, kind, _, _), obj in list(self.objects.items()):
            if kind in ("Deployment", "StatefulSet") and "status" not in obj:
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = {"observedGeneration": obj["metadata"].get("generation", 1), "replicas": replicas,
                                 "updatedReplicas": replicas, "availableReplicas": replicas,
                                 "readyReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"}

    def seed(self, obj: dict, *, manager: str = "someone-else", operation: str = "Update") -> None:
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["managedFields"] = [{"manager": manager, "operation": operation}]
        meta = obj["metadata"]
        self.objects[(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])] = obj

    def names(self, kind: str) -> set[str]:
        return {k[3] for k in self.objects if k[1] == kind}

    # -- routing ----------------------------------------------------------------------

    def route(self, path: str):
        """(kind, namespace, name) for an object path, or a discovery document."""
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group_version, rest = "v1", parts[2:]
        else:
            group_version, rest = "/".join(parts[1:3]), parts[3:]
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
            namespace, rest = rest[1], rest[2:]
        for kind in self.kinds():
            if kind.api_version == group_version and rest and rest[0] == plural(kind.kind):
                return kind, namespace, rest[1] if len(rest) > 1 else None
        return None, namespace, None

    def discovery(self, path: str):
        if path == "/version":
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = sorted({k.api_version for k in self.kinds() if "/" in k.api_version})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in groups]}
        group_version = "v1" if path == "/api/v1" else path.removeprefix("/apis/")
        resources = [{"name": plural(k.kind), "singularName": k.kind.lower(), "namespaced": k.namespaced,
                      "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update"]}
                     for k in self.kinds() if k.api_version == group_version]
        if not resources:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def stored_form(value):
    """``value`` without empty lists and mappings, as the API server stores it (``omitempty``)."""
    if isinstance(value, dict):
        kept = {k: stored_form(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ({}, []) or k.endswith("Selector")}
    if isinstance(value, list):
        return [stored_form(v) for v in value]
    return value


def _selector_matches(selector: str, labels: dict) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict, *, warning: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if warning:
            self.send_header("Warning", '299 - "' + warning.replace('"', '\\"') + '"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                          "code": code})

    def _record(self) -> Request:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        req = Request(self.command, url.path, parse_qs(url.query), self.headers.get("Content-Type", ""),
                      self.rfile.read(length) if length else b"")
        self.api.requests.append(req)
        return req

    def do_GET(self) -> None:
        req = self._record()
        kind, namespace, name = self.api.route(req.path)
        if kind is None:
            doc = self.api.discovery(req.path)
            return self._send(200, doc) if doc else self._status(404, f"the server could not find {req.path}")
        if name is None:
            selector = req.query.get("labelSelector", [""])[0]
            items = [o for (av, k, ns, _), o in sorted(self.api.objects.items(), key=lambda e: e[0][3])
                     if (av, k) == (kind.api_version, kind.kind) and ns == namespace
                     and _selector_matches(selector, o["metadata"].get("labels", {}))]
            return self._send(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "items": items,
                                    "metadata": {"resourceVersion": str(self.api.version)}})
        obj = self.api.objects.get((kind.api_version, kind.kind, namespace, name))
        return self._send(200, obj) if obj else self._status(404, f'{plural(kind.kind)} "{name}" not found')

    def do_PATCH(self) -> None:
        req = self._record()
        kind, namespace, name = self.api.route(req.path)
        if kind is None or name is None:
            return self._status(404, "no such resource")
        if ("PATCH", kind.kind) in self.api.refusals:
            return self._status(*self.api.refusals[("PATCH", kind.kind)])
        if kind.namespaced and (None, "Namespace", None, namespace) not in {
                (None, k[1], None, k[3]) for k in self.api.objects} and not req.query.get("dryRun"):
            return self._status(404, f'namespaces "{namespace}" not found')
        obj = stored_form(json.loads(req.body))
        key = (kind.api_version, kind.kind, namespace, name)
        old = self.api.objects.get(key)
        if not req.query.get("dryRun"):
            obj = self._store(key, obj, old, manager=req.query.get("fieldManager", ["?"])[0])
        self._send(200 if old else 201, obj, warning=self.api.warnings.get(kind.kind))

    def _store(self, key, obj: dict, old: dict | None, *, manager: str) -> dict:
        if old is not None and "status" in old:
            obj["status"] = old["status"]
        elif key[1] == "Job":
            obj["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}]} \
                if key[3] in self.api.failing_jobs else {"succeeded": 1}
        obj["metadata"]["managedFields"] = [{"manager": manager, "operation": "Apply"}]
        unchanged = old is not None and {**old, "metadata": {
            k: v for k, v in old["metadata"].items() if k != "resourceVersion"}} == obj
        if unchanged:
            return old
        self.api.version += 1
        self.api.writes += 1
        obj["metadata"]["resourceVersion"] = str(self.api.version)
        self.api.objects[key] = obj
        return obj

    def do_DELETE(self) -> None:
        req = self._record()
        kind, namespace, name = self.api.route(req.path)
        key = (kind.api_version, kind.kind, namespace, name) if kind else None
        if key not in self.api.objects:
            return self._status(404, "not found")
        if not req.query.get("dryRun"):
            del self.api.objects[key]
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
