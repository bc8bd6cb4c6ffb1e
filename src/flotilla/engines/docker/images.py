"""Images on the Docker host: resolve, pull, build, remove, and check a registry login.

A module of its own beside engine.py (the replicas' engine) because images
have their own life: they come from registries with credentials, or from
source, and each step streams progress. It is the second importer of the
Docker SDK (see ``.importlinter``), and like engine.py it lets no SDK error
out: a failed pull or build becomes an ``ImageError`` whose one sentence says
what failed and what to do. Credentials reach Docker only as the SDK's
``auth_config`` of one call: nothing here reads or writes ~/.docker/config.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import docker.utils.build
import requests.exceptions

from flotilla.engines.docker.engine import UNAVAILABLE_HINT, DockerEngine
from flotilla.errors import BuildError, EngineUnavailableError, ImageError, RegistryAuthError
from flotilla.spec.images import split_reference
from flotilla.spec.models import BuildSpec, ImagePin

DETAIL_LIMIT = 300
STEP_LINES = 12  # lines of a failed step's output put in the error
_STEP = re.compile(r"^Step \d+/\d+ : ")
_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Credentials:
    """A registry login; the password never shows in a repr, a log line or an error."""

    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict:
        return {"username": self.username, "password": self.password}


@dataclass(frozen=True)
class Progress:
    """One step of a pull (per layer, in Docker's words) or one line of a build's output."""

    image: str
    status: str
    layer: str = ""
    current: int | None = None
    total: int | None = None

    def to_dict(self) -> dict:
        return {"image": self.image, "layer": self.layer, "status": self.status,
                "current": self.current, "total": self.total}


ProgressSink = Callable[[Progress], None]


class DockerImages:
    """The host's images; ``api`` gives the engine's shared client, ``fresh`` a new one (for logins)."""

    def __init__(self, *, api: Callable[[], docker.APIClient], fresh: Callable[[], docker.APIClient]) -> None:
        self._api = api
        self._fresh = fresh

    @classmethod
    def of(cls, engine: DockerEngine) -> DockerImages:
        return cls(api=engine.sdk, fresh=engine.fresh_sdk)

    def resolve(self, ref: str) -> ImagePin | None:
        """The local image ``ref`` names (its id and registry digest), or None when it is not here."""
        with _unavailable():
            try:
                found = self._api().inspect_image(ref)
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                raise ImageError(f"inspecting image {ref} failed: {_detail(exc)}; check the reference") from exc
        return ImagePin(id=found["Id"], digest=_repo_digest(ref, found.get("RepoDigests") or []))

    def pull(self, ref: str, *, auth: Credentials | None, progress: ProgressSink) -> ImagePin:
        """Pull ``ref``, reporting each layer's progress; the pulled image, pinned."""
        registry, repository, tag = split_reference(ref)
        with _unavailable():
            try:
                stream = self._api().pull(repository, tag=tag, stream=True, decode=True,
                                          auth_config=auth.auth_config() if auth else None)
                for event in stream:
                    if "error" in event:
                        raise _pull_failure(ref, registry, event["error"], authed=auth is not None)
                    progress(_pull_progress(ref, event))
            except docker.errors.APIError as exc:
                raise _pull_failure(ref, registry, _detail(exc), authed=auth is not None) from exc
        pin = self.resolve(ref)
        if pin is None:
            raise ImageError(f"pulling {ref} reported success but the image is not on this host; "
                             f"run `flotilla up` again")
        return pin

    def remote_digest(self, ref: str, *, auth: Credentials | None) -> str | None:
        """The manifest digest ``ref`` has on its registry now, without pulling (for ``plan``); None if unknown."""
        registry = split_reference(ref)[0]
        with _unavailable():
            try:
                found = self._api().inspect_distribution(ref, auth_config=auth.auth_config() if auth else None)
            except docker.errors.APIError as exc:
                raise _pull_failure(ref, registry, _detail(exc), authed=auth is not None) from exc
        return (found.get("Descriptor") or {}).get("digest")

    def verify_login(self, registry: str, auth: Credentials) -> None:
        """Ask the registry (through Docker) whether ``auth`` is good; RegistryAuthError with its answer if not.

        A client of its own, closed after: the SDK remembers a successful login
        in its client, and the engine's shared one must use only what each call hands it.
        """
        client = self._fresh()
        try:
            with _unavailable():
                client.login(username=auth.username, password=auth.password, registry=registry, reauth=True)
        except docker.errors.APIError as exc:
            raise _login_failure(registry, _detail(exc)) from exc
        finally:
            client.close()

    def inputs_hash(self, build: BuildSpec) -> str:
        """sha256 of what a build reads: the context's files (less .dockerignore), the Dockerfile, args,
        target, and the id of each local base image it starts FROM."""
        root = _context_root(build)
        digest = hashlib.sha256()
        digest.update(json.dumps({"dockerfile": build.dockerfile, "args": build.args, "target": build.target},
                                 sort_keys=True).encode())
        for rel in sorted(docker.utils.build.exclude_paths(str(root), _ignore_patterns(root), build.dockerfile)):
            path = root / rel
            if path.is_file() and not path.is_symlink():
                digest.update(f"\0{rel}\0{os.access(path, os.X_OK)}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        for base in base_images(_read_dockerfile(root, build), build.args):
            pin = self.resolve(base)
            digest.update(f"\0FROM {base} {pin.id if pin else '-'}".encode())
        return digest.hexdigest()

    def build(self, *, build: BuildSpec, tag: str, what: str, progress: ProgressSink) -> ImagePin:
        """Build ``tag`` from ``build``, streaming each output line; a failure tags nothing."""
        root = _context_root(build)
        output: list[str] = []
        with _unavailable():
            try:
                stream = self._api().build(
                    path=str(root), dockerfile=build.dockerfile, tag=tag, buildargs=dict(build.args) or None,
                    target=build.target, rm=True, forcerm=True, decode=True, pull=False, use_config_proxy=False,
                )
                for event in stream:
                    _follow_build(event, what=what, output=output, progress=progress)
            except docker.errors.APIError as exc:
                raise _build_failure(what, _detail(exc), output) from exc
        pin = self.resolve(tag)
        if pin is None:
            raise BuildError(f"building {what} finished without image {tag}; run `flotilla build` again")
        return pin

    def remove(self, ref: str, *, expected_id: str) -> bool:
        """Untag ``ref`` (its image goes with its last tag) if it still names ``expected_id`` and no
        container uses it; False when it was left."""
        pin = self.resolve(ref)
        if pin is None or pin.id != expected_id:
            return False
        with _unavailable():
            try:
                self._api().remove_image(ref)
            except docker.errors.APIError:  # in use by a container (409), or gone meanwhile
                return False
        return True


def base_images(dockerfile: str, args: dict[str, str]) -> list[str]:
    """The images a Dockerfile starts FROM (not its own stages, not scratch), with ARGs substituted."""
    values = dict(args)
    stages: set[str] = set()
    bases: list[str] = []
    for line in dockerfile.splitlines():
        arg = _ARG.match(line)
        if arg and arg.group(1) not in values and arg.group(2) is not None:
            values[arg.group(1)] = arg.group(2)
        found = _FROM.match(line)
        if found:
            image = _VAR.sub(lambda m: values.get(m.group(1), ""), found.group(1))
            if image.lower() != "scratch" and image not in stages and image not in bases:
                bases.append(image)
            if found.group(2):
                stages.add(found.group(2))
    return bases


# -- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        if isinstance(exc, docker.errors.APIError):
            raise
        raise EngineUnavailableError(UNAVAILABLE_HINT.format(where=f" ({exc})")) from exc


def _detail(exc: docker.errors.APIError | str) -> str:
    text = exc if isinstance(exc, str) else str(exc.explanation or exc)
    first = " ".join(text.strip().split())
    return first[:DETAIL_LIMIT] + ("..." if len(first) > DETAIL_LIMIT else "")


def _repo_digest(ref: str, repo_digests: list[str]) -> str | None:
    repository = split_reference(ref)[1]
    for candidate in repo_digests:
        if candidate.partition("@")[0] in (repository, f"docker.io/{repository}", f"docker.io/library/{repository}"):
            return candidate
    return repo_digests[0] if repo_digests and "@" in ref else None


def _pull_progress(ref: str, event: dict) -> Progress:
    detail = event.get("progressDetail") or {}
    return Progress(image=ref, layer=event.get("id", "") if event.get("id") != split_reference(ref)[2] else "",
                    status=event.get("status", ""), current=detail.get("current"), total=detail.get("total"))


_AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "401")
_MISSING_WORDS = ("manifest unknown", "not found", "name unknown", "does not exist")
_UNREACHABLE_WORDS = ("connection refused", "no such host", "dial tcp", "i/o timeout", "timeout",
                      "connection reset", "server gave http response")


def _pull_failure(ref: str, registry: str, message: str, *, authed: bool) -> ImageError:
    detail = _detail(message)
    lower = detail.lower()
    if "no space left" in lower:
        return ImageError(f"pulling {ref} failed: the disk is full ({detail}); free space (`flotilla images "
                          f"prune`, `docker system df`) and run `flotilla up` again")
    if any(word in lower for word in _AUTH_WORDS):
        whose = "the credentials stored for it" if authed else "a pull without credentials"
        return RegistryAuthError(f"pulling {ref} failed: registry {registry} refused {whose} ({detail}); "
                                 f"run `flotilla registry login {registry}` with a valid password or token")
    if any(word in lower for word in _UNREACHABLE_WORDS):
        return ImageError(f"pulling {ref} failed: registry {registry} cannot be reached ({detail}); start it "
                          f"or fix the registry's name in the image, then run `flotilla up` again")
    if any(word in lower for word in _MISSING_WORDS):
        return ImageError(f"pulling {ref} failed: registry {registry} has no such repository or tag ({detail}); "
                          f"check the image's name and tag in the spec, or push the image first")
    return ImageError(f"pulling {ref} failed: {detail}; fix the cause and run `flotilla up` again")


def _login_failure(registry: str, detail: str) -> ImageError:
    lower = detail.lower()
    if any(word in lower for word in _UNREACHABLE_WORDS):
        return ImageError(f"logging in to registry {registry} failed: it cannot be reached ({detail}); "
                          f"check the host and port, and that the registry runs")
    return RegistryAuthError(f"registry {registry} refused the login ({detail}); check the user name and "
                             f"the password or token, then run `flotilla registry login {registry}` again")


def _follow_build(event: dict, *, what: str, output: list[str], progress: ProgressSink) -> None:
    if "error" in event:
        raise _build_failure(what, event["error"], output)
    text = event.get("stream") or event.get("status") or ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if _STEP.match(line):
            output.clear()  # keep only the current step's output
        output.append(line.rstrip())
        progress(Progress(image=what, status=line.rstrip()))


def _build_failure(what: str, message: str, output: list[str]) -> BuildError:
    step = output[0] if output and _STEP.match(output[0]) else "its first step"
    shown = " | ".join(line.strip() for line in output[1:][-STEP_LINES:])
    tail = f"; the step printed: {shown}" if shown else ""
    return BuildError(f"building {what} failed at {step}: {_detail(message)}{tail}; fix the Dockerfile or the "
                      f"source and build again (nothing was changed)")


def _context_root(build: BuildSpec) -> Path:
    root = Path(build.context)
    if not root.is_absolute():
        raise ImageError(f"build context {build.context} is not an absolute path; send specs through "
                         f"`flotilla up`, which resolves it against the spec file's folder")
    if not root.is_dir():
        raise ImageError(f"build context {build.context} is not a folder on this host; fix build.context")
    return root


def _read_dockerfile(root: Path, build: BuildSpec) -> str:
    try:
        return (root / build.dockerfile).read_text(errors="replace")
    except OSError as exc:
        raise ImageError(f"cannot read the Dockerfile {root / build.dockerfile} ({exc.strerror}); "
                         f"fix build.dockerfile (a path inside the context)") from exc


def _ignore_patterns(root: Path) -> list[str]:
    try:
        text = (root / ".dockerignore").read_text()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
