"""Valid specs: what they parse to, defaults, interpolation, the dict round trip, config_hash."""

from __future__ import annotations

import json
import textwrap

import pydantic
import pytest

from flotilla.errors import NotFoundError, SpecError
from flotilla.spec import (
    AppSpec,
    AutoscaleSpec,
    AutoscaleTarget,
    CacheSpec,
    GatewaySpec,
    HealthSpec,
    ResourcesSpec,
    RouteSpec,
    ServiceSpec,
    config_hash,
    load_spec,
    parse_spec,
    spec_from_dict,
    spec_to_dict,
)
from flotilla.spec.interpolate import interpolate, parse_dotenv

MIB = 1024 * 1024

FULL = textwrap.dedent("""\
    app: shop                      # DNS-safe name of the application
    gateway: {listen: "127.0.0.1:8080"}
    services:
      web:
        image: shop-web:1
        command: ["python3", "-m", "web"]
        port: 8000
        replicas: 2
        env: {LOG_LEVEL: info, UPSTREAM: "${UPSTREAM_URL}"}
        health: {path: /healthz, interval: 2s, timeout: 1s}
        resources: {cpus: 0.5, memory: 256M}
        egress: false
        routes:
          - {host: shop.localhost, path: /}
          - {host: "*.shop.example", path: /api, strip_prefix: true}
        secrets:
          DB_PASSWORD: db-password
          /run/secrets/tls.key: tls-key
        autoscale:
          min: 1
          max: 20
          target: {concurrency: 10}
          scale_down_delay: 60s
        caches: [sessions]
    caches:
      sessions: {type: redis-cluster, shards: 3, replicas: 1, memory: 128M, persistence: aof}
    """)

EXPECTED_WEB = ServiceSpec(
    image="shop-web:1",
    command=("python3", "-m", "web"),
    port=8000,
    replicas=2,
    env={"LOG_LEVEL": "info", "UPSTREAM": "http://upstream:9000"},
    health=HealthSpec(path="/healthz", interval=2.0, timeout=1.0),
    resources=ResourcesSpec(cpus=0.5, memory=256 * MIB),
    egress=False,
    routes=(RouteSpec(host="shop.localhost", path="/"),
            RouteSpec(host="*.shop.example", path="/api", strip_prefix=True)),
    secrets={"DB_PASSWORD": "db-password", "/run/secrets/tls.key": "tls-key"},
    autoscale=AutoscaleSpec(min=1, max=20, target=AutoscaleTarget(concurrency=10.0),
                            scale_down_delay=60.0),
    caches=("sessions",),
)
ENVIRON = {"UPSTREAM_URL": "http://upstream:9000"}


def parse(text: str, **environ: str) -> AppSpec:
    return parse_spec(textwrap.dedent(text), filename="flotilla.yaml", environ=environ)


def minimal(service: str = "{image: x}") -> str:
    return f"app: a\nservices:\n  web: {service}\n"


def test_full_spec_parses_to_the_expected_models() -> None:
    spec = parse_spec(FULL, filename="flotilla.yaml", environ=ENVIRON)
    assert spec == AppSpec(
        app="shop",
        gateway=GatewaySpec(listen_host="127.0.0.1", listen_port=8080),
        services={"web": EXPECTED_WEB},
        caches={"sessions": CacheSpec(type="redis-cluster", shards=3, replicas=1,
                                      memory=128 * MIB, persistence="aof")},
    )
    assert spec.gateway.listen == "127.0.0.1:8080"
    assert spec.services["web"].probe == "http"
    assert spec.services["web"].secret_env == {"DB_PASSWORD": "db-password"}
    assert spec.services["web"].secret_files == {"/run/secrets/tls.key": "tls-key"}


def test_defaults() -> None:
    spec = parse(minimal())
    assert spec.gateway == GatewaySpec() and spec.gateway.listen == "127.0.0.1:8080"
    assert spec.caches == {}
    web = spec.services["web"]
    assert web == ServiceSpec(image="x")
    assert (web.command, web.port, web.replicas, web.egress, web.autoscale) == (
        None, None, 1, False, None)
    assert (web.env, web.secrets, web.routes, web.caches) == ({}, {}, (), ())
    assert web.health == HealthSpec(path=None, interval=2.0, timeout=1.0)
    assert web.resources == ResourcesSpec(cpus=None, memory=None)
    assert web.probe == "none"


@pytest.mark.parametrize(("written", "size"), [
    ("1M", MIB), ("512k", 512 * 1024), ("2.5M", int(2.5 * MIB)), ("100", 100), ("1", 1), ("1G", 1024 * MIB),
])
def test_max_body_is_a_size_in_binary_units(written: str, size: int) -> None:
    spec = parse(minimal(f"{{image: x, port: 80, routes: [{{host: a.localhost}}], max_body: {written}}}"))
    assert spec.services["web"].max_body == size


def test_max_body_defaults_to_one_mib_like_ingress_nginx() -> None:
    assert parse(minimal()).services["web"].max_body == MIB


def test_cache_defaults() -> None:
    spec = parse(minimal() + "caches:\n  sessions: {type: redis-cluster}\n")
    assert spec.caches["sessions"] == CacheSpec(type="redis-cluster", shards=3, replicas=1,
                                                memory=128 * MIB, persistence="aof", image=None)


@pytest.mark.parametrize(("service", "probe"), [
    ("{image: x}", "none"),
    ("{image: x, port: 80}", "tcp"),
    ("{image: x, port: 80, health: {}}", "tcp"),
    ("{image: x, port: 80, health: {interval: 5s}}", "tcp"),
    ("{image: x, port: 80, health: {path: /ready}}", "http"),
])
def test_probe_kind(service: str, probe: str) -> None:
    web = parse(minimal(service)).services["web"]
    assert web.probe == probe
    assert web.health.kind == ("http" if probe == "http" else "tcp")


def test_models_are_frozen() -> None:
    web = parse(minimal()).services["web"]
    with pytest.raises(pydantic.ValidationError):
        web.replicas = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        ServiceSpec(image="x", replics=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(("written", "seconds"), [
    ("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("1.5s", 1.5), ("1h", 3600.0), ("3", 3.0),
    ("0.25", 0.25), (".5s", 0.5),
])
def test_durations(written: str, seconds: float) -> None:
    web = parse(minimal(f"{{image: x, port: 80, health: {{interval: {written}, timeout: 0.1}}}}"))
    assert web.services["web"].health.interval == seconds


@pytest.mark.parametrize(("written", "size"), [
    ("256M", 256 * MIB), ("1G", 1024 * MIB), ("512Mi", 512 * MIB), ("1Gi", 1024 * MIB),
    ("10240k", 10 * MIB), ("8388608", 8 * MIB), ("64MB", 64 * MIB), ("1.5G", 1536 * MIB),
    ("7m", 7 * MIB),
])
def test_memory_sizes(written: str, size: int) -> None:
    spec = parse(minimal(f"{{image: x, resources: {{memory: {written}}}}}"))
    assert spec.services["web"].resources.memory == size


@pytest.mark.parametrize(("written", "cpu"), [("70%", 70.0), ("70", 70.0), ("12.5%", 12.5),
                                              ("100%", 100.0)])
def test_cpu_target_percent(written: str, cpu: float) -> None:
    spec = parse(minimal("{image: x, resources: {cpus: 1}, autoscale: {min: 1, max: 3, "
                         f"target: {{cpu: {written}, rps: 200}}}}}}"))
    assert spec.services["web"].autoscale.target == AutoscaleTarget(cpu=cpu, rps=200.0)


def test_autoscale_replicas_default_to_min_and_at_least_one() -> None:
    spec = parse("""\
        app: a
        services:
          web: {image: x, autoscale: {min: 3, max: 5, target: {rps: 10}}}
          api: {image: x, autoscale: {min: 0, max: 5, target: {rps: 10}}}
          job: {image: x, replicas: 0, autoscale: {min: 0, max: 5, target: {rps: 10}}}
        """)
    assert [s.replicas for s in spec.services.values()] == [3, 1, 0]
    assert spec.services["web"].autoscale.scale_down_delay == 60.0


def test_env_values_are_strings_as_written() -> None:
    spec = parse(minimal("{image: x, env: {A: yes, B: false, C: 010, D: 1.50, E: 0x1F, "
                         "F: '', G: -3, H: 1_000}}"))
    assert spec.services["web"].env == {"A": "true", "B": "false", "C": "010", "D": "1.50",
                                        "E": "0x1F", "F": "", "G": "-3", "H": "1_000"}


def test_command_string_is_split_like_a_shell() -> None:
    spec = parse(minimal("""{image: x, command: "sh -c 'echo hi; sleep 1'"}"""))
    assert spec.services["web"].command == ("sh", "-c", "echo hi; sleep 1")


def test_route_hosts_are_lowercased_and_names_like_on_stay_names() -> None:
    spec = parse("""\
        app: a
        services:
          on: {image: x, port: 80, routes: [{host: Shop.LocalHost}]}
        """)
    assert spec.services["on"].routes == (RouteSpec(host="shop.localhost", path="/"),)


def test_route_paths_take_rfc_3986_characters_and_escapes_in_upper_case() -> None:
    spec = parse("""\
        app: a
        services:
          web:
            image: x
            port: 80
            health: {path: "/healthz?deep=1&from=gw"}
            routes:
              - {host: xn--bcher-kva.example, path: "/d%c3%a9j%C3%A0"}
              - {host: "*.a-b.example", path: "/it's/(v1);x=1,y=2:@~!$&*+"}
        """)
    web = spec.services["web"]
    assert [r.path for r in web.routes] == ["/d%C3%A9j%C3%A0", "/it's/(v1);x=1,y=2:@~!$&*+"]
    assert web.health.path == "/healthz?deep=1&from=gw"


@pytest.mark.parametrize(("listen", "host", "port"), [
    ('"0.0.0.0:80"', "0.0.0.0", 80), ("localhost:9000", "localhost", 9000),
    ('"[::1]:8443"', "::1", 8443), ('"[::]:80"', "::", 80),
])
def test_gateway_listen(listen: str, host: str, port: int) -> None:
    gateway = parse(minimal() + f"gateway: {{listen: {listen}}}\n").gateway
    assert (gateway.listen_host, gateway.listen_port) == (host, port)
    assert gateway.listen == listen.strip('"')


@pytest.mark.parametrize(("listen", "host"), [
    ('"[0:0:0:0:0:0:0:1]:80"', "::1"), ('"[FD00::0001]:80"', "fd00::1"),
    ('"[::ffff:127.0.0.1]:80"', "::ffff:7f00:1"),
])
def test_an_ipv6_listen_address_has_one_form_so_apps_writing_it_differently_share_a_frontend(
        listen: str, host: str) -> None:
    assert parse(minimal() + f"gateway: {{listen: {listen}}}\n").gateway.listen_host == host


def test_merge_keys_share_settings_between_services() -> None:
    spec = parse("""\
        app: a
        services:
          web: &base {image: x, port: 80, env: {A: "1"}}
          worker:
            <<: *base
            port: 81
        """)
    assert spec.services["worker"] == ServiceSpec(image="x", port=81, env={"A": "1"})


# -- interpolation -------------------------------------------------------------------------

def test_interpolation_forms() -> None:
    spec = parse(minimal("""{image: "${IMAGE}", env: {A: "${A:-dflt}", B: "${B:-dflt}", C: "$$HOME",
        D: "pa$word", E: "${EMPTY}", F: "${EMPTY:-fallback}", G: "${IMAGE}-${A:-x}$"}}"""),
                 IMAGE="shop-web:2", B="set", EMPTY="")
    web = spec.services["web"]
    assert web.image == "shop-web:2"
    assert web.env == {"A": "dflt", "B": "set", "C": "$HOME", "D": "pa$word", "E": "",
                       "F": "fallback", "G": "shop-web:2-x$"}


def test_plain_interpolated_scalars_take_their_new_type_quoted_ones_stay_strings() -> None:
    # In block style: inside {...} a plain ${X} is not valid YAML (braces are flow syntax).
    spec = parse("""\
        app: a
        services:
          web:
            image: x
            port: ${PORT}
            replicas: ${N:-3}
            egress: ${E}
            env: {P: "${PORT}"}
        """, PORT="8000", E="true")
    web = spec.services["web"]
    assert (web.port, web.replicas, web.egress, web.env) == (8000, 3, True, {"P": "8000"})


def test_interpolate_reports_each_problem() -> None:
    text, issues = interpolate("${A}${B:-b}${C}${ bad}${open", {"A": "a"})
    assert text == "ab"
    assert [i.message for i in issues] == [
        "${C} is not set", "malformed variable reference '${ bad}'",
        "unclosed variable reference '${open'"]


def test_load_spec_reads_dotenv_and_environment_wins(tmp_path) -> None:
    (tmp_path / "flotilla.yaml").write_text(minimal(
        '{image: "${IMAGE}", env: {A: "${A}", B: "${B}", C: "${C}"}}'))
    (tmp_path / ".env").write_text(textwrap.dedent("""\
        # settings for development
        IMAGE=shop-web:dev
        export A="from dotenv"   
        B='single # not a comment'
        C=plain value # a comment
        """))  # noqa: W291 - the spaces after "from dotenv" are under test
    spec = load_spec(tmp_path / "flotilla.yaml", environ={"A": "from environ"})
    web = spec.services["web"]
    assert web.image == "shop-web:dev"
    assert web.env == {"A": "from environ", "B": "single # not a comment", "C": "plain value"}


def test_load_spec_defaults_to_os_environ(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLOTILLA_TEST_IMAGE", "img:7")
    (tmp_path / "f.yaml").write_text(minimal('{image: "${FLOTILLA_TEST_IMAGE}"}'))
    assert load_spec(str(tmp_path / "f.yaml")).services["web"].image == "img:7"


def test_parse_dotenv() -> None:
    values, problems = parse_dotenv(
        'A=1\n\n  # c\nB="x\\ny \\"q\\""\nexport C = spaced \nD=\nE="a#b" \n', filename=".env")
    assert values == {"A": "1", "B": 'x\ny "q"', "C": "spaced", "D": "", "E": "a#b"}
    assert problems == ()


def test_dotenv_problems_are_reported_with_the_spec_problems(tmp_path) -> None:
    (tmp_path / "flotilla.yaml").write_text(minimal("{image: x, replicas: -1}"))
    (tmp_path / ".env").write_text("GOOD=1\nno equals sign\nBAD='open\n")
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "flotilla.yaml", environ={})
    env, spec = tmp_path / ".env", tmp_path / "flotilla.yaml"
    assert [str(p) for p in caught.value.problems] == [
        f"{env}:2:1: (top): expected a line KEY=VALUE with KEY made of letters, digits "
        "and '_'; fix the line, or comment it out with #",
        f"{env}:3:1: BAD: the value's closing quote is missing; end the value with the same "
        "quote it starts with",
        f"{spec}:3:29: services.web.replicas: must be between 0 and 100, got -1; use a whole "
        "number from 0 to 100",
    ]


def test_missing_file(tmp_path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "nope.yaml", environ={})
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'nope.yaml'}: (top): cannot read the spec: No such file or directory; "
        "check the path, or pass the spec file explicitly"]
    assert caught.value.exit_code == 2


def test_not_utf8(tmp_path) -> None:
    (tmp_path / "f.yaml").write_bytes(b"app: caf\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "f.yaml", environ={})


# -- the dict form -------------------------------------------------------------------------

def test_spec_to_dict_is_json_safe_and_round_trips() -> None:
    spec = parse_spec(FULL, filename="flotilla.yaml", environ=ENVIRON)
    data = json.loads(json.dumps(spec_to_dict(spec)))
    assert data["gateway"] == {"listen": "127.0.0.1:8080"}
    assert data["services"]["web"]["resources"] == {"cpus": 0.5, "memory": 256 * MIB}
    assert data["services"]["web"]["health"] == {"path": "/healthz", "interval": 2.0,
                                                  "timeout": 1.0, "start_period": 0.0}
    assert spec_from_dict(data) == spec


@pytest.mark.parametrize("text", [
    minimal(),
    minimal("{image: x, command: 'a b', port: 1}") + 'gateway: {listen: "[::1]:80"}\n',
    minimal("{image: x, autoscale: {min: 0, max: 1, target: {cpu: 50%}}, resources: {cpus: 1}}"),
    minimal("{image: x, port: 80, routes: [{host: a.localhost}], max_body: 64k}"),
    minimal("{image: x, $: 1}".replace("$: 1", "health: {}, port: 9, replicas: 0"))
    + "caches:\n  c: {type: redis-cluster, image: redis:7, persistence: none}\n",
])
def test_round_trip_variants(text: str) -> None:
    spec = parse(text)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec


def test_spec_from_dict_reports_problems_without_positions() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict({"app": "a", "services": {"web": {"image": "x", "replicas": "2"}}})
    assert [str(p) for p in caught.value.problems] == [
        "<api>: services.web.replicas: expected an integer, got a string ('2'); remove the "
        "quotes: write the number itself"]


def test_spec_from_dict_does_not_interpolate() -> None:
    spec = spec_from_dict({"app": "a", "services": {"web": {"image": "x",
                                                            "env": {"A": "${NOT_A_VAR}"}}}})
    assert spec.services["web"].env == {"A": "${NOT_A_VAR}"}


# -- config_hash ---------------------------------------------------------------------------

def _full() -> AppSpec:
    return parse_spec(FULL, filename="flotilla.yaml", environ=ENVIRON)


def _with_web(spec: AppSpec, **changes: object) -> AppSpec:
    web = spec.services["web"].model_copy(update=changes)
    return spec.model_copy(update={"services": {**spec.services, "web": web}})


def test_config_hash_is_stable_across_processes() -> None:
    # A literal: the hash must not depend on PYTHONHASHSEED or dict order. If this changes,
    # every running replica of every app is replaced on upgrade, so change it on purpose only
    # (it changed when the hash took in user, read_only, cap_add and pids_limit: replicas made
    # before hardening are replaced by hardened ones).
    assert config_hash(_full(), "web") == "b8dfe522e93c"
    reordered = _with_web(_full(), env={"UPSTREAM": "http://upstream:9000", "LOG_LEVEL": "info"})
    assert config_hash(reordered, "web") == "b8dfe522e93c"


@pytest.mark.parametrize("changes", [
    {"image": "shop-web:2"},
    {"env": {"LOG_LEVEL": "debug", "UPSTREAM": "http://upstream:9000"}},
    {"command": ("python3", "-m", "web", "--fast")},
    {"command": None},
    {"port": 8001},
    {"resources": ResourcesSpec(cpus=1.0, memory=256 * MIB)},
    {"egress": True},
    {"secrets": {"DB_PASSWORD": "db-password-2", "/run/secrets/tls.key": "tls-key"}},
    {"caches": ()},
    {"user": "65534"},
    {"read_only": True},
    {"cap_add": ("NET_BIND_SERVICE",)},
    {"pids_limit": 64},
])
def test_config_hash_changes_with_what_is_in_the_container(changes: dict) -> None:
    assert config_hash(_with_web(_full(), **changes), "web") != config_hash(_full(), "web")


@pytest.mark.parametrize("changes", [
    {"replicas": 7},
    {"routes": ()},
    {"max_body": 10 * MIB},
    {"autoscale": None},
    {"health": HealthSpec()},
])
def test_config_hash_ignores_what_changes_in_place(changes: dict) -> None:
    assert config_hash(_with_web(_full(), **changes), "web") == config_hash(_full(), "web")


def test_config_hash_extra_and_errors() -> None:
    spec = _full()
    assert len(config_hash(spec, "web")) == 12
    assert config_hash(spec, "web", extra={}) == config_hash(spec, "web")
    with_version = config_hash(spec, "web", extra={"db-password": "3"})
    assert with_version != config_hash(spec, "web")
    assert with_version == config_hash(spec, "web", extra={"db-password": "3"})
    with pytest.raises(NotFoundError):
        config_hash(spec, "nope")


def test_the_reference_documents_every_key() -> None:
    from pathlib import Path

    from flotilla.spec.validate import CACHE_KEYS, TOP_KEYS
    from flotilla.spec.validate_jobs import JOB_KEYS
    from flotilla.spec.validate_service import SERVICE_KEYS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "spec.md").read_text()
    nested = ("listen", "path", "interval", "timeout", "cpus", "memory", "host", "strip_prefix",
              "min", "max", "target", "scale_down_delay", "concurrency", "rps", "cpu",
              "replace_after", "start_period", "deadline", "on_failure")
    for key in (*TOP_KEYS, *SERVICE_KEYS, *CACHE_KEYS, *JOB_KEYS, *nested):
        assert f"`{key}`" in doc, key
