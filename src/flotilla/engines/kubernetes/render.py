"""``render``: the whole app as Kubernetes objects, a pure function of the spec and the options.

No I/O, no SDK, no clock: the same spec and options always give the same
list, in the same order (see kinds.py), so the output can be diffed,
reviewed, committed and validated offline. Objects are plain dicts shaped as
the API expects them; the CLI writes them as YAML and ``apply`` sends them.
Secret values appear only with ``include_secrets`` (from
``options.secret_values`` and ``options.cache_passwords``).
"""

from __future__ import annotations

import json

from flotilla.engines.kubernetes import (
    batch,
    kinds,
    meta,
    policies,
    redis,
    registries,
    routing,
    scaling,
    secrets,
    workloads,
)
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.errors import NotFoundError
from flotilla.spec.models import AppSpec


def render(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    """Every object of the app, in apply order (kind, then name)."""
    registries.refuse_builds(spec)
    objects = [namespace(spec.app)]
    objects += policies.policy_objects(spec, options=options)
    if options.include_secrets:
        objects += secret_objects(spec, options=options)
        objects += registries.pull_secrets(spec, options.registry_values)
    for name in sorted(spec.services):
        objects += workloads.service_objects(spec, name, options=options)
    for name in sorted(spec.caches):
        objects += redis.cache_objects(spec, name, options=options)
    objects += batch.batch_objects(spec, options=options)
    objects += scaling.autoscaler_objects(spec, options=options)
    objects += routing.route_objects(spec, options=options)
    objects.sort(key=kinds.sort_key)
    return json.loads(json.dumps(objects))  # independent copies: no object shares a nested dict


def namespace(app: str) -> dict:
    """The app's namespace, where Pod Security Admission enforces the ``restricted`` profile.

    Flotilla's pods meet that profile anyway; the label makes the cluster refuse any pod
    added to the namespace by other means that does not.
    """
    psa = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    return meta.header("v1", "Namespace", name=meta.namespace_of(app), namespace=None,
                       labels={**meta.app_labels(app), **psa})


def secret_objects(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    """The app's Secret and each cache's password Secret, with their values."""
    objects = secrets.app_secret(spec, options.secret_values) + secrets.tls_secrets(spec, options.tls_values)
    for cache in sorted(spec.caches):
        password = options.cache_passwords.get(cache)
        if password is None:
            raise NotFoundError(f"no password given for cache {cache!r} of app {spec.app}")
        objects.append(secrets.cache_secret(spec.app, cache, password))
    return objects


def secret_names(spec: AppSpec) -> list[str]:
    """Names of the Secret objects the app's pods reference (created by ``apply``)."""
    names = [meta.APP_SECRET] if secrets.used_secret_names(spec) else []
    names += sorted(secrets.used_certificates(spec).values())
    return names + [secrets.cache_secret_name(c) for c in sorted(spec.caches)]
