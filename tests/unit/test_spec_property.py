"""Property tests: no input, however broken, makes the spec loader fail with anything but SpecError.

A spec comes from a user's editor, so the loader must turn every malformed
input into positioned problems, never into a traceback. Valid specs that come
out must also survive the trip to the daemon (spec_to_dict -> spec_from_dict).
"""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.errors import SpecError
from flotilla.spec import parse_spec, spec_from_dict, spec_to_dict

ENVIRON = {"UPSTREAM_URL": "http://upstream:9000", "PORT": "8000", "EMPTY": ""}

VALID = {
    "app": "shop",
    "gateway": {"listen": "127.0.0.1:8080"},
    "services": {
        "web": {
            "image": "shop-web:1",
            "command": ["python3", "-m", "web"],
            "port": 8000,
            "replicas": 2,
            "env": {"LOG_LEVEL": "info", "UPSTREAM": "${UPSTREAM_URL}"},
            "health": {"path": "/healthz", "interval": "2s", "timeout": "1s"},
            "resources": {"cpus": 0.5, "memory": "256M"},
            "egress": False,
            "routes": [
                {"host": "shop.localhost", "path": "/"},
                {"host": "*.shop.example", "path": "/api", "strip_prefix": True},
            ],
            "secrets": {"DB_PASSWORD": "db-password", "/run/secrets/tls.key": "tls-key"},
            "autoscale": {"min": 1, "max": 20, "target": {"concurrency": 10, "cpu": "70%"},
                          "scale_down_delay": "60s"},
            "caches": ["sessions"],
        },
        "worker": {"image": "shop-worker:1", "command": "python3 -m worker"},
    },
    "caches": {"sessions": {"type": "redis-cluster", "shards": 3, "replicas": 1,
                            "memory": "128M", "persistence": "aof"}},
}

KEYS = ["app", "gateway", "listen", "services", "web", "image", "command", "port", "replicas",
        "env", "health", "path", "interval", "timeout", "resources", "cpus", "memory", "egress",
        "routes", "host", "strip_prefix", "max_body", "secrets", "autoscale", "min", "max", "target",
        "concurrency", "rps", "cpu", "scale_down_delay", "caches", "type", "shards",
        "persistence", "LOG_LEVEL", "/run/x", "Web", "FLOTILLA_X", "a b", ""]
WORDS = ["2s", "500ms", "-1s", "1.5m", "256M", "1Gi", "5k", "70%", "150%", "${UPSTREAM_URL}",
         "${NOPE}", "${X:-1}", "${", "$$", "${1}", "shop.localhost", "*.a.b", "/", "/api",
         "redis-cluster", "aof", "127.0.0.1:8080", "[::1]:1", "localhost:0", "sessions", "web"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(WORDS),
)
data = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                            max_size=5)),
    max_leaves=10,
)
yaml_tokens = st.sampled_from([
    "app: shop\n", "services:\n", "  web:\n", "    image: x\n", "    port: ${PORT}\n",
    "    routes: [{host: a.b}]\n", "caches:\n", "  c: {type: redis-cluster}\n", "&a ", "*a",
    "<<: ", "- ", ": ", "{", "}", "[", "]", ",", "'", '"', "#", "!!int ", "!x ", "---\n",
    "? ", "|\n", "\t", "\n", "  ", "${", "}", "\\", "\x00", "\ufeff", "%YAML 1.1\n",
])

# Sized to keep the unit suite fast; each was also run with 4000 examples while developing.
FAST = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEAVY = settings(FAST, max_examples=40)


def _dump(value: object) -> str:
    """yaml.safe_dump, through libyaml when present: dumping is not under test, speed is."""
    return yaml.dump(value, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def _parse(text: str) -> None:
    try:
        spec = parse_spec(text, filename="flotilla.yaml", environ=ENVIRON)
    except SpecError as exc:
        assert exc.problems, "a SpecError must carry problems"
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1, str(problem)
            assert problem.message and problem.hint, str(problem)
        return
    assert spec_from_dict(spec_to_dict(spec)) == spec


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_spec_error(text: str) -> None:
    _parse(text)


@FAST
@given(st.lists(yaml_tokens, max_size=30).map("".join))
def test_yaml_like_token_soup_raises_only_spec_error(text: str) -> None:
    _parse(text)


@HEAVY
@given(data)
def test_arbitrary_yaml_data_raises_only_spec_error(value: object) -> None:
    _parse(_dump(value))


def _mutate(spec: object, *, steps: list[tuple[int, str]], new_value: object) -> object:
    """Walk down by the given choices, then replace, delete or add one key."""
    spec = copy.deepcopy(spec)
    node = spec
    for choice, action in steps:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            break
        key, child = children[choice % len(children)]
        if action == "descend" and isinstance(child, (dict, list)):
            node = child
            continue
        if action == "delete" and isinstance(node, dict):
            del node[key]
        elif action == "add" and isinstance(node, dict):
            node[str(new_value)[:8] or "x"] = new_value
        else:
            node[key] = new_value
        break
    return spec


ACTIONS = st.sampled_from(["descend", "descend", "descend", "replace", "delete", "add"])


@HEAVY
@given(st.lists(st.tuples(st.integers(0, 50), ACTIONS), min_size=1, max_size=7), data)
def test_mutated_valid_spec_raises_only_spec_error(steps: list, new_value: object) -> None:
    mutated = _mutate(VALID, steps=steps, new_value=new_value)
    _parse(_dump(mutated))


def test_the_unmutated_spec_is_valid() -> None:
    spec = parse_spec(yaml.safe_dump(VALID), filename="f.yaml", environ=ENVIRON)
    assert spec.services["web"].env["UPSTREAM"] == "http://upstream:9000"


@HEAVY
@given(data)
def test_spec_from_dict_raises_only_spec_error(value: object) -> None:
    try:
        spec_from_dict(value)
    except SpecError as exc:
        assert all(p.line == 0 and p.column == 0 for p in exc.problems)
