"""Images on Kubernetes: by digest where a deploy pinned one, pulled with the vault's registry logins.

Pure. A pod names ``repo@sha256:...`` when the spec carries a pin from a
single-host deploy (``AppSpec.images``), else the tag. Each registry the
app's images come from and that has a login in the vault gets an image pull
Secret of type ``kubernetes.io/dockerconfigjson`` (``flotilla-registry-HOST``),
which the pods reference by name; its value is built in memory only by
``apply`` (or ``render --include-secrets``), as the app's other Secrets are.
``build:`` has no Kubernetes form: a cluster pulls, it does not build here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping

from flotilla.engines.kubernetes import meta
from flotilla.errors import Problem, SpecError
from flotilla.spec.images import registry_of
from flotilla.spec.models import AppSpec

PULL_SECRET_TYPE = "kubernetes.io/dockerconfigjson"
Login = tuple[str, str]  # (username, password)


def refuse_builds(spec: AppSpec) -> None:
    """``build:`` is a single-host feature: every such service is a problem, at its path."""
    built = sorted(name for name, svc in spec.services.items() if svc.build)
    if built:
        raise SpecError([Problem.at_path(
            f"services.{name}.build", "build: is not supported on the Kubernetes target",
            hint="push the image to a registry (`flotilla build`, then docker push), deploy its tag in image:, "
                 "and remove build:") for name in built])


def pull_secret_name(host: str) -> str:
    """``127.0.0.1:5000`` -> ``flotilla-registry-127-0-0-1-5000`` (a valid object name)."""
    return "flotilla-registry-" + re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")


def used_registries(spec: AppSpec, logins: frozenset[str] | tuple[str, ...]) -> list[str]:
    """The registries the app's images come from that have a login, sorted."""
    return sorted({registry_of(svc.image) for svc in spec.services.values()} & set(logins))


def pull_secret_refs(spec: AppSpec, logins: frozenset[str] | tuple[str, ...]) -> list[dict]:
    """The pod's ``imagePullSecrets``."""
    return [{"name": pull_secret_name(host)} for host in used_registries(spec, logins)]


def pull_secrets(spec: AppSpec, values: Mapping[str, Login]) -> list[dict]:
    """One dockerconfigjson Secret per used registry, from logins held in memory only."""
    return [_pull_secret(spec.app, host, values[host]) for host in used_registries(spec, tuple(values))]


def _pull_secret(app: str, host: str, login: Login) -> dict:
    username, password = login
    auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    config = {"auths": {host: {"username": username, "password": password, "auth": auth}}}
    obj = meta.header("v1", "Secret", name=pull_secret_name(host), namespace=meta.namespace_of(app),
                      labels=meta.app_labels(app))
    obj["type"] = PULL_SECRET_TYPE
    obj["data"] = {".dockerconfigjson": base64.b64encode(json.dumps(config, sort_keys=True).encode()).decode()}
    return obj
