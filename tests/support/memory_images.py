"""An in-memory image source for unit tests of daemon/images.py (a fake of Flotilla's own port).

``local`` is what this host has, ``registry`` what the registry would give;
``pull`` copies from one to the other (or raises ``fail_with``), ``build``
makes an image whose id is a function of the build's inputs, as Docker's
layer cache makes it. Integration tests use engines/docker/images.py itself.
"""

from __future__ import annotations

import hashlib

from flotilla.spec.models import BuildSpec, ImagePin


class MemoryImages:
    def __init__(self) -> None:
        self.local: dict[str, ImagePin] = {}
        self.registry: dict[str, ImagePin] = {}
        self.sources: dict[str, str] = {}  # build context -> its content
        self.pulls: list[tuple[str, object]] = []
        self.builds: list[str] = []
        self.removed: list[str] = []
        self.in_use: set[str] = set()
        self.fail_with: Exception | None = None

    def resolve(self, ref: str) -> ImagePin | None:
        if ref.startswith("sha256:"):
            return next((p for p in self.local.values() if p.id == ref), None)
        return self.local.get(ref)

    def pull(self, ref, *, auth, progress) -> ImagePin:
        self.pulls.append((ref, auth))
        if self.fail_with:
            raise self.fail_with
        self.local[ref] = self.registry[ref]
        return self.local[ref]

    def remote_digest(self, ref, *, auth) -> str | None:
        pin = self.registry.get(ref)
        return pin.digest.partition("@")[2] if pin and pin.digest else None

    def inputs_hash(self, build: BuildSpec) -> str:
        return hashlib.sha256(f"{build.context}:{self.sources.get(build.context, '')}".encode()).hexdigest()

    def build(self, *, build: BuildSpec, tag: str, what: str, progress) -> ImagePin:
        self.builds.append(tag)
        if self.fail_with:
            raise self.fail_with
        image_id = "sha256:" + hashlib.sha256(self.sources.get(build.context, "").encode()).hexdigest()
        self.local[tag] = ImagePin(id=image_id)
        return self.local[tag]

    def remove(self, ref: str, *, expected_id: str) -> bool:
        pin = self.local.get(ref)
        if pin is None or pin.id != expected_id or pin.id in self.in_use:
            return False
        del self.local[ref]
        self.removed.append(ref)
        return True
