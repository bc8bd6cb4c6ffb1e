"""``apply``: the rendered app sent to a cluster with server-side apply, and leftovers pruned.

The only module that imports the ``kubernetes`` client. Every object goes out
as a server-side apply patch (``application/apply-patch+yaml``, field manager
``flotilla``, ``force=true``), so the API server merges it, records Flotilla
as the owner of exactly the fields it sets, and leaves other managers' fields
alone (an HPA's replica count, a mesh's injected sidecar).

Secret values never touch the disk: the caller passes a function that reads
one from the vault, and the values go in memory straight into the Secret
objects sent to the Secrets endpoint. A cache's password is generated once
(when its Secret does not exist yet) and kept afterwards.

Pruning lists, per kind Flotilla renders, the objects labelled
``io.flotilla.app=APP`` in the app's namespace, and deletes those that are no
longer rendered, only if Flotilla applied them (its field manager appears as
``Apply`` in ``managedFields``) and nothing owns them: KEDA copies a
ScaledObject's labels onto the HPA it makes, and that HPA is not ours.

The API server's ``Warning`` headers (deprecations, "would violate
PodSecurity") are kept for the user: the client drops them, so the REST
client's ``request`` is wrapped to read them (``ServerWarnings``).
``wait_for_rollout`` then polls the app's workloads, pods and Jobs until every
Deployment and StatefulSet is available, and stops early, with the cluster's
reason, on a state waiting will not resolve (engines/kubernetes/feedback.py).

``dry_run`` sends the same requests with ``dryRun=All``: the API server
validates and admits them and stores nothing. Client errors are translated
into Flotilla's errors here (``EngineUnavailableError`` when the cluster
cannot be reached or no kubeconfig works, ``EngineError`` when it refuses).
"""

from __future__ import annotations

import contextlib
import json
import secrets as random_tokens
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from urllib3.exceptions import HTTPError as TransportError

from flotilla import labels
from flotilla.engines.kubernetes import batch, feedback, kinds, meta, registries, secrets
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.engines.kubernetes.render import render, secret_names
from flotilla.errors import EngineError, EngineUnavailableError, RolloutFailedError, WaitTimeoutError
from flotilla.spec.models import AppSpec

SecretValue = Callable[[str], bytes]
JOB_GRACE = 60.0  # seconds past a before_deploy Job's own deadline before the wait gives up on it
RegistryLogin = Callable[[str], tuple[str, str]]  # registry host -> (username, password)
CertificateValue = Callable[[str], tuple[bytes, bytes]]  # vault certificate name -> (chain PEM, key PEM)
MISSING_KIND_HINTS = {
    "ScaledObject": "install KEDA (keda.sh), or render with --autoscale hpa-external",
    "HTTPRoute": "install the Gateway API CRDs and an implementation, or use --ingress ingress",
}


@dataclass(frozen=True)
class ApplyResult:
    """What happened, as ``Kind namespace/name`` strings, in the order it happened."""

    applied: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # "Kind ns/name: the server's warning"
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"applied": list(self.applied), "pruned": list(self.pruned), "kept": list(self.kept),
                "unchecked": list(self.unchecked), "warnings": list(self.warnings), "dry_run": self.dry_run}


def connect(*, context: str | None = None, kubeconfig: str | None = None) -> ApiClient:
    """An API client from the user's kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    try:
        return kube_config.new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)
    except (kube_config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise EngineUnavailableError(
            f"no usable Kubernetes configuration in {where}{f' for context {context!r}' if context else ''}: "
            f"{exc}; pass --kubeconfig and --context, or check `kubectl config get-contexts`"
        ) from exc


def apply(spec: AppSpec, *, options: RenderOptions, secret_value: SecretValue, api_client: ApiClient,
          dry_run: bool = False, discovery_cache: str | None = None,
          new_password: Callable[[], str] = lambda: random_tokens.token_urlsafe(32),
          registry_login: RegistryLogin | None = None,
          certificate_value: CertificateValue | None = None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> ApplyResult:
    """Apply every object of ``spec`` and prune the app's objects that left it.

    A ``before_deploy`` Job (engines/kubernetes/batch.py) is applied after the
    Secrets and ConfigMaps and waited for before any workload changes; if it
    fails, nothing after it is applied.

    ``registry_login(host)`` reads a registry's login from the vault, for the
    image pull Secrets of the registries in ``options.registry_logins``;
    ``certificate_value(name)`` a vault certificate's (chain, key), for the
    ``kubernetes.io/tls`` Secrets of the app's TLS routes.
    """
    cluster = Cluster(api_client, dry_run=dry_run, discovery_cache=discovery_cache)
    warnings = ServerWarnings(api_client)
    namespace = meta.namespace_of(spec.app)
    objects = render(spec, options=replace(options, include_secrets=False))
    log = _Log(dry_run=dry_run)
    pulls = pull_secrets(spec, options, registry_login)
    wanted = {kinds.key(o) for o in objects + pulls} | {("v1", "Secret", n) for n in secret_names(spec)}
    outgoing = objects + app_secrets(spec, secret_value) + cache_secrets(cluster, spec, new_password=new_password,
                                                                        log=log) + pulls
    outgoing += tls_secrets(spec, certificate_value)
    ordered = sorted(outgoing, key=kinds.sort_key)
    gates = [o for o in ordered if batch.is_before_deploy(o)]
    before = [o for o in ordered if kinds.rank(o) < kinds.WORKLOADS_RANK and o not in gates]
    for obj in before + gates:
        with warnings.about(describe(obj)):
            cluster.apply(obj, log=log)
    if gates and not dry_run:
        wait_for_jobs(cluster, gates, clock=clock, sleep=sleep)
    for obj in (o for o in ordered if o not in before and o not in gates):
        with warnings.about(describe(obj)):
            cluster.apply(obj, log=log)
    if cluster.namespace_exists(namespace):
        prune(cluster, app=spec.app, namespace=namespace, wanted=wanted, log=log)
    return replace(log.result(), warnings=tuple(warnings.messages))


def wait_for_jobs(cluster: Cluster, jobs: list[dict], *, clock: Callable[[], float],
                  sleep: Callable[[float], None], interval: float = 1.0) -> None:
    """Until every Job has succeeded; RolloutFailedError when one fails (its own deadline included)."""
    for job in jobs:
        name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
        deadline = clock() + job["spec"]["activeDeadlineSeconds"] + JOB_GRACE
        while True:
            status = cluster.read("batch/v1", "Job", name=name, namespace=namespace).get("status") or {}
            if status.get("succeeded"):
                break
            failed = next((c for c in status.get("conditions") or []
                           if c.get("type") == "Failed" and c.get("status") == "True"), None)
            if failed or clock() >= deadline:
                why = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}" if failed else "no outcome"
                raise RolloutFailedError(f"Job {namespace}/{name} (before_deploy) did not succeed ({why}); no "
                                         f"Deployment was changed, the old pods keep serving. `kubectl logs -n "
                                         f"{namespace} job/{name}` shows its output; fix it and apply again")
            sleep(interval)


class ServerWarnings:
    """The ``Warning`` headers of the API server's answers, each named after the object it was about."""

    def __init__(self, api_client: ApiClient) -> None:
        self.messages: list[str] = []
        self._subject = ""
        rest = api_client.rest_client
        send = rest.request

        def request(*args, **kwargs):
            response = send(*args, **kwargs)
            self._record(response.headers.getlist("Warning") if hasattr(response.headers, "getlist")
                         else [response.headers.get("Warning")] if response.headers.get("Warning") else [])
            return response

        rest.request = request

    @contextlib.contextmanager
    def about(self, subject: str):
        self._subject = subject
        try:
            yield
        finally:
            self._subject = ""

    def _record(self, headers: list[str]) -> None:
        for header in headers:
            line = f"{self._subject}: {feedback.parse_warning(header)}" if self._subject \
                else feedback.parse_warning(header)
            if line not in self.messages:
                self.messages.append(line)


@dataclass(frozen=True)
class Rollout:
    """Where each Deployment and StatefulSet of the app stands."""

    workloads: tuple[feedback.Progress, ...]

    @property
    def done(self) -> bool:
        return all(w.done for w in self.workloads)

    def to_dict(self) -> dict:
        return {"done": self.done, "workloads": [w.to_dict() for w in self.workloads]}


def wait_for_rollout(spec: AppSpec, *, api_client: ApiClient, timeout: float,
                     on_progress: Callable[[str], None] = lambda line: None,
                     clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                     interval: float = 1.0) -> Rollout:
    """Poll until every workload of ``spec`` is available; raise on a stuck state or at the deadline."""
    cluster = Cluster(api_client, dry_run=False)
    namespace, deadline, shown = meta.namespace_of(spec.app), clock() + timeout, set()
    while True:
        objects = {kind: cluster.list_labelled("v1" if kind == "Pod" else _api_of(kind), kind,
                                               namespace=namespace, app=spec.app)
                   for kind in (*feedback.WORKLOADS, "Pod", "Job")}
        rollout = Rollout(tuple(feedback.progress(w) for kind in feedback.WORKLOADS for w in objects[kind]))
        for line in (w.line() for w in rollout.workloads):
            if line not in shown:
                shown.add(line)
                on_progress(line)
        if rollout.done:
            return rollout
        stuck = feedback.stuck(workloads=[w for k in feedback.WORKLOADS for w in objects[k]],
                               pods=objects["Pod"], jobs=objects["Job"])
        if stuck:
            raise RolloutFailedError(f"the rollout of {spec.app} cannot finish: "
                                     + "; ".join(s.line() for s in stuck)
                                     + "; fix the cause (image, command, resources) and apply again")
        if clock() >= deadline:
            pending = ", ".join(w.line() for w in rollout.workloads if not w.done)
            raise WaitTimeoutError(f"the rollout of {spec.app} did not finish within {timeout:g}s: {pending}; "
                                   f"`flotilla status --target kubernetes -f FILE` shows where it stands")
        sleep(interval)


def cluster_status(app: str, *, api_client: ApiClient) -> dict:
    """The app's workloads and pods as the cluster reports them now."""
    cluster = Cluster(api_client, dry_run=False)
    namespace = meta.namespace_of(app)
    workloads = [feedback.progress(w) for kind in feedback.WORKLOADS
                 for w in cluster.list_labelled(_api_of(kind), kind, namespace=namespace, app=app)]
    pods = cluster.list_labelled("v1", "Pod", namespace=namespace, app=app)
    return {"app": app, "namespace": namespace, "workloads": [w.to_dict() for w in workloads],
            "pods": [feedback.pod_row(p) for p in pods]}


def _api_of(kind: str) -> str:
    return {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1"}[kind]


def pull_secrets(spec: AppSpec, options: RenderOptions, registry_login: RegistryLogin | None) -> list[dict]:
    """The image pull Secrets, their logins read from the vault now, kept in memory only."""
    hosts = registries.used_registries(spec, options.registry_logins)
    if not hosts or registry_login is None:
        return []
    return registries.pull_secrets(spec, {host: registry_login(host) for host in hosts})


def app_secrets(spec: AppSpec, secret_value: SecretValue) -> list[dict]:
    """The app's Secret, its values read from the vault now, kept in memory only."""
    values = {name: secret_value(name) for name in secrets.used_secret_names(spec)}
    return secrets.app_secret(spec, values)


def tls_secrets(spec: AppSpec, certificate_value: CertificateValue | None) -> list[dict]:
    """The TLS Secrets of the app's vault certificates, read from the vault now, kept in memory only."""
    used = secrets.used_certificates(spec)
    if not used or certificate_value is None:
        return []
    return secrets.tls_secrets(spec, {name: certificate_value(name) for name in used})


def cache_secrets(cluster: Cluster, spec: AppSpec, *, new_password: Callable[[], str], log: _Log) -> list[dict]:
    """A new password for each cache that has none yet; an existing one is never replaced."""
    namespace = meta.namespace_of(spec.app)
    fresh = []
    for cache in sorted(spec.caches):
        name = secrets.cache_secret_name(cache)
        if cluster.exists("v1", "Secret", name=name, namespace=namespace):
            log.kept.append(f"Secret {namespace}/{name}")
        else:
            fresh.append(secrets.cache_secret(spec.app, cache, new_password().encode()))
    return fresh


def prune(cluster: Cluster, *, app: str, namespace: str, wanted: set, log: _Log) -> None:
    """Delete this app's objects that Flotilla applied earlier and no longer renders."""
    for kind in reversed(kinds.KINDS):
        if not kind.namespaced:
            continue
        for item in cluster.list_owned(kind, namespace=namespace, app=app):
            if (kind.api_version, kind.kind, item["metadata"]["name"]) not in wanted and _ours(item):
                cluster.delete(kind, name=item["metadata"]["name"], namespace=namespace, log=log)


def _ours(item: dict) -> bool:
    metadata = item.get("metadata", {})
    if metadata.get("ownerReferences"):
        return False
    managers = metadata.get("managedFields") or []
    return any(m.get("manager") == meta.MANAGER and m.get("operation") == "Apply" for m in managers)


@dataclass
class _Log:
    dry_run: bool
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    def result(self) -> ApplyResult:
        return ApplyResult(applied=tuple(self.applied), pruned=tuple(self.pruned), kept=tuple(self.kept),
                           unchecked=tuple(self.unchecked), dry_run=self.dry_run)


class Cluster:
    """The API server, through the client's dynamic (discovery-based) interface."""

    def __init__(self, api_client: ApiClient, *, dry_run: bool, discovery_cache: str | None = None) -> None:
        self.dry_run = dry_run
        self._missing_namespace = False
        self._client = _guard("connect to", lambda: DynamicClient(api_client, cache_file=discovery_cache),
                              host=api_client.configuration.host)
        self._host = api_client.configuration.host

    def resource(self, api_version: str, kind: str):
        try:
            return self._client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as exc:
            hint = MISSING_KIND_HINTS.get(kind, "check the cluster's Kubernetes version")
            raise EngineError(f"the cluster at {self._host} has no {kind} ({api_version}): {hint}") from exc

    def apply(self, obj: dict, *, log: _Log) -> None:
        ident = describe(obj)
        if self._missing_namespace and obj["kind"] != "Namespace":
            log.unchecked.append(ident)  # a dry run cannot check objects of a namespace that is not there
            return
        resource = self.resource(obj["apiVersion"], obj["kind"])
        extra = {"dry_run": "All"} if self.dry_run else {}
        _guard(f"apply {ident}", lambda: self._client.server_side_apply(
            resource, body=obj, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
            field_manager=meta.MANAGER, force_conflicts=True, **extra), host=self._host)
        log.applied.append(ident)
        if self.dry_run and obj["kind"] == "Namespace":
            self._missing_namespace = not self.exists("v1", "Namespace", name=obj["metadata"]["name"])

    def read(self, api_version: str, kind: str, *, name: str, namespace: str) -> dict:
        resource = self.resource(api_version, kind)
        return _plain(_guard(f"read {kind} {namespace}/{name}", lambda: self._client.get(
            resource, name=name, namespace=namespace), host=self._host))

    def exists(self, api_version: str, kind: str, *, name: str, namespace: str | None = None) -> bool:
        resource = self.resource(api_version, kind)
        try:
            self._client.get(resource, name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _translate(exc, f"read {kind} {name}", host=self._host) from exc
        except TransportError as exc:
            raise _unreachable(self._host, exc) from exc
        return True

    def namespace_exists(self, namespace: str) -> bool:
        return not self._missing_namespace and self.exists("v1", "Namespace", name=namespace)

    def list_owned(self, kind: kinds.Kind, *, namespace: str, app: str) -> list[dict]:
        return self.list_labelled(kind.api_version, kind.kind, namespace=namespace, app=app)

    def list_labelled(self, api_version: str, kind: str, *, namespace: str, app: str) -> list[dict]:
        """Objects of ``kind`` labelled for ``app``; none for a kind the cluster does not serve."""
        try:
            resource = self._client.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return []
        selector = f"{labels.APP}={app}"
        found = _guard(f"list {kind} in {namespace}", lambda: self._client.get(
            resource, namespace=namespace, label_selector=selector), host=self._host)
        return [_plain(item) for item in found.items]

    def delete(self, kind: kinds.Kind, *, name: str, namespace: str, log: _Log) -> None:
        resource = self.resource(kind.api_version, kind.kind)
        extra = {"dry_run": "All"} if self.dry_run else {}
        try:
            self._client.delete(resource, name=name, namespace=namespace, propagation_policy="Background", **extra)
        except ApiException as exc:
            if exc.status != 404:  # gone already is what we wanted
                raise _translate(exc, f"delete {kind.kind} {namespace}/{name}", host=self._host) from exc
        except TransportError as exc:
            raise _unreachable(self._host, exc) from exc
        log.pruned.append(f"{kind.kind} {namespace}/{name}")


def describe(obj: dict) -> str:
    namespace = obj["metadata"].get("namespace")
    return f"{obj['kind']} {namespace + '/' if namespace else ''}{obj['metadata']['name']}"


def _plain(item) -> dict:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)


def _guard(what: str, call: Callable, *, host: str):
    """Run one API call, turning client and transport errors into Flotilla's."""
    try:
        return call()
    except ApiException as exc:
        raise _translate(exc, what, host=host) from exc
    except TransportError as exc:
        raise _unreachable(host, exc) from exc


def _unreachable(host: str, exc: Exception) -> EngineUnavailableError:
    return EngineUnavailableError(f"cannot reach the Kubernetes API at {host} ({type(exc).__name__}); "
                                  "check the context (`kubectl cluster-info`) and your network")


def _translate(exc: ApiException, what: str, *, host: str) -> EngineError:
    """A refusal, with the API server's own message (never a request body, which may hold a secret)."""
    message = _status_message(exc)
    if exc.status in (401, 403):
        return EngineError(f"the cluster at {host} refused to {what}: {message}; "
                           "check your credentials and RBAC permissions")
    if exc.status == 422 and "immutable" in message.lower():
        return EngineError(f"cannot {what}: {message}; a field that cannot change did change "
                           "(for a cache: memory or storage): delete the object and apply again")
    if exc.status is None or exc.status >= 500:
        return EngineUnavailableError(f"the Kubernetes API at {host} failed to {what}: {message}")
    return EngineError(f"the cluster refused to {what}: {message}")


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason}"
