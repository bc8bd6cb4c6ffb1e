"""Issue 13, break 10: replicas ran as root with every capability, no pids limit and core dumps on.

Each replica's container now drops every capability, sets no-new-privileges,
a pids limit and ``ulimit core 0:0``; the spec's ``user``, ``read_only``,
``cap_add`` and ``pids_limit`` (named as Compose names them) are the
exceptions, validated with clear messages. Checked here on plain data: the
container config (engines/docker/containers.py), the spec's rules, the cache
nodes, the Kubernetes securityContext, and the daemon's warning when Docker
does not remap user namespaces (break 2).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flotilla.addons.redis_cluster.nodes import with_cache_nodes
from flotilla.daemon.server import NO_USERNS_WARNING, _host_warnings
from flotilla.engines.docker.containers import TMP_OPTIONS, replica_container_config
from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.errors import ConflictError, EngineUnavailableError, SpecError
from flotilla.spec import load_spec, parse_spec, spec_from_dict, spec_to_dict

SHOP = Path(__file__).resolve().parents[2] / "examples/shop/flotilla.yaml"
SPEC = """\
app: shop
services:
  plain:
    image: shop-web:1
  strict:
    image: shop-web:1
    user: "65534:65534"
    read_only: true
    cap_add: [net_bind_service, CAP_NET_RAW]
    pids_limit: 64
"""


class Api:
    """What ``create_kwargs`` asks of docker's APIClient, returning its keywords as given."""

    def create_host_config(self, **kwargs) -> dict:
        return kwargs


def host_and_container(spec, service: str) -> tuple[dict, dict]:
    config = replica_container_config(spec=spec, service=service, index=1, config_hash="abcdef123456")
    kwargs = config.create_kwargs(Api())
    return kwargs["host_config"], kwargs


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, filename="flotilla.yaml", environ={})
    return [str(p) for p in caught.value.problems]


def service_with(lines: str) -> str:
    return f"app: shop\nservices:\n  web:\n    image: shop-web:1\n{lines}"


# -- the container -----------------------------------------------------------------------------

def test_every_replica_is_hardened_by_default():
    host, container = host_and_container(parse_spec(SPEC, filename="f.yaml", environ={}), "plain")
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] is None
    assert host["security_opt"] == ["no-new-privileges"]
    assert host["pids_limit"] == 1024
    assert host["ulimits"] == [{"Name": "core", "Soft": 0, "Hard": 0}]
    assert host["read_only"] is False and host["tmpfs"] is None
    assert container["user"] is None  # the image's USER


def test_each_spec_key_reaches_the_container():
    host, container = host_and_container(parse_spec(SPEC, filename="f.yaml", environ={}), "strict")
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] == ["NET_BIND_SERVICE", "NET_RAW"]
    assert host["pids_limit"] == 64
    assert host["read_only"] is True and host["tmpfs"] == {"/tmp": TMP_OPTIONS}
    assert "nosuid" in TMP_OPTIONS and "nodev" in TMP_OPTIONS
    assert container["user"] == "65534:65534"
    assert host["security_opt"] == ["no-new-privileges"]


def test_cache_nodes_run_hardened_with_a_read_only_root():
    spec = with_cache_nodes(load_spec(SHOP))
    host, container = host_and_container(spec, "sessions-0-0")
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] is None
    assert host["security_opt"] == ["no-new-privileges"] and host["pids_limit"] == 1024
    assert host["ulimits"] == [{"Name": "core", "Soft": 0, "Hard": 0}]
    assert host["read_only"] is True


def test_the_demo_runs_read_only_as_nobody():
    spec = load_spec(SHOP)
    for name in ("web", "catalog", "cart"):
        host, container = host_and_container(spec, name)
        assert host["read_only"] is True and container["user"] == "65534:65534", name


# -- the spec ----------------------------------------------------------------------------------

def test_keys_round_trip_through_the_daemon_api():
    spec = parse_spec(SPEC, filename="f.yaml", environ={})
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert "pids_limit" not in spec_to_dict(spec)["services"]["plain"]  # defaults are left out


@pytest.mark.parametrize(("value", "clean"), [
    ("65534", "65534"), (65534, "65534"), ('"1000:1000"', "1000:1000"), ("nobody", "nobody"),
    ("www-data:www-data", "www-data:www-data"), ('"0"', "0"),
])
def test_valid_users(value, clean):
    spec = parse_spec(service_with(f"    user: {value}\n"), filename="f.yaml", environ={})
    assert spec.services["web"].user == clean


@pytest.mark.parametrize(("lines", "expected"), [
    ('    user: "1:2:3"\n', "flotilla.yaml:5:11: services.web.user: invalid user '1:2:3'"),
    ('    user: "70000"\n', "flotilla.yaml:5:11: services.web.user: invalid user '70000'"),
    ('    user: "bad user"\n', "flotilla.yaml:5:11: services.web.user: invalid user 'bad user'"),
    ('    user: ":1"\n', "flotilla.yaml:5:11: services.web.user: invalid user ':1'"),
    ("    user: [1]\n", "flotilla.yaml:5:11: services.web.user: expected a string, got a list"),
    ("    read_only: yes please\n",
     "flotilla.yaml:5:16: services.web.read_only: expected true or false, got a string ('yes please')"),
    ("    cap_add: [NET_BIND]\n",
     "flotilla.yaml:5:15: services.web.cap_add.0: unknown capability 'NET_BIND'; did you mean 'NET_BIND_SERVICE'?"),
    ("    cap_add: [FLY]\n",
     "flotilla.yaml:5:15: services.web.cap_add.0: unknown capability 'FLY'; use a Linux capability from "
     "capabilities(7), e.g. NET_BIND_SERVICE"),
    ("    cap_add: [ALL]\n",
     "flotilla.yaml:5:15: services.web.cap_add.0: cap_add: ALL would give back every capability; list only the "
     "capabilities the service needs, e.g. [NET_BIND_SERVICE]"),
    ("    cap_add: [NET_RAW, cap_net_raw]\n",
     "flotilla.yaml:5:24: services.web.cap_add.1: capability NET_RAW is listed twice; list each capability once"),
    ("    cap_add: NET_RAW\n",
     "flotilla.yaml:5:14: services.web.cap_add: expected a list, got a string ('NET_RAW'); give a list of Linux "
     "capability names, e.g. [NET_BIND_SERVICE]"),
    ("    pids_limit: 0\n",
     "flotilla.yaml:5:17: services.web.pids_limit: must be between 1 and 4194304, got 0; give the most processes "
     "and threads a replica may have at once, from 1 to 4194304 (default 1024)"),
    ("    pids_limit: -1\n", "flotilla.yaml:5:17: services.web.pids_limit: must be between 1 and 4194304, got -1"),
])
def test_bad_values_are_reported_with_what_to_do(lines, expected):
    found = problems(service_with(lines))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_every_problem_of_a_service_at_once():
    found = problems(service_with('    user: "a:b:c"\n    cap_add: [NOPE]\n    pids_limit: "many"\n'))
    assert [p.split(": ")[1] for p in found] == ["services.web.user", "services.web.cap_add.0",
                                                 "services.web.pids_limit"]


# -- Kubernetes --------------------------------------------------------------------------------

def k8s_context(text: str, name: str = "web") -> dict:
    objects = render(parse_spec(text, filename="f.yaml", environ={}), options=RenderOptions())
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]


def test_kubernetes_renders_user_and_cap_add():
    ctx = k8s_context(service_with('    user: "20001:20002"\n    cap_add: [NET_BIND_SERVICE]\n'))
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (20001, 20002, True)
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True


def test_kubernetes_keeps_its_defaults_without_the_keys_and_for_a_named_user():
    assert k8s_context(service_with(""))["capabilities"] == {"drop": ["ALL"]}
    named = k8s_context(service_with("    user: nobody\n"))
    assert (named["runAsUser"], named["runAsGroup"]) == (10001, 10001)  # Kubernetes takes numbers only


@pytest.mark.parametrize(("lines", "words"), [
    ('    user: "0"\n', "runs as user 0 (root)"),
    ("    cap_add: [SYS_PTRACE]\n", "adds SYS_PTRACE, which the namespace's Pod Security profile (restricted)"),
])
def test_kubernetes_refuses_what_restricted_pod_security_would(lines, words):
    with pytest.raises(ConflictError, match=words.replace("(", r"\(").replace(")", r"\)")):
        k8s_context(service_with(lines))


# -- break 2: the daemon says when Docker does not remap uids ----------------------------------

class Engine:
    def __init__(self, answer) -> None:
        self.answer = answer

    def remaps_users(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_daemon_on_a_docker_without_remapping_warns_and_says_how_to_fix_it(caplog):
    with caplog.at_level(logging.WARNING, logger="flotilla.daemon.server"):
        assert _host_warnings(Engine(False)) == (NO_USERNS_WARNING,)
    assert "--userns-remap=default" in NO_USERNS_WARNING and NO_USERNS_WARNING in caplog.text
    assert _host_warnings(Engine(True)) == ()
    assert _host_warnings(Engine(EngineUnavailableError("Docker Engine is not reachable"))) == ()
