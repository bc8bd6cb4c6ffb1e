"""A service as a Deployment and a ClusterIP Service: containers, probes, env, limits, security.

The translation keeps the one-host behaviour where Kubernetes has an
equivalent: a service answers to its own name on its own port (``http://
catalog:8000`` works unchanged inside the namespace), replicas roll one at a
time with the new one ready before the old one goes, readiness is the
spec's health check, and ``FLOTILLA_APP`` / ``FLOTILLA_SERVICE`` /
``FLOTILLA_REPLICA`` are in every container's environment. What Kubernetes
adds is made restrictive by default: no service-account token, a non-root
UID, no privilege escalation, no capabilities, a read-only root filesystem
with a writable ``/tmp``, and the runtime's default seccomp profile. The
spec's ``user`` and ``cap_add`` refine that where Pod Security's
``restricted`` profile (the namespace's) allows: a non-root numeric user, and
NET_BIND_SERVICE.
"""

from __future__ import annotations

import math

from flotilla import labels
from flotilla.engines.kubernetes import meta, registries, secrets
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.errors import ConflictError
from flotilla.naming import cache_variables
from flotilla.spec.hashing import config_hash
from flotilla.spec.images import registry_reference
from flotilla.spec.models import AppSpec, ServiceSpec

REDIS_PORT = 6379
TMP_VOLUME = "tmp"
TMP_SIZE = "64Mi"
# The only capability Pod Security's restricted profile lets a container add.
RESTRICTED_CAPABILITIES = ("NET_BIND_SERVICE",)


def service_objects(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    """The Deployment (a StatefulSet, with volumes) of a service, and its ClusterIP Service when it has a port."""
    svc = spec.services[name]
    objects = [stateful_set(spec, name, options=options) if svc.volumes else deployment(spec, name, options=options)]
    if svc.port is not None:
        objects.append(cluster_service(spec.app, name, svc))
    return objects


def deployment(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    svc = spec.services[name]
    obj = meta.header("apps/v1", "Deployment", name=name, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, name))
    obj["spec"] = {
        "selector": {"matchLabels": meta.service_selector(spec.app, name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        # deploy.deadline: a rollout without progress this long is failed, as on one host.
        "progressDeadlineSeconds": max(1, math.ceil(svc.deploy.deadline)),
        "template": pod_template(spec, name, options=options),
    }
    if svc.autoscale is None:  # an autoscaler owns the count otherwise; re-applying would fight it
        obj["spec"] = {"replicas": svc.replicas, **obj["spec"]}
    return obj


def stateful_set(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    """A service with volumes: each pod its own PersistentVolumeClaim per volume (as each slot has its own
    volume on one host), replaced one at a time, the old pod gone before the new one starts; the claims
    are kept when the StatefulSet is deleted or scaled down, as `down` keeps a volume."""
    svc = spec.services[name]
    _refuse_host_paths(svc, name)
    obj = meta.header("apps/v1", "StatefulSet", name=name, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, name))
    obj["spec"] = {
        "serviceName": name,
        "replicas": svc.replicas,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": meta.service_selector(spec.app, name)},
        "template": pod_template(spec, name, options=options),
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "volumeClaimTemplates": [claim_template(volume, options=options) for volume in svc.named_volumes],
    }
    return obj


def claim_template(volume: str, *, options: RenderOptions) -> dict:
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": options.volume_size}}}
    if options.storage_class:
        claim["storageClassName"] = options.storage_class
    return {"metadata": {"name": claim_name(volume)}, "spec": claim}


def claim_name(volume: str) -> str:
    """A spec volume's name in the pod (``vol-data``): never ``tmp`` or the secrets' volume."""
    return f"vol-{volume}"


def volume_mounts(svc: ServiceSpec) -> list[dict]:
    return [{"name": claim_name(volume), "mountPath": v.path, **({"readOnly": True} if v.read_only else {})}
            for volume, v in svc.named_volumes.items()]


def _refuse_host_paths(svc: ServiceSpec, name: str) -> None:
    binds = [volume for volume, v in svc.volumes.items() if v.bind]
    if binds:
        raise ConflictError(f"service {name!r} binds a host path (volume {binds[0]}), which the namespace's Pod "
                            "Security profile (restricted) refuses and a cluster cannot promise on every node; "
                            "make it a named volume (a PersistentVolumeClaim) to deploy on Kubernetes")


def pod_template(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    svc = spec.services[name]
    annotations = {labels.CONFIG_HASH: config_hash(spec, name, extra=_versions(svc, options))}
    annotations.update(secrets.versions_annotation(svc, options.secret_versions))
    return {
        "metadata": {"labels": meta.service_labels(spec.app, name, role="replica"), "annotations": annotations},
        "spec": {
            **pod_security(options),
            "containers": [container(spec, name, options=options)],
            "volumes": [tmp_volume(), *secrets.file_volume(svc)],
            **image_pull_secrets(spec, options),
        },
    }


def image_pull_secrets(spec: AppSpec, options: RenderOptions) -> dict:
    """``imagePullSecrets`` for the registries with a login (engines/kubernetes/registries.py)."""
    refs = registries.pull_secret_refs(spec, options.registry_logins)
    return {"imagePullSecrets": refs} if refs else {}


def _versions(svc: ServiceSpec, options: RenderOptions) -> dict[str, str]:
    return {f"secret:{n}": str(options.secret_versions[n]) for n in sorted(set(svc.secrets.values()))
            if n in options.secret_versions}


def pod_security(options: RenderOptions) -> dict:
    """Pod-level settings shared by every workload Flotilla renders."""
    uid = options.run_as_user
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def container_security(options: RenderOptions, svc: ServiceSpec | None = None, *, name: str = "") -> dict:
    """Every container's context; a service's ``user`` and ``cap_add`` refine it."""
    uid, gid = _run_as(svc.user if svc else None, default=options.run_as_user, name=name)
    capabilities: dict = {"drop": ["ALL"]}
    if svc and svc.cap_add:
        capabilities["add"] = list(_restricted_capabilities(svc.cap_add, name=name))
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "capabilities": capabilities,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _run_as(user: str | None, *, default: int, name: str) -> tuple[int, int]:
    """(uid, gid) from ``UID[:GID]``; a user given by name (Kubernetes takes numbers only) runs as ``default``."""
    ids = (user or "").split(":")
    if not all(part.isdigit() for part in ids):
        return default, default
    uid = int(ids[0])
    if uid == 0:
        raise ConflictError(f"service {name!r} runs as user 0 (root), which the namespace's Pod Security "
                            f"profile (restricted) refuses; give it a non-root user, e.g. user: \"65534\"")
    return uid, int(ids[1]) if len(ids) == 2 else uid


def _restricted_capabilities(capabilities: tuple[str, ...], *, name: str) -> tuple[str, ...]:
    refused = [cap for cap in capabilities if cap not in RESTRICTED_CAPABILITIES]
    if refused:
        raise ConflictError(f"service {name!r} adds {', '.join(refused)}, which the namespace's Pod Security "
                            f"profile (restricted) refuses: it allows only {', '.join(RESTRICTED_CAPABILITIES)}; "
                            f"remove it from cap_add to deploy on Kubernetes")
    return capabilities


def tmp_volume() -> dict:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": TMP_SIZE}}


def tmp_mount() -> dict:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def container(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    svc = spec.services[name]
    body: dict = {"name": name, "image": registry_reference(spec, svc), "imagePullPolicy": options.image_pull_policy}
    if svc.command is not None:  # the spec's command replaces the image's CMD and keeps its ENTRYPOINT
        body["args"] = [meta.literal(arg) for arg in svc.command]
    if svc.port is not None:
        body["ports"] = [{"containerPort": svc.port, "protocol": "TCP"}]
    body["env"] = container_env(spec, name, options=options)
    if svc.resources.cpus is not None or svc.resources.memory is not None:  # {} would be dropped by the server
        body["resources"] = resources(svc)
    body.update(probes(svc))
    body["securityContext"] = container_security(options, svc, name=name)
    body["volumeMounts"] = [tmp_mount(), *secrets.file_mounts(svc), *volume_mounts(svc)]
    return body


def container_env(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    """Flotilla's own variables, the spec's env, secret references, then cache wiring."""
    svc = spec.services[name]
    env = [
        {"name": "FLOTILLA_APP", "value": spec.app},
        {"name": "FLOTILLA_SERVICE", "value": name},
        {"name": "FLOTILLA_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env += [{"name": k, "value": meta.literal(v)} for k, v in sorted(svc.env.items())]
    env += secrets.env_refs(svc)
    for cache in svc.caches:
        env += cache_env(spec, cache, options=options)
    return env


def cache_env(spec: AppSpec, cache: str, *, options: RenderOptions) -> list[dict]:
    """``<NAME>_REDIS_NODES`` (every node by DNS name) and ``<NAME>_REDIS_PASSWORD`` (a secret reference)."""
    nodes_variable, password_variable = cache_variables(cache)
    nodes = ",".join(f"{host}:{REDIS_PORT}" for host in cache_hosts(spec, cache, options=options))
    password = {"secretKeyRef": {"name": secrets.cache_secret_name(cache), "key": "password"}}
    return [
        {"name": nodes_variable, "value": nodes},
        {"name": password_variable, "valueFrom": password},
    ]


def cache_hosts(spec: AppSpec, cache: str, *, options: RenderOptions) -> list[str]:
    """The stable DNS names of a Redis Cluster's pods, through its headless Service."""
    spec_cache = spec.caches[cache]
    count = spec_cache.shards * (1 + spec_cache.replicas)
    domain = f"{cache}.{meta.namespace_of(spec.app)}.svc.{options.cluster_domain}"
    return [f"{cache}-{i}.{domain}" for i in range(count)]


def resources(svc: ServiceSpec) -> dict:
    """The spec's limits, requested in full: the scheduler reserves what the service may use."""
    amounts = {}
    if svc.resources.cpus is not None:
        amounts["cpu"] = meta.cpu_quantity(svc.resources.cpus)
    if svc.resources.memory is not None:
        amounts["memory"] = meta.memory_quantity(svc.resources.memory)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def probes(svc: ServiceSpec) -> dict:
    """Readiness from ``health`` (as often as on one host); liveness from the same check, patiently."""
    if svc.probe == "none":
        return {}
    check = {"httpGet": {"path": svc.health.path, "port": svc.port}} if svc.probe == "http" \
        else {"tcpSocket": {"port": svc.port}}
    period = max(1, math.ceil(svc.health.interval))
    timeout = max(1, math.ceil(svc.health.timeout))
    return {
        "readinessProbe": {**check, "periodSeconds": period, "timeoutSeconds": timeout,
                           "failureThreshold": 2, "successThreshold": 1},
        **liveness_probes(svc, check, period=period, timeout=timeout),
    }


def liveness_probes(svc: ServiceSpec, check: dict, *, period: int, timeout: int) -> dict:
    """``health.replace_after``: restarted after failing that long; ``start_period``: a startup probe
    that gives a slow starter that long (plus ``replace_after``) before liveness begins. Without
    ``replace_after``, the same check, patiently (every max(10 s, interval), 6 failures)."""
    after, start = svc.health.replace_after, svc.health.start_period
    if after is None:
        return {"livenessProbe": {**check, "periodSeconds": max(10, period), "timeoutSeconds": timeout,
                                  "failureThreshold": 6, "successThreshold": 1}}
    probes = {"livenessProbe": {**check, "periodSeconds": period, "timeoutSeconds": timeout,
                                "failureThreshold": max(1, math.ceil(after / period)), "successThreshold": 1}}
    if start > 0:
        probes["startupProbe"] = {**check, "periodSeconds": period, "timeoutSeconds": timeout,
                                  "failureThreshold": max(1, math.ceil((start + after) / period)),
                                  "successThreshold": 1}
    return probes


def cluster_service(app: str, name: str, svc: ServiceSpec) -> dict:
    """``NAME:PORT`` inside the namespace, load-balanced over ready replicas; never exposed by itself."""
    obj = meta.header("v1", "Service", name=name, namespace=meta.namespace_of(app),
                      labels=meta.service_labels(app, name))
    obj["spec"] = {
        "type": "ClusterIP",
        "selector": meta.service_selector(app, name),
        "ports": [{"name": "main", "port": svc.port, "targetPort": svc.port, "protocol": "TCP"}],
    }
    return obj
