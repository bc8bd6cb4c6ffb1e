"""Manifests in the form the API server stores them, so that a second apply writes nothing.

Issue 20 saw three kinds rewritten on every apply of an unchanged spec: the
server drops an empty list (``ingress: []``), fills in defaults inside an
atomic list (an HTTPRoute's ``backendRefs``), and gives an HPA's metrics back
with the CPU target last. Each rule is checked on every object rendered from
the every-feature spec and the shop demo, in each routing and autoscaling mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.engines.kubernetes import GatewayRef, RenderOptions, render
from flotilla.spec import load_spec

HERE = Path(__file__).resolve().parents[1] / "kubernetes"
SPECS = (HERE / "every-feature.yaml", Path(__file__).resolve().parents[2] / "examples/shop/flotilla.yaml")
MODES = (
    RenderOptions(),
    RenderOptions(autoscale_mode="hpa-external"),
    RenderOptions(ingress_mode="gateway-api", gateway_ref=GatewayRef.parse("infra/public")),
)


@pytest.fixture(scope="module", params=[(s, m) for s in SPECS for m in MODES], ids=lambda p: f"{p[0].stem}")
def objects(request):
    spec_file, options = request.param
    return render(load_spec(spec_file), options=options)


def empty_collections(value, path="") -> list[str]:
    """Where ``value`` holds an empty list or mapping (other than a selector's ``{}``, which means all)."""
    if isinstance(value, dict):
        found = [] if value or path.endswith(("Selector", "emptyDir")) else [path]
        return found + [p for k, v in value.items() for p in empty_collections(v, f"{path}.{k}")]
    if isinstance(value, list):
        return ([path] if not value else []) + [p for i, v in enumerate(value) for p in
                                                 empty_collections(v, f"{path}[{i}]")]
    return []


def test_no_object_holds_an_empty_list_or_mapping_the_server_would_drop(objects):
    for obj in objects:
        assert empty_collections(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_http_route_backends_carry_the_defaults_the_server_fills_in(objects):
    routes = [o for o in objects if o["kind"] == "HTTPRoute"]
    for route in routes:
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert (ref["group"], ref["kind"], ref["weight"]) == ("", "Service", 1)


def test_an_hpa_lists_its_cpu_target_last(objects):
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        types = [m["type"] for m in hpa["spec"]["metrics"]]
        assert "Resource" not in types[:-1], types
