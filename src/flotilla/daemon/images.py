"""Every image a deploy needs, made present and pinned before anything changes.

``up`` hands its spec here first: services with ``build:`` are built (tagged
by the hash of their inputs, so unchanged sources build nothing), every other
image is pulled as its policy says (``missing``, ``always``, ``never``), and
each reference is pinned to what it resolved to (``AppSpec.images``), which the
store keeps beside the spec. Every replica of that deploy runs the pinned id,
whatever the tag does later, until the next ``up``. A failure here raises
before the store is written, so the running app stays as it was.

It also records what Flotilla itself pulled or built, so that ``flotilla
images prune`` removes those images, when no app's deploy uses them, and
nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flotilla.addons.redis_cluster.nodes import DEFAULT_IMAGE as DEFAULT_CACHE_IMAGE
from flotilla.addons.redis_cluster.nodes import cache_of
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.registries import Registries
from flotilla.daemon.store import Store
from flotilla.engines.docker.images import Credentials, Progress, ProgressSink
from flotilla.errors import Problem, SpecError
from flotilla.spec import AppSpec, ServiceSpec
from flotilla.spec.images import build_tag, pull_policy, registry_of, shown, shown_pin
from flotilla.spec.models import BuildSpec, ImagePin

_POLICY_ORDER = ("never", "missing", "always")  # services sharing an image: the most eager wins


class ImageSource(Protocol):
    """What this part needs of the host's images (engines/docker/images.py's DockerImages)."""

    def resolve(self, ref: str) -> ImagePin | None: ...

    def pull(self, ref: str, *, auth: Credentials | None, progress: ProgressSink) -> ImagePin: ...

    def remote_digest(self, ref: str, *, auth: Credentials | None) -> str | None: ...

    def inputs_hash(self, build: BuildSpec) -> str: ...

    def build(self, *, build: BuildSpec, tag: str, what: str, progress: ProgressSink) -> ImagePin: ...

    def remove(self, ref: str, *, expected_id: str) -> bool: ...


@dataclass(frozen=True)
class ImageChange:
    """A service whose image (as pinned) differs from what its app ran before this deploy."""

    service: str
    image: str  # tag@short digest now
    before: str | None  # the same before (None: a new service, or none was pinned)

    def to_dict(self) -> dict:
        return {"service": self.service, "image": self.image, "before": self.before}


class Images:
    def __init__(self, *, source: ImageSource, store: Store, registries: Registries | None) -> None:
        self._source = source
        self._store = store
        self._registries = registries

    # -- a deploy ------------------------------------------------------------------

    def prepare(self, spec: AppSpec, *, runtime_of: Callable[[AppSpec], AppSpec], dry_run: bool,
                progress: ProgressSink, pinned: dict[str, ImagePin] | None = None) -> AppSpec:
        """``spec`` with built images' tags in place and every image pinned; builds and pulls unless ``dry_run``.

        ``pinned`` are the pins of the deploy running now: with ``pull: missing``, a
        reference whose pinned image is still here keeps it, even if its tag left this host.
        """
        built = self._with_builds(spec, dry_run=dry_run, progress=progress)
        runtime = runtime_of(built)
        wanted = _wanted(runtime)
        self._check_never(runtime, wanted)
        pins = {}
        for ref, policy in sorted(wanted.items()):
            pin = self._present(ref, policy=policy, dry_run=dry_run, progress=progress,
                                running=(pinned or {}).get(ref))
            if pin:
                pins[ref] = pin
        for svc in built.services.values():
            if svc.build and (pin := self._source.resolve(svc.image)):
                pins[svc.image] = pin
        return built.model_copy(update={"images": pins})

    def build_all(self, spec: AppSpec, *, progress: ProgressSink) -> AppSpec:
        """``flotilla build``: every ``build:`` of the spec, nothing deployed."""
        return self._with_builds(spec, dry_run=False, progress=progress)

    def _with_builds(self, spec: AppSpec, *, dry_run: bool, progress: ProgressSink) -> AppSpec:
        services = {
            name: self._built(spec, name, svc, dry_run=dry_run, progress=progress) if svc.build else svc
            for name, svc in spec.services.items()
        }
        return spec.model_copy(update={"services": services})

    def _built(self, spec: AppSpec, name: str, svc: ServiceSpec, *, dry_run: bool,
               progress: ProgressSink) -> ServiceSpec:
        tag = build_tag(svc.image, self._source.inputs_hash(svc.build))
        what = f"{spec.app}/{name}"
        if self._source.resolve(tag) is not None:
            progress(Progress(image=what, status=f"up to date: {tag}"))
        elif not dry_run:
            progress(Progress(image=what, status=f"building {tag}"))
            pin = self._source.build(build=svc.build, tag=tag, what=what, progress=progress)
            self._store.record_image(tag, pin.id, kind="built")
            progress(Progress(image=what, status=f"built {shown_pin(tag, pin)}"))
        return svc.model_copy(update={"image": tag})

    def _present(self, ref: str, *, policy: str, dry_run: bool, progress: ProgressSink,
                 running: ImagePin | None) -> ImagePin | None:
        local = self._source.resolve(ref)
        if local is None and running and policy != "always" and self._source.resolve(running.id):
            return running
        if dry_run and policy == "always":
            return self._still_there(ref, running or local)
        if dry_run or policy == "never" or (local and policy == "missing"):
            return local
        progress(Progress(image=ref, status="pulling"))
        pin = self._source.pull(ref, auth=self._credentials(ref), progress=progress)
        if local is None or local.id != pin.id:
            self._store.record_image(ref, pin.id, kind="pulled")
        progress(Progress(image=ref, status=f"pulled {shown_pin(ref, pin)}"))
        return pin

    def _still_there(self, ref: str, pin: ImagePin | None) -> ImagePin | None:
        """``pin`` if the registry's tag still names its digest (what ``plan`` shows for ``pull: always``)."""
        if pin is None or not pin.digest:
            return None
        remote = self._source.remote_digest(ref, auth=self._credentials(ref))
        return pin if remote and pin.digest.endswith(f"@{remote}") else None

    def _credentials(self, ref: str) -> Credentials | None:
        return self._registries.credentials(registry_of(ref)) if self._registries else None

    def _check_never(self, runtime: AppSpec, wanted: dict[str, str]) -> None:
        """``pull: never`` and the image is not here: every such image at once, at its spec path."""
        missing = [ref for ref, policy in wanted.items() if policy == "never" and self._source.resolve(ref) is None]
        if not missing:
            return
        paths = {svc.image: _image_path(name, svc) for name, svc in reversed(runtime.services.items())}
        raise SpecError([
            Problem.at_path(paths[ref], f"image {ref!r} is not on this host and pull: never forbids pulling it",
                            hint=_image_hint(ref)) for ref in sorted(missing)
        ])

    # -- housekeeping --------------------------------------------------------------

    def prune(self, apps: AppRepository) -> dict:
        """Remove the images Flotilla pulled or built that no stored app's deploy pins; nothing else."""
        used = {pin.id for stored in apps.stored() for pin in _pins_of(stored.images)}
        removed, kept = [], []
        for ref, image_id, kind in self._store.recorded_images():
            if image_id in used:
                kept.append(ref)
                continue
            if self._source.remove(ref, expected_id=image_id):
                removed.append({"image": ref, "id": image_id, "kind": kind})
                self._store.forget_image(ref, image_id)
            elif (found := self._source.resolve(ref)) is None or found.id != image_id:
                self._store.forget_image(ref, image_id)  # gone or re-tagged by someone else: not ours now
            else:
                kept.append(ref)  # a container still uses it
        return {"removed": removed, "kept": sorted(set(kept))}


def image_changes(before: AppSpec | None, after: AppSpec) -> list[ImageChange]:
    """The services of ``after`` whose pinned image differs from ``before``'s (for plan, up and events)."""
    changes = []
    for name, svc in after.services.items():
        now = shown_pin(svc.image, after.images.get(svc.image))
        old_svc = before.services.get(name) if before else None
        then = shown_pin(old_svc.image, before.images.get(old_svc.image)) if old_svc else None
        if now != then:
            changes.append(ImageChange(service=name, image=now, before=then))
    return changes


def shown_images(spec: AppSpec) -> dict[str, str]:
    """Each service's image as ``tag@sha256:short`` (what plan and ps show)."""
    return {name: shown(spec, svc) for name, svc in spec.services.items()}


def _wanted(runtime: AppSpec) -> dict[str, str]:
    """Each image the runtime spec runs (built ones are local) with the most eager policy asking for it."""
    wanted: dict[str, str] = {}
    for svc in runtime.services.values():
        if svc.build:
            continue
        policy = pull_policy(runtime, svc)
        old = wanted.get(svc.image, "never")
        wanted[svc.image] = max(old, policy, key=_POLICY_ORDER.index)
    return wanted


def _pins_of(images: dict) -> list[ImagePin]:
    return [ImagePin(**pin) for pin in images.values()]


def _image_path(name: str, svc: ServiceSpec) -> str:
    cache = cache_of(svc)
    return f"caches.{cache}.image" if cache else f"services.{name}.image"


def _image_hint(image: str) -> str:
    if image == DEFAULT_CACHE_IMAGE:
        return (f"scripts/build-images.sh builds {image} from Debian packages; with a registry, "
                f"set caches.NAME.image or FLOTILLA_REDIS_IMAGE to redis:7 and pull: missing")
    return f"build it (scripts/build-images.sh builds the demo's), `docker pull {image}`, or set pull: missing"
