"""Image references as the rest of Flotilla reads them: where from, how pulled, what runs.

Pure: parsing a reference (its registry, repository and tag), the pull policy
a service follows, the tag of a built image (named by the hash of its
inputs), and what a replica runs once its deploy pinned the reference
(``AppSpec.images``). The daemon (daemon/images.py) does the pulling and
building; the engines only ask here what to run.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from flotilla.spec.models import AppSpec, BuildSpec, ImagePin, PullPolicy, ServiceSpec

DEFAULT_REGISTRY = "docker.io"
SHORT_DIGEST = 12  # hex characters shown by ps and plan
BUILD_TAG_PREFIX = "src-"
BUILD_TAG_LENGTH = 16  # hex characters of the inputs' hash in a built image's tag


def split_reference(ref: str) -> tuple[str, str, str]:
    """``(registry, repository, tag or digest)`` of ``ref``; docker.io when no registry is named.

    The first component names a registry when it has a ``.`` or a ``:`` or is
    ``localhost`` (Docker's rule). No tag means ``latest``; a reference by
    digest gives the digest in the tag's place, as Docker's pull API takes it.
    """
    name, _, digest = ref.partition("@")
    head, sep, _rest = name.partition("/")
    registry = head if sep and ("." in head or ":" in head or head == "localhost") else DEFAULT_REGISTRY
    colon = name.rfind(":")
    repository, tag = (name[:colon], name[colon + 1:]) if colon > name.rfind("/") else (name, "")
    return registry, repository, digest or tag or "latest"


def registry_of(ref: str) -> str:
    return split_reference(ref)[0]


def repository_of(ref: str) -> str:
    """``127.0.0.1:5000/shop/web:1`` -> ``127.0.0.1:5000/shop/web``; ``redis:7`` -> ``redis``."""
    return split_reference(ref)[1]


def pull_policy(spec: AppSpec, svc: ServiceSpec) -> PullPolicy:
    """The service's own, else the app's; a cache node's image (an add-on's) is pulled only when missing,
    so ``pull: always`` on the app does not send the host's local Redis image to a registry."""
    if svc.pull:
        return svc.pull
    return "missing" if svc.addon and spec.pull == "always" else spec.pull


def pin_of(spec: AppSpec, svc: ServiceSpec) -> ImagePin | None:
    return spec.images.get(svc.image)


def image_to_run(spec: AppSpec, svc: ServiceSpec) -> str:
    """The local image id the deploy pinned (the same bytes in every replica), else the reference."""
    pin = pin_of(spec, svc)
    return pin.id if pin else svc.image


def image_identity(spec: AppSpec, svc: ServiceSpec) -> str:
    """What the config hash covers: the pinned id (a moved tag rolls, a new tag on the same bytes does not)."""
    return image_to_run(spec, svc)


def registry_reference(spec: AppSpec, svc: ServiceSpec) -> str:
    """``repo@sha256:...`` when the deploy pinned a registry digest (for Kubernetes), else the reference."""
    pin = pin_of(spec, svc)
    return pin.digest if pin and pin.digest else svc.image


def shown(spec: AppSpec, svc: ServiceSpec) -> str:
    """``tag@sha256:0123456789ab``, as ps and plan show an image."""
    return shown_pin(svc.image, pin_of(spec, svc))


def shown_pin(image: str, pin: ImagePin | None) -> str:
    if pin is None:
        return image
    digest = pin.digest.rpartition("@")[2] if pin.digest else pin.id
    algorithm, _, hexpart = digest.partition(":")
    return f"{image}@{algorithm}:{hexpart[:SHORT_DIGEST]}"


def build_tag(image: str, inputs_hash: str) -> str:
    """The built image's reference: the repository of ``image``, tagged by the hash of its inputs."""
    return f"{repository_of(image)}:{BUILD_TAG_PREFIX}{inputs_hash[:BUILD_TAG_LENGTH]}"


def with_build_contexts(spec: AppSpec, *, base: str) -> AppSpec:
    """Relative build contexts made absolute against ``base`` (the spec file's folder)."""
    services = {
        name: svc.model_copy(update={"build": _absolute(svc.build, base)}) if svc.build else svc
        for name, svc in spec.services.items()
    }
    return spec.model_copy(update={"services": services})


def _absolute(build: BuildSpec, base: str) -> BuildSpec:
    context = PurePosixPath(build.context)
    if not context.is_absolute():
        context = PurePosixPath(base) / context
    return build.model_copy(update={"context": _normalized(context)})


def _normalized(path: PurePosixPath) -> str:
    parts: list[str] = []
    for part in path.parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def built_services(spec: AppSpec) -> list[str]:
    return [name for name, svc in spec.services.items() if svc.build]
