"""Images: the spec's pull and build keys, pins and the config hash, and the daemon's image part.

Pure tests of spec/images.py and spec/validate_images.py, of the pure helpers
of engines/docker/images.py (FROM lines, error sentences), and of
daemon/images.py and daemon/registries.py against an in-memory image source
(tests/support/memory_images.py), a real Store and a real Vault on files.
"""

from __future__ import annotations

import sqlite3

import pytest

from flotilla.cli.images import progress_line
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.images import Images, image_changes
from flotilla.daemon.registries import Registries
from flotilla.daemon.store import Store
from flotilla.engines.docker.images import Credentials, _build_failure, _pull_failure, base_images
from flotilla.errors import BadRequestError, ImageError, RegistryAuthError, SpecError
from flotilla.secrets import MasterKey, Vault
from flotilla.spec import config_hash, parse_spec, spec_from_dict, spec_to_dict
from flotilla.spec.images import (
    build_tag,
    image_to_run,
    registry_reference,
    shown_pin,
    split_reference,
    with_build_contexts,
)
from flotilla.spec.models import ImagePin
from tests.support.memory_images import MemoryImages

REF = "127.0.0.1:5000/shop/web:1"
FIRST = ImagePin(id="sha256:" + "1" * 64, digest="127.0.0.1:5000/shop/web@sha256:" + "a" * 64)
SECOND = ImagePin(id="sha256:" + "2" * 64, digest="127.0.0.1:5000/shop/web@sha256:" + "b" * 64)


def spec(text: str):
    return parse_spec(text, filename="f.yaml", environ={})


def web(image: str = REF, extra: str = "", top: str = "") -> str:
    return f"app: shop\n{top}services:\n  web:\n    image: {image}\n{extra}"


# -- the spec ------------------------------------------------------------------------------

@pytest.mark.parametrize(("ref", "expected"), [
    ("redis:7", ("docker.io", "redis", "7")),
    ("redis", ("docker.io", "redis", "latest")),
    ("127.0.0.1:5000/shop/web:1", ("127.0.0.1:5000", "127.0.0.1:5000/shop/web", "1")),
    ("localhost/web", ("localhost", "localhost/web", "latest")),
    ("registry.example.com/team/api@sha256:ab", ("registry.example.com", "registry.example.com/team/api",
                                                 "sha256:ab")),
    ("team/api:2", ("docker.io", "team/api", "2")),
])
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_pull_and_build_keys_round_trip():
    loaded = spec(web(extra="    pull: always\n    build: {context: /src, dockerfile: web/Dockerfile, "
                            "args: {A: 1, B: true}, target: run}\n", top="pull: never\n"))
    svc = loaded.services["web"]
    assert (loaded.pull, svc.pull, svc.build.args, svc.build.target) == ("never", "always", {"A": "1", "B": "true"},
                                                                         "run")
    assert spec_from_dict(spec_to_dict(loaded)) == loaded
    assert spec(web(extra="    build: ./web\n")).services["web"].build.context == "./web"


@pytest.mark.parametrize(("extra", "message"), [
    ("    pull: sometimes\n", "services.web.pull: must be one of missing, always, never"),
    ("    build: {dockerfile: D}\n", "services.web.build.context: missing required key 'context'"),
    ("    build: {context: ., dockerfile: ../D}\n", "services.web.build.dockerfile: must be a path inside"),
    ("    build: {context: ., args: {A: [1]}}\n", "services.web.build.args.A: expected a string or number"),
    ("    build: {context: ., cache: true}\n", "services.web.build.cache: unknown key 'cache'"),
])
def test_bad_image_keys_are_problems(extra, message):
    with pytest.raises(SpecError) as caught:
        spec(web(extra=extra))
    assert any(message in str(p) for p in caught.value.problems), caught.value.problems


def test_contexts_become_absolute_against_the_spec_folder():
    loaded = with_build_contexts(spec(web(extra="    build: {context: ../src/./web}\n")), base="/work/app")
    assert loaded.services["web"].build.context == "/work/src/web"


def test_pins_decide_what_runs_and_the_config_hash():
    plain = spec(web())
    first = plain.model_copy(update={"images": {REF: FIRST}})
    moved = plain.model_copy(update={"images": {REF: SECOND}})
    retagged = spec(web("127.0.0.1:5000/shop/web:same")).model_copy(
        update={"images": {"127.0.0.1:5000/shop/web:same": FIRST}})
    assert image_to_run(first, first.services["web"]) == FIRST.id
    assert image_to_run(plain, plain.services["web"]) == REF
    assert config_hash(first, "web") != config_hash(moved, "web")  # the tag moved: the service rolls
    assert config_hash(first, "web") == config_hash(retagged, "web")  # a new tag, the same bytes: it does not
    assert registry_reference(first, first.services["web"]) == FIRST.digest
    assert shown_pin(REF, FIRST) == f"{REF}@sha256:{'a' * 12}"
    assert shown_pin("local:1", ImagePin(id="sha256:" + "c" * 64)) == f"local:1@sha256:{'c' * 12}"


def test_build_tag_names_the_inputs():
    assert build_tag("shop-web:1", "f" * 64) == "shop-web:src-" + "f" * 16
    assert build_tag("127.0.0.1:5000/web", "0" * 64) == "127.0.0.1:5000/web:src-" + "0" * 16


# -- the Docker boundary's pure helpers ---------------------------------------------------------

def test_base_images_follow_args_and_skip_stages():
    dockerfile = ("ARG BASE=python:3.12-slim\nFROM $BASE AS deps\nRUN true\nFROM deps\nFROM scratch\n"
                  "FROM --platform=linux/amd64 ${OTHER} AS x\n")
    assert base_images(dockerfile, {"OTHER": "redis:7"}) == ["python:3.12-slim", "redis:7"]
    assert base_images(dockerfile, {"BASE": "flotilla/python:bookworm", "OTHER": "x:1"})[0] == \
        "flotilla/python:bookworm"


@pytest.mark.parametrize(("answer", "kind", "words"), [
    ("unauthorized: authentication required", RegistryAuthError, "run `flotilla registry login r:1`"),
    ("manifest for r:1/x:nope not found: manifest unknown", ImageError, "has no such repository or tag"),
    ("Get http://r:1/v2/: dial tcp 127.0.0.1:1: connect: connection refused", ImageError, "cannot be reached"),
    ("write /var/lib/docker/x: no space left on device", ImageError, "the disk is full"),
])
def test_pull_failures_are_one_sentence_with_what_to_do(answer, kind, words):
    error = _pull_failure("r:1/x:1", "r:1", answer, authed=True)
    assert type(error) is kind and words in error.message and error.message.startswith("pulling r:1/x:1 failed: ")
    assert "\n" not in error.message


def test_a_failed_build_names_its_step_and_output():
    output = ["Step 3/5 : RUN make", " ---> Running in 0123", "cc: error: no such file"]
    error = _build_failure("shop/web", "The command '/bin/sh -c make' returned a non-zero code: 2", output)
    assert "failed at Step 3/5 : RUN make" in error.message and "cc: error: no such file" in error.message


def test_credentials_never_show_their_password():
    login = Credentials(username="ci", password="hunter2-secret")
    assert "hunter2-secret" not in repr(login) and "hunter2-secret" not in str(login)


# -- the daemon's image part --------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    made = Store(tmp_path / "state.db", clock=lambda: 1.0)
    yield made
    made.close()


def prepare(images: Images, text: str, *, dry_run: bool = False, pinned=None):
    return images.prepare(with_build_contexts(spec(text), base="/src"), runtime_of=lambda s: s, dry_run=dry_run,
                          progress=lambda _step: None, pinned=pinned)


def test_missing_pulls_once_always_pulls_again_never_refuses(store):
    source = MemoryImages()
    source.registry[REF] = FIRST
    images = Images(source=source, store=store, registries=None)
    assert prepare(images, web()).images == {REF: FIRST}
    assert prepare(images, web()).images == {REF: FIRST} and len(source.pulls) == 1
    source.registry[REF] = SECOND
    assert prepare(images, web(top="pull: always\n")).images == {REF: SECOND} and len(source.pulls) == 2
    with pytest.raises(SpecError, match="image 'gone:1' is not on this host and pull: never"):
        prepare(images, web("gone:1", extra="    pull: never\n"))
    assert [r for r, _, kind in store.recorded_images() if kind == "pulled"] == [REF, REF]


def test_cache_nodes_pull_only_when_missing_under_an_app_wide_always():
    from flotilla.spec.images import pull_policy

    loaded = spec(web(top="pull: always\n"))
    node = loaded.services["web"].model_copy(update={"addon": "cache:sessions"})
    assert pull_policy(loaded, loaded.services["web"]) == "always" and pull_policy(loaded, node) == "missing"


def test_missing_keeps_the_running_pin_while_its_image_is_here(store):
    source = MemoryImages()
    source.local["other:tag"] = FIRST  # the pinned bytes are here, the tag is not
    images = Images(source=source, store=store, registries=None)
    assert prepare(images, web(), pinned={REF: FIRST}).images == {REF: FIRST}
    assert source.pulls == []


def test_plan_asks_the_registry_for_pull_always_and_pulls_nothing(store):
    source = MemoryImages()
    source.local[REF] = FIRST
    source.registry[REF] = SECOND
    images = Images(source=source, store=store, registries=None)
    assert prepare(images, web(top="pull: always\n"), dry_run=True, pinned={REF: FIRST}).images == {}
    source.registry[REF] = FIRST
    assert prepare(images, web(top="pull: always\n"), dry_run=True, pinned={REF: FIRST}).images == {REF: FIRST}
    assert source.pulls == []


def test_a_failed_pull_raises_and_records_nothing(store):
    source = MemoryImages()
    source.fail_with = ImageError("pulling x failed: no; do y")
    with pytest.raises(ImageError):
        prepare(Images(source=source, store=store, registries=None), web())
    assert store.recorded_images() == []


def test_builds_are_tagged_by_inputs_and_skipped_when_unchanged(store):
    source = MemoryImages()
    source.sources["/src/web"] = "v1"
    images = Images(source=source, store=store, registries=None)
    text = web("shop-web:1", extra="    build: ./web\n")
    first = prepare(images, text)
    tag = first.services["web"].image
    assert tag.startswith("shop-web:src-") and source.builds == [tag] and first.images[tag] == source.local[tag]
    assert prepare(images, text).services["web"].image == tag and source.builds == [tag]
    source.sources["/src/web"] = "v2"
    latest = prepare(images, text)
    assert latest.services["web"].image != tag and len(source.builds) == 2
    assert [c.service for c in image_changes(first, latest)] == ["web"]
    assert image_changes(latest, prepare(images, text)) == []  # the same inputs again: nothing changes


def test_prune_removes_only_unused_images_flotilla_recorded(store):
    source = MemoryImages()
    source.registry[REF] = FIRST
    images = Images(source=source, store=store, registries=None)
    apps = AppRepository(store)
    deployed = prepare(images, web())
    apps.put(deployed)
    source.local["mine-but-unused:1"] = SECOND
    store.record_image("mine-but-unused:1", SECOND.id, kind="built")
    source.local["users-own:1"] = ImagePin(id="sha256:" + "9" * 64)
    result = images.prune(apps)
    assert [r["image"] for r in result["removed"]] == ["mine-but-unused:1"]
    assert set(source.local) == {REF, "users-own:1"}
    assert AppRepository(store).get("shop").images == {REF: FIRST}  # pins survive the store


def test_image_changes_name_the_moved_tag():
    before = spec(web()).model_copy(update={"images": {REF: FIRST}})
    after = spec(web()).model_copy(update={"images": {REF: SECOND}})
    (change,) = image_changes(before, after)
    assert change.before == shown_pin(REF, FIRST) and change.image == shown_pin(REF, SECOND)


def test_an_old_store_gains_the_images_column(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE apps (name TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL DEFAULT "
               "'active', updated REAL NOT NULL)")
    db.execute("INSERT INTO apps VALUES ('shop', '{}', 'active', 1.0)")
    db.commit()
    db.close()
    store = Store(path, clock=lambda: 2.0)
    assert store.get_app("shop").images == {}
    store.close()


# -- registry logins ------------------------------------------------------------------------

class Checker:
    def __init__(self, good: str) -> None:
        self.good = good

    def verify_login(self, registry, auth):
        if auth.password != self.good:
            raise RegistryAuthError(f"registry {registry} refused the login (unauthorized); check it")


def test_logins_are_checked_kept_listed_without_passwords_and_removed(tmp_path):
    with Vault(tmp_path / "vault.db", MasterKey(bytes(range(32))), clock=lambda: 3.0) as vault:
        registries = Registries(vault=vault, checker=Checker("right"))
        with pytest.raises(RegistryAuthError):
            registries.login("127.0.0.1:5000", username="ci", password="wrong")
        assert registries.list() == []
        registries.login("127.0.0.1:5000", username="ci", password="right")
        assert registries.list() == [{"registry": "127.0.0.1:5000", "username": "ci", "since": 3.0}]
        assert registries.credentials("127.0.0.1:5000") == Credentials("ci", "right")
        assert vault.list("shop") == []  # not an app's secret
        with pytest.raises(BadRequestError):
            registries.login("https://x/", username="ci", password="right")
        registries.logout("127.0.0.1:5000")
        assert registries.credentials("127.0.0.1:5000") is None


def test_progress_lines_look_like_compose():
    assert progress_line({"image": REF, "layer": "", "status": "pulling"}) == f"{REF} pulling"
    line = progress_line({"image": REF, "layer": "3f4a1b2c5d6e", "status": "Downloading", "current": 1_200_000,
                          "total": 3_400_000})
    assert line.startswith("  3f4a1b2c5d6e Downloading [=======>") and line.endswith("1.2MB/3.4MB")
