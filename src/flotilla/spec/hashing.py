"""The config hash: one short string that changes exactly when a container must be replaced.

Every container Flotilla creates carries this hash in a label. The reconciler
compares it with the hash of the current spec; a difference means the replica
is replaced. So the hash covers what is baked into a container (image,
command, port, env, resources, egress, secrets and caches it is wired to, its
user, read_only, cap_add and pids_limit, plus
``extra`` such as secret versions) and nothing that can change in place
(replicas, autoscale, routes, max_body, health). The image counts as the id the
deploy pinned (``AppSpec.images``): a tag moved to other bytes rolls, a new tag
for the same bytes does not. It is sha256 over canonical JSON, so
it is the same in every process, unlike ``hash()``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from flotilla.errors import NotFoundError
from flotilla.spec.images import image_identity
from flotilla.spec.models import AppSpec, ServiceSpec, VolumeSpec

HASH_LENGTH = 12


def config_hash(spec: AppSpec, service: str, *, extra: Mapping[str, str] | None = None) -> str:
    """12 hex characters identifying the container configuration of ``service``."""
    svc = spec.services.get(service)
    if svc is None:
        raise NotFoundError(f"no service {service!r} in app {spec.app!r}")
    material = {
        "image": image_identity(spec, svc),  # the pinned image id once the deploy resolved it
        "command": list(svc.command) if svc.command is not None else None,
        "port": svc.port,
        "env": dict(svc.env),
        "resources": svc.resources.model_dump(),
        "egress": svc.egress,
        "secrets": dict(svc.secrets),
        "caches": list(svc.caches),
        "security": {"user": svc.user, "read_only": svc.read_only, "cap_add": list(svc.cap_add),
                     "pids_limit": svc.pids_limit},
        **({"volumes": _volumes(svc)} if svc.volumes else {}),
        "extra": dict(extra or {}),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _volumes(svc: ServiceSpec) -> dict:
    """Each volume's mount as it is baked into the container; a plain named volume as its path
    alone, as before volumes had options, so a cache node keeps its hash."""
    return {name: v.path if v == VolumeSpec(path=v.path) else v.model_dump() for name, v in svc.volumes.items()}
