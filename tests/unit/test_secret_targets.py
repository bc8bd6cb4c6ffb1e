"""File-secret targets are checked as the path the container sees, not as the string written.

Issue 13, break 3: ``//proc/self/environ``, ``/./sys/...``, ``/.``, ``//``, a ``:rw`` suffix
and Flotilla's own ``/run/flotilla`` all passed a string check. Each spelling of the issue is
refused here, every spelling of a refused path is refused (property tests), and two spellings
of one path are one target, reported as given twice.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.errors import SpecError
from flotilla.spec import spec_from_dict
from flotilla.spec.service_parts import MAX_SECRET_FILES, clean_file_path

ISSUE_SPELLINGS = [
    "//proc/self/environ", "/./proc/self/environ", "/./sys/kernel/notes", "//dev/shm/key",
    "/.", "//", "/", "///", "/run/secrets/tls.key:rw", "/run/flotilla/flotilla-shim.sh",
    "/run/flotilla/env/FLOTILLA_APP", "/run/flotilla", "/run/flotilla/", "//run//flotilla/x",
    "/var/run/flotilla/flotilla-shim.sh", "/run/../proc/self/environ", "/run/secrets/a,readonly=false",
    "/run/secrets/tab\tkey", "/run/secrets/nul\0key", "/run/secrets/esc\x1b[0m", "/dev", "/sys",
]
REFUSED_DIRS = ["/proc", "/sys", "/dev", "/dev/shm", "/run/flotilla", "/var/run/flotilla"]


def spec_with(secrets: dict) -> dict:
    return {"app": "shop", "services": {"web": {"image": "x", "secrets": secrets}}}


def problems(secrets: dict) -> list[str]:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(spec_with(secrets))
    return [p.message for p in caught.value.problems]


def accepted(secrets: dict) -> dict[str, str]:
    return spec_from_dict(spec_with(secrets)).services["web"].secrets


@pytest.mark.parametrize("target", ISSUE_SPELLINGS)
def test_every_spelling_of_the_issue_is_refused(target: str) -> None:
    (message,) = problems({target: "tls-key"})
    assert message.startswith("invalid secret file path")


def test_the_colon_is_refused_with_docker_mount_syntax_as_the_reason() -> None:
    (message,) = problems({"/run/secrets/tls.key:rw": "tls-key"})
    assert "Docker's mount syntax" in message


def test_three_spellings_of_one_path_are_one_target_given_twice() -> None:
    found = problems({"/run/secrets/key": "a", "//run/secrets/key": "b", "/run/./secrets//key/": "c"})
    assert len(found) == 2
    assert all("/run/secrets/key is given twice" in m for m in found)
    assert not any("Duplicate mount point" in m for m in found)


def test_a_file_inside_another_file_target_is_refused() -> None:
    (message,) = problems({"/run/secrets/key": "a", "/run/secrets/key/inner": "b"})
    assert "lies inside the file target '/run/secrets/key'" in message


def test_the_clean_path_is_stored() -> None:
    assert accepted({"//run/./secrets//tls.key": "tls-key", "DB": "db"}) == {
        "/run/secrets/tls.key": "tls-key", "DB": "db"}


def test_neighbours_of_reserved_dirs_are_fine() -> None:
    ok = {"/run/flotilla-app/key": "a", "/procfs/key": "b", "/devices/key": "c", "/run/secrets/a.b": "d"}
    assert accepted(ok) == ok


def test_at_most_max_secret_files_file_targets() -> None:
    assert len(accepted({f"/run/secrets/{i}": "k" for i in range(MAX_SECRET_FILES)})) == MAX_SECRET_FILES
    (message,) = problems({f"/run/secrets/{i}": "k" for i in range(MAX_SECRET_FILES + 1)})
    assert f"at most {MAX_SECRET_FILES}" in message


# -- properties -----------------------------------------------------------------------------

segments = st.lists(st.text(alphabet="abc.-_", min_size=1, max_size=4).filter(lambda s: s not in (".", "..")),
                    min_size=0, max_size=4)
noise = st.sampled_from(["/", "//", "/./", "/.//", "///./"])


@st.composite
def spellings(draw, parts: list[str]) -> str:
    """One of many ways to write ``/`` + ``parts``: extra slashes, ``.`` segments, a trailing slash."""
    text = "".join(draw(noise) + part for part in parts) or draw(noise)
    return text + draw(st.sampled_from(["", "/", "/."]))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(REFUSED_DIRS), segments)
def test_every_spelling_of_a_reserved_path_is_refused(data, directory: str, tail: list[str]) -> None:
    target = data.draw(spellings([*directory.strip("/").split("/"), *tail]))
    assert problems({target: "k"})


@settings(max_examples=200, deadline=None)
@given(st.data(), segments.filter(lambda p: p and p[0] not in ("proc", "sys", "dev")))
def test_two_spellings_of_an_accepted_path_are_given_twice(data, parts: list[str]) -> None:
    first, second = data.draw(spellings(parts)), data.draw(spellings(parts))
    if first == second:
        return
    (message,) = problems({first: "a", second: "b"})
    assert f"{'/' + '/'.join(parts)} is given twice" in message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/.ab\0:", max_size=16))
def test_clean_paths_are_a_normal_form(text: str) -> None:
    clean = clean_file_path("/" + text)
    assert clean.startswith("/") and "//" not in clean and "/./" not in clean + "/"
    assert "/../" not in clean + "/" and (clean == "/" or not clean.endswith("/"))
    assert clean_file_path(clean) == clean
