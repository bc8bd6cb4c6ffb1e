"""The app repository: every stored spec, parsed once, and which apps are going.

The store keeps each app's spec as JSON, and beside it the image pins of its
deploy (which become ``AppSpec.images``); every part of the daemon wants it as
an ``AppSpec``. Parsing a spec costs pydantic validation, and the loops read
specs many times a second, so this repository parses each stored version once
and hands out the same frozen object until the stored spec changes. It is the
one place that knows what "active" means (stored and not being removed).
"""

from __future__ import annotations

import json
import threading

from flotilla.daemon.store import DELETING, Store, StoredApp
from flotilla.errors import NotFoundError
from flotilla.spec import AppSpec, spec_from_dict, spec_to_dict
from flotilla.spec.models import ImagePin


class AppRepository:
    """Stored apps as parsed specs; writes go through here so the parsed copies stay true."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._parsed: dict[str, tuple[str, AppSpec]] = {}  # app -> (its stored JSON, the spec)
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------

    def stored(self) -> list[StoredApp]:
        """Every stored app, active or being removed, by name."""
        return self._store.apps()

    def names(self) -> list[str]:
        return [a.name for a in self._store.apps()]

    def active(self, *, with_caches: bool = False) -> list[AppSpec]:
        """The spec of every app not being removed (only those declaring caches, if asked)."""
        return [
            self._spec_of(a)
            for a in self._store.apps()
            if a.status != DELETING and (a.spec.get("caches") or not with_caches)
        ]

    def get(self, app: str) -> AppSpec | None:
        """The spec of ``app`` if it is stored and not being removed."""
        stored = self._store.get_app(app)
        if stored is None or stored.status == DELETING:
            return None
        return self._spec_of(stored)

    def require(self, app: str) -> AppSpec:
        """The spec of ``app``; NotFoundError, saying what to do, when there is none."""
        spec = self.get(app)
        if spec is None:
            raise NotFoundError(f"no app named {app!r}; `flotilla up -f FILE` deploys one, `flotilla ps` lists them")
        return spec

    def is_known(self, app: str) -> bool:
        return self._store.get_app(app) is not None

    def is_deleting(self, app: str) -> bool:
        stored = self._store.get_app(app)
        return stored is not None and stored.status == DELETING

    # -- writing -------------------------------------------------------------------

    def put(self, spec: AppSpec) -> None:
        """The spec and, beside it, the images its deploy pinned (``spec.images``)."""
        images = {ref: pin.model_dump() for ref, pin in spec.images.items()}
        self._store.put_app(spec.app, spec_to_dict(spec), images=images)

    def mark_deleting(self, app: str) -> None:
        self._store.mark_deleting(app)

    def delete(self, app: str) -> None:
        self._store.delete_app(app)
        with self._lock:
            self._parsed.pop(app, None)

    # -- internals -----------------------------------------------------------------

    def _spec_of(self, stored: StoredApp) -> AppSpec:
        text = json.dumps([stored.spec, stored.images], sort_keys=True)
        with self._lock:
            cached = self._parsed.get(stored.name)
        if cached and cached[0] == text:
            return cached[1]
        spec = with_pins(spec_from_dict(stored.spec), stored.images)
        with self._lock:
            self._parsed[stored.name] = (text, spec)
        return spec


def with_pins(spec: AppSpec, images: dict) -> AppSpec:
    """``spec`` with the image pins stored beside it (none for an app deployed before pinning)."""
    if not images:
        return spec
    return spec.model_copy(update={"images": {ref: ImagePin(**pin) for ref, pin in images.items()}})
