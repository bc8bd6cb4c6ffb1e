"""The Kubernetes form of liveness and rollouts: probes and progressDeadlineSeconds from the same settings."""

from __future__ import annotations

from flotilla.engines.kubernetes import RenderOptions, render
from flotilla.spec import parse_spec
from tests.unit.test_kubernetes_render import container, find

SPEC = """\
app: shop
services:
  web:
    image: shop-web:1
    port: 8000
    health: {path: /healthz, interval: 2s, timeout: 1s, replace_after: 9s, start_period: 30s}
    deploy: {deadline: 45s}
  api:
    image: shop-web:1
    port: 9000
"""


def objects():
    return render(parse_spec(SPEC, filename="flotilla.yaml", environ={}), options=RenderOptions())


def test_replace_after_and_start_period_render_liveness_and_startup_probes():
    web = container(objects(), "web")
    assert web["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 2,
                                         "timeoutSeconds": 1, "failureThreshold": 5, "successThreshold": 1}
    assert web["startupProbe"]["failureThreshold"] == 20  # (30 s + 9 s) / 2 s, rounded up
    api = container(objects(), "api")
    assert "startupProbe" not in api
    assert api["livenessProbe"]["periodSeconds"] == 10 and api["livenessProbe"]["failureThreshold"] == 6


def test_the_deploy_deadline_is_the_deployments_progress_deadline():
    rendered = objects()
    assert find(rendered, "Deployment", "web")["spec"]["progressDeadlineSeconds"] == 45
    assert find(rendered, "Deployment", "api")["spec"]["progressDeadlineSeconds"] == 60
