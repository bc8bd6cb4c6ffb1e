"""The spec's volume rules: each problem named with its path and fix, nothing two replicas could share.

spec/volumes.py refuses a host path without the opt-in, a writable host path with more than one
replica, autoscale on a service with volumes, a bad schedule and a restore command without a
backup command; the short and long forms, and the spec's round trip through its dict form, hold
for any valid volume (a property test).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.daemon.operations import _check_counts
from flotilla.daemon.reconciler import desired_state
from flotilla.errors import ConflictError, SpecError
from flotilla.spec import AppSpec, spec_from_dict, spec_to_dict
from flotilla.spec.hashing import config_hash
from flotilla.spec.models import BackupSpec, VolumeSpec


def service(**keys) -> dict:
    return {"app": "shop", "services": {"db": {"image": "flotilla/postgres:15", **keys}}}


def problems(**keys) -> list[str]:
    with pytest.raises(SpecError) as raised:
        spec_from_dict(service(**keys))
    return [f"{p.path}: {p.message}; {p.hint}" for p in raised.value.problems]


def test_short_and_long_forms():
    spec = spec_from_dict(service(volumes={"data": "/var/lib/db//", "seed": {"path": "/seed", "read_only": True}},
                                  backup={"command": "pg_dump -Fc app", "schedule": "@daily"}))
    db = spec.services["db"]
    assert db.volumes == {"data": VolumeSpec(path="/var/lib/db"), "seed": VolumeSpec(path="/seed", read_only=True)}
    assert db.backup == BackupSpec(command=("pg_dump", "-Fc", "app"), schedule="@daily")


def test_a_host_path_needs_the_opt_in():
    (found,) = problems(volumes={"up": {"path": "/up", "bind": "/srv/up"}})
    assert found.startswith("services.db.volumes.up.bind: volume up mounts host path /srv/up, which Flotilla "
                            "does not own") and "add allow_host_paths: true" in found
    ok = spec_from_dict(service(volumes={"up": {"path": "/up", "bind": "/srv/up"}}, allow_host_paths=True))
    assert ok.services["db"].volumes["up"].bind == "/srv/up" and ok.services["db"].named_volumes == {}


def test_two_replicas_never_write_one_host_path():
    (found,) = problems(replicas=2, allow_host_paths=True, volumes={"up": {"path": "/up", "bind": "/srv/up"}})
    assert found.startswith("services.db.replicas: 2 replicas would all write host path /srv/up")
    spec_from_dict(service(replicas=2, allow_host_paths=True,
                           volumes={"up": {"path": "/up", "bind": "/srv/up", "read_only": True}}))
    spec_from_dict(service(replicas=3, volumes={"data": "/data"}))  # named: one per slot


def test_scale_refuses_more_than_one_writer_of_a_host_path():
    spec = spec_from_dict(service(allow_host_paths=True, volumes={"up": {"path": "/up", "bind": "/srv/up"}}))
    with pytest.raises(ConflictError, match="2 replicas would all write"):
        _check_counts(spec, {"db": 2})
    _check_counts(spec, {"db": 1})


@pytest.mark.parametrize(("keys", "expected"), [
    ({"volumes": {"data": "/data"}, "autoscale": {"min": 1, "max": 3, "target": {"cpu": 50}},
      "resources": {"cpus": 1}},
     "services.db.autoscale: a service with volumes cannot autoscale"),
    ({"volumes": {"data": "relative"}}, "services.db.volumes.data: invalid mount path 'relative': it is not absolute"),
    ({"volumes": {"data": "/proc/x"}}, "services.db.volumes.data: invalid mount path '/proc/x'"),
    ({"volumes": {"Data": "/data"}}, "services.db.volumes.Data: invalid volume name 'Data'"),
    ({"volumes": {"a": "/d", "b": "/d/"}}, "services.db.volumes.b.path: /d is also the path of volume a"),
    ({"allow_host_paths": True, "volumes": {"a": {"path": "/d", "bind": "/"}}},
     "services.db.volumes.a.bind: host path / would give the service the host itself"),
    ({"allow_host_paths": True, "volumes": {"a": {"path": "/d", "bind": "/var/run/docker.sock"}}},
     "services.db.volumes.a.bind: host path /var/run/docker.sock would give the service the host itself"),
    ({"volumes": {"data": "/d"}, "backup": {"schedule": "every night"}},
     "services.db.backup.schedule: 'every night' has 2 fields"),
    ({"volumes": {"data": "/d"}, "backup": {"restore_command": ["pg_restore"]}},
     "services.db.backup.restore_command: restore_command restores what command wrote, and there is no command"),
    ({"backup": {"keep": 3}}, "services.db.backup: without command, a backup archives the service's volumes"),
    ({"volumes": {"data": "/d"}, "backup": {"keep": 0}}, "services.db.backup.keep: "),
])
def test_each_refusal_names_its_path(keys, expected):
    found = problems(**keys)
    assert any(p.startswith(expected) for p in found), found


def test_a_writable_volume_makes_rollouts_recreate_and_a_read_only_one_rolls():
    def recreate(volumes: dict) -> bool:
        (desired,) = desired_state(spec_from_dict(service(volumes=volumes))).services
        return desired.recreate

    assert recreate({"data": "/data"}) and recreate({"data": "/data", "seed": {"path": "/s", "read_only": True}})
    assert not recreate({"seed": {"path": "/s", "read_only": True}})


def test_a_cache_node_keeps_its_hash_and_options_change_it():
    plain = spec_from_dict(service(volumes={"data": "/data"}))
    assert config_hash(plain, "db") == config_hash(
        plain.model_copy(update={"services": {"db": plain.services["db"].model_copy(
            update={"volumes": {"data": VolumeSpec(path="/data")}})}}), "db")
    read_only = spec_from_dict(service(volumes={"data": {"path": "/data", "read_only": True}}))
    assert config_hash(plain, "db") != config_hash(read_only, "db")
    backed_up = spec_from_dict(service(volumes={"data": "/data"}, backup={"command": ["pg_dump"]}))
    assert config_hash(plain, "db") == config_hash(backed_up, "db")  # a backup command is not in the container


names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
paths = st.lists(st.from_regex(r"[a-z][a-z0-9_.-]{0,6}", fullmatch=True), min_size=1, max_size=3).map(
    lambda parts: "/srv/" + "/".join(parts))


@given(st.dictionaries(names, st.tuples(paths, st.booleans()), min_size=1, max_size=4))
def test_any_valid_volumes_round_trip_through_the_dict_form(volumes):
    by_path = {path: (name, ro) for name, (path, ro) in volumes.items()}  # distinct paths only
    body = {name: {"path": path, "read_only": ro} for path, (name, ro) in by_path.items()}
    spec = spec_from_dict(service(volumes=body))
    assert isinstance(spec, AppSpec) and spec_from_dict(spec_to_dict(spec)) == spec
    assert {n: (v.path, v.read_only) for n, v in spec.services["db"].volumes.items()} == {
        name: (path, ro) for path, (name, ro) in by_path.items()}


values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=8)
keys = st.sampled_from(["volumes", "allow_host_paths", "backup", "replicas", "autoscale"])


@settings(max_examples=400)
@given(st.dictionaries(keys, values | st.dictionaries(st.sampled_from(["data", "path", "bind", "read_only",
                                                                        "command", "schedule", "keep"]), values,
                                                       max_size=3), max_size=4))
def test_any_input_is_a_spec_or_a_spec_error(keys_and_values):
    try:
        spec_from_dict(service(**keys_and_values))
    except SpecError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
