"""Secrets on Kubernetes: references in pods, and the ``Secret`` objects that hold the values.

Pods never contain a value: env secrets are ``secretKeyRef`` and file secrets
are mounts of the app's Secret, so manifests can be written to disk, reviewed
and committed. The values themselves go into ``Secret`` objects only when
asked: ``apply`` builds them in memory from the vault and sends them straight
to the API server; ``render --include-secrets`` puts them in the output, for
users who manage Secrets themselves, with a warning.

One Secret per app (``flotilla-secrets``) holds every vault secret its
services use, keyed by the vault's name (vault names are valid Secret keys,
while they are not always valid object names). Each Redis Cluster has its own
Secret with its password, which ``apply`` generates once and then keeps.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from flotilla.engines.kubernetes import meta
from flotilla.engines.kubernetes.routing import tls_secret_name
from flotilla.errors import NotFoundError
from flotilla.spec.models import AppSpec, ServiceSpec

SECRETS_VOLUME = "flotilla-secrets"
FILE_MODE = 0o440  # owner root, group = the pod's fsGroup: readable by the non-root user only


def used_secret_names(spec: AppSpec) -> list[str]:
    """Every vault secret some service or job of the app uses, sorted."""
    users = [*spec.services.values(), *spec.jobs.values()]
    return sorted({name for user in users for name in user.secrets.values()})


def cache_secret_name(cache: str) -> str:
    return f"{cache}-redis"


def env_refs(svc: ServiceSpec) -> list[dict]:
    """``secretKeyRef`` env entries for the service's env secrets, sorted by variable."""
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": meta.APP_SECRET, "key": secret}}}
        for var, secret in sorted(svc.secret_env.items())
    ]


def file_volume(svc: ServiceSpec) -> list[dict]:
    """The app Secret as a volume holding only the keys this service mounts as files."""
    keys = sorted(set(svc.secret_files.values()))
    if not keys:
        return []
    items = [{"key": key, "path": key} for key in keys]
    return [{"name": SECRETS_VOLUME, "secret": {"secretName": meta.APP_SECRET, "items": items,
                                                 "defaultMode": FILE_MODE}}]


def file_mounts(svc: ServiceSpec) -> list[dict]:
    """One read-only mount per file secret, at the path the spec names."""
    return [
        {"name": SECRETS_VOLUME, "mountPath": path, "subPath": secret, "readOnly": True}
        for path, secret in sorted(svc.secret_files.items())
    ]


def app_secret(spec: AppSpec, values: Mapping[str, bytes]) -> list[dict]:
    """The app's Secret with every used vault secret; empty when no service uses one."""
    names = used_secret_names(spec)
    if not names:
        return []
    missing = [n for n in names if n not in values]
    if missing:
        raise NotFoundError(
            f"app {spec.app} has no value for secret(s) {', '.join(missing)}; "
            f"set each with `flotilla secrets set {spec.app} NAME`"
        )
    return [_secret(spec.app, name=meta.APP_SECRET, labels=meta.app_labels(spec.app),
                    data={n: values[n] for n in names})]


def cache_secret(app: str, cache: str, password: bytes) -> dict:
    """A Redis Cluster's password, used by its nodes and handed to its consumers."""
    return _secret(app, name=cache_secret_name(cache), labels=meta.cache_labels(app, cache),
                   data={"password": password})


def used_certificates(spec: AppSpec) -> dict[str, str]:
    """Vault certificate name -> its kubernetes.io/tls Secret's name, for every TLS route that names one."""
    return {r.tls.certificate: tls_secret_name(r) for svc in spec.services.values() for r in svc.routes
            if r.tls is not None and r.tls.certificate}


def tls_secrets(spec: AppSpec, values: Mapping[str, tuple[bytes, bytes]]) -> list[dict]:
    """A ``kubernetes.io/tls`` Secret per vault certificate the routes use (ACME ones: cert-manager's)."""
    used = used_certificates(spec)
    missing = sorted(n for n in used if n not in values)
    if missing:
        raise NotFoundError(f"app {spec.app} has no certificate {', '.join(missing)}; set each with "
                            f"`flotilla certs set {spec.app} NAME --cert FILE --key FILE`")
    return [_secret(spec.app, name=secret, labels=meta.app_labels(spec.app), kind="kubernetes.io/tls",
                    data={"tls.crt": values[name][0], "tls.key": values[name][1]})
            for name, secret in sorted(used.items())]


def _secret(app: str, *, name: str, labels: dict[str, str], data: Mapping[str, bytes], kind: str = "Opaque") -> dict:
    obj = meta.header("v1", "Secret", name=name, namespace=meta.namespace_of(app), labels=labels)
    obj["type"] = kind
    obj["data"] = {key: base64.b64encode(value).decode("ascii") for key, value in sorted(data.items())}
    return obj


def versions_annotation(svc: ServiceSpec, versions: Mapping[str, int]) -> dict[str, str]:
    """``name=version`` of the secrets a service uses: a new value changes it, which rolls the pods."""
    used = sorted(set(svc.secrets.values()))
    known = [f"{name}={versions[name]}" for name in used if name in versions]
    return {meta.SECRET_VERSIONS: ",".join(known)} if known else {}
