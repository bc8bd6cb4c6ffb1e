"""``apply`` against a stand-in API server on 127.0.0.1, and against a real cluster when one is given.

The stand-in (tests/kubernetes/fake_apiserver.py) records every request the
official client sends, so these tests check the wire: server-side apply
patches with field manager ``flotilla``, Secret values in the bodies of
Secret requests and nowhere else, pruning of exactly the objects that left
the spec (and of nothing Flotilla did not apply), dry runs that store
nothing, and clear errors. The live test runs only with
``FLOTILLA_TEST_KUBECONFIG`` (a kubeconfig of a disposable cluster).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (pip install kubernetes)")

from flotilla.engines.kubernetes import RenderOptions, kinds, render
from flotilla.engines.kubernetes import apply as kube
from flotilla.errors import EngineError, EngineUnavailableError, RolloutFailedError, WaitTimeoutError
from flotilla.spec import load_spec, parse_spec
from tests.kubernetes.fake_apiserver import FakeApiServer
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
EVERY = REPO / "tests" / "kubernetes" / "every-feature.yaml"
SHOP = REPO / "examples" / "shop" / "flotilla.yaml"


def secret_value(name: str) -> bytes:
    return f"TOPSECRET-{name}-7f3a9c".encode()


def passwords():
    counter = iter(range(100))
    return lambda: f"REDISPW-{next(counter)}-b41d"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.stop()


@pytest.fixture
def run(api, tmp_path):
    config = kubeconfig(tmp_path / "kubeconfig", api.start())

    def apply_spec(spec, *, dry_run=False, new_password=None, options=None):
        client = kube.connect(kubeconfig=str(config), context="fake")
        return kube.apply(spec, options=options or RenderOptions(), secret_value=secret_value, api_client=client,
                          dry_run=dry_run, discovery_cache=str(tmp_path / "discovery.json"),
                          new_password=new_password or passwords())

    return apply_spec


def patches(api):
    return [r for r in api.requests if r.method == "PATCH"]


def test_every_object_is_a_server_side_apply_patch(api, run):
    spec = load_spec(EVERY)
    result = run(spec)
    sent = patches(api)
    assert {r.method for r in api.requests} <= {"GET", "PATCH"}
    for req in sent:
        assert req.content_type == "application/apply-patch+yaml", req.path
        assert req.query["fieldManager"] == ["flotilla"] and req.query["force"] == ["true"], req.path
        assert "dryRun" not in req.query
    expected = {kinds.key(o) for o in render(spec, options=RenderOptions())}
    expected |= {("v1", "Secret", n) for n in ("flotilla-secrets", "sessions-redis", "events-redis")}
    stored = {(av, k, n) for (av, k, _ns, n) in api.objects}
    assert stored == expected
    assert len(sent) == len(expected) == len(result.applied)
    assert result.applied[0] == "Namespace market"
    namespace_patch = sent[0]
    assert namespace_patch.path == "/api/v1/namespaces/market"


def test_secret_values_go_only_to_the_secrets_endpoint(api, run):
    run(load_spec(EVERY))
    needles = [secret_value(n) for n in ("db-password", "tls-key", "api-token")]
    needles += [b"REDISPW-0-b41d", b"REDISPW-1-b41d"]
    encoded = [base64.b64encode(n) for n in needles]
    carriers = {r.path for r in api.requests if any(n in r.body for n in needles + encoded)}
    assert carriers == {"/api/v1/namespaces/market/secrets/flotilla-secrets",
                        "/api/v1/namespaces/market/secrets/sessions-redis",
                        "/api/v1/namespaces/market/secrets/events-redis"}
    app_secret = api.objects[("v1", "Secret", "market", "flotilla-secrets")]
    assert base64.b64decode(app_secret["data"]["db-password"]) == secret_value("db-password")
    for req in api.requests:
        if b"flotilla-secrets" in req.body and "/secrets/" not in req.path:
            assert b"TOPSECRET" not in req.body


def test_cache_passwords_are_made_once_and_kept(api, run):
    spec = load_spec(EVERY)
    run(spec)
    first = api.objects[("v1", "Secret", "market", "sessions-redis")]["data"]["password"]
    api.requests.clear()
    result = run(spec, new_password=lambda: pytest.fail("a second password was generated"))
    assert api.objects[("v1", "Secret", "market", "sessions-redis")]["data"]["password"] == first
    assert not [r for r in patches(api) if r.path.endswith("/secrets/sessions-redis")]
    assert "Secret market/sessions-redis" in result.kept


def _without_search_and_events(spec):
    services = {n: s for n, s in spec.services.items() if n != "search"}
    services["worker"] = services["worker"].model_copy(update={"caches": ("sessions",)})
    return spec.model_copy(update={"services": services,
                                   "caches": {n: c for n, c in spec.caches.items() if n != "events"}})


def test_pruning_deletes_exactly_what_left_the_spec(api, run):
    spec = load_spec(EVERY)
    run(spec)
    # Labelled for the app but not applied by Flotilla: KEDA's HPA (copies the labels) and a user's Secret.
    api.seed({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
              "metadata": {"name": "keda-hpa-web", "namespace": "market", "labels": {"io.flotilla.app": "market"},
                           "ownerReferences": [{"kind": "ScaledObject", "name": "web"}]}}, manager="keda")
    api.seed({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "hand-made", "namespace": "market", "labels": {"io.flotilla.app": "market"}}},
             manager="kubectl-create")
    smaller = _without_search_and_events(spec)
    before = {(av, k, n) for (av, k, _ns, n) in api.objects}
    api.requests.clear()
    result = run(smaller)
    after_render = {kinds.key(o) for o in render(smaller, options=RenderOptions())}
    deleted = {r.path for r in api.requests if r.method == "DELETE"}
    gone = before - {(av, k, n) for (av, k, _ns, n) in api.objects}
    expected_gone = before - after_render - {("v1", "Secret", "flotilla-secrets"), ("v1", "Secret", "sessions-redis"),
                                             ("autoscaling/v2", "HorizontalPodAutoscaler", "keda-hpa-web"),
                                             ("v1", "Secret", "hand-made")}
    assert gone == expected_gone
    assert len(deleted) == len(expected_gone) == len(result.pruned)
    assert {("apps/v1", "Deployment", "search"), ("apps/v1", "StatefulSet", "events"),
            ("v1", "Secret", "events-redis"), ("keda.sh/v1alpha1", "ScaledObject", "search")} <= gone
    for req in api.requests:
        if req.method == "DELETE":
            assert req.query.get("propagationPolicy") == ["Background"]
    api.requests.clear()
    assert run(smaller).pruned == ()  # converged: nothing more to prune


def test_dry_run_stores_nothing(api, run):
    spec = load_spec(EVERY)
    result = run(spec, dry_run=True)
    assert not api.objects
    assert all(r.query.get("dryRun") == ["All"] for r in patches(api))
    assert result.dry_run and result.applied == ("Namespace market",) and len(result.unchecked) > 30
    run(spec)
    api.requests.clear()
    result = run(_without_search_and_events(spec), dry_run=True)
    assert all(r.query.get("dryRun") == ["All"] for r in api.requests if r.method in ("PATCH", "DELETE"))
    assert ("apps/v1", "Deployment", "market", "search") in api.objects
    assert "Deployment market/search" in result.pruned and not result.unchecked


def test_a_missing_crd_is_a_clear_error(tmp_path):
    api = FakeApiServer(without=("ScaledObject",))
    config = kubeconfig(tmp_path / "kubeconfig", api.start())
    try:
        client = kube.connect(kubeconfig=str(config))
        with pytest.raises(EngineError, match="no ScaledObject.*install KEDA"):
            kube.apply(load_spec(EVERY), options=RenderOptions(), secret_value=secret_value, api_client=client,
                       discovery_cache=str(tmp_path / "d.json"))
    finally:
        api.stop()


def test_a_refusal_keeps_the_servers_message(api, run):
    api.refusals[("PATCH", "Deployment")] = (403, 'deployments.apps "web" is forbidden: User "dev" cannot patch')
    with pytest.raises(EngineError, match="forbidden: User \"dev\".*RBAC") as caught:
        run(load_spec(SHOP))
    assert not isinstance(caught.value, EngineUnavailableError)


def test_an_unreachable_cluster_is_engine_unavailable(tmp_path):
    port = free_port()  # nothing listens there
    config = kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    client = kube.connect(kubeconfig=str(config))
    client.configuration.retries = 0
    with pytest.raises(EngineUnavailableError, match="cannot reach the Kubernetes API"):
        kube.apply(load_spec(SHOP), options=RenderOptions(), secret_value=secret_value, api_client=client,
                   discovery_cache=str(tmp_path / "d.json"))


def test_a_bad_kubeconfig_is_engine_unavailable(tmp_path):
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(EngineUnavailableError, match="no usable Kubernetes configuration"):
        kube.connect(kubeconfig=str(tmp_path / "kubeconfig"), context="nope")


@pytest.fixture
def controller(api):
    """What kube-controller-manager would do: report every workload rolled out, a moment after its apply."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.3):
            api.settle()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def cli_apply(api, tmp_path, *args: str) -> subprocess.CompletedProcess:
    config = kubeconfig(tmp_path / "kubeconfig", api.start())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "FLOTILLA_HOME": str(tmp_path / "home"),
           "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "flotilla", "apply", "-f", str(SHOP),
                           "--target", "kubernetes", "--kubeconfig", str(config), "--context", "fake", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_apply_and_its_output(api, controller, tmp_path):
    proc = cli_apply(api, tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["app"] == "shop" and "Deployment shop/web" in report["applied"] and report["pruned"] == []
    assert report["rollout"]["done"] and {w["name"] for w in report["rollout"]["workloads"]} >= {"web", "cart"}
    assert "Deployment web: 1/1 available" in proc.stderr or "Deployment web: 2/2 available" in proc.stderr
    assert not (tmp_path / "home").exists()  # no secrets in the spec: the daemon was not needed


def test_a_second_apply_writes_nothing(api, run):
    for options in (RenderOptions(), RenderOptions(autoscale_mode="hpa-external")):
        run(load_spec(EVERY), options=options)
        writes = api.writes
        run(load_spec(EVERY), options=options)
        assert api.writes == writes, f"{options.autoscale_mode}: {api.writes - writes} object(s) rewritten"


def test_the_api_servers_warnings_reach_the_user(api, run, tmp_path):
    api.warnings["Deployment"] = 'would violate PodSecurity "restricted:latest": host ports'
    result = run(load_spec(EVERY))
    assert 'Deployment market/web: would violate PodSecurity "restricted:latest": host ports' in result.warnings
    proc = cli_apply(api, tmp_path, "--detach")
    assert proc.returncode == 0, proc.stderr
    assert 'warning from the API server: Deployment shop/web: would violate PodSecurity' in proc.stderr


def connected(api, tmp_path):
    return kube.connect(kubeconfig=str(kubeconfig(tmp_path / "kubeconfig", api.start())), context="fake")


def test_apply_waits_for_every_workload_and_shows_its_progress(api, run, tmp_path):
    spec = load_spec(EVERY)
    run(spec)
    lines = []

    def seen(line: str) -> None:  # the controllers finish their work once the first progress is shown
        lines.append(line)
        api.settle()

    rollout = kube.wait_for_rollout(spec, api_client=connected(api, tmp_path), timeout=30, on_progress=seen,
                                    interval=0.1)
    assert rollout.done and {w.kind for w in rollout.workloads} == {"Deployment", "StatefulSet"}
    assert any("rolling out" in line for line in lines) and any("(available)" in line for line in lines)


def pull_failure(namespace: str, app: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-5d9c-x2", "namespace": namespace,
                         "labels": {"io.flotilla.app": app, "io.flotilla.service": "web"}},
            "status": {"containerStatuses": [{"name": "web", "state": {"waiting": {
                "reason": "ImagePullBackOff", "message": 'Back-off pulling image "shop-web:nope"'}}}]}}


def test_a_pod_that_cannot_pull_its_image_ends_the_wait_with_the_clusters_reason(api, run, tmp_path):
    spec = load_spec(SHOP)
    run(spec)
    api.seed(pull_failure("shop", "shop"))
    with pytest.raises(RolloutFailedError, match=r"Pod web-5d9c-x2 container web: ImagePullBackOff \(Back-off"):
        kube.wait_for_rollout(spec, api_client=connected(api, tmp_path), timeout=30, interval=0.1)
    proc = cli_apply(api, tmp_path)
    assert proc.returncode == RolloutFailedError.exit_code and "ImagePullBackOff" in proc.stderr, proc.stderr


def test_the_deadline_ends_the_wait_with_what_is_pending(api, run, tmp_path):
    spec = load_spec(SHOP)
    run(spec)
    with pytest.raises(WaitTimeoutError, match=r"within 0.5s: Deployment \S+: 0/\d available"):
        kube.wait_for_rollout(spec, api_client=connected(api, tmp_path), timeout=0.5, interval=0.1)


@pytest.mark.skipif(not os.environ.get("FLOTILLA_TEST_KUBECONFIG"),
                    reason="set FLOTILLA_TEST_KUBECONFIG to the kubeconfig of a disposable cluster to run this")
def test_live_cluster_apply_and_prune():
    config = os.environ["FLOTILLA_TEST_KUBECONFIG"]
    app = f"fltest-{uuid.uuid4().hex[:6]}"
    text = f"""
app: {app}
services:
  web: {{image: "nginx:1.27", port: 8080, replicas: 1, routes: [{{host: {app}.example}}]}}
  extra: {{image: "nginx:1.27", port: 8080}}
"""
    spec = parse_spec(text, filename="live.yaml", environ={})
    client = kube.connect(kubeconfig=config, context=os.environ.get("FLOTILLA_TEST_CONTEXT"))
    options = RenderOptions(image_pull_policy="IfNotPresent")
    try:
        kube.apply(spec, options=options, secret_value=secret_value, api_client=client, dry_run=True)
        first = kube.apply(spec, options=options, secret_value=secret_value, api_client=client)
        assert "Deployment " + app + "/extra" in first.applied
        smaller = spec.model_copy(update={"services": {"web": spec.services["web"]}})
        second = kube.apply(smaller, options=options, secret_value=secret_value, api_client=client)
        assert set(second.pruned) == {f"Deployment {app}/extra", f"Service {app}/extra",
                                      f"NetworkPolicy {app}/extra-from-app", f"NetworkPolicy {app}/extra-egress"}
    finally:
        from kubernetes import client as k8s

        k8s.CoreV1Api(client).delete_namespace(app)


def resource_versions(client, app: str) -> dict[str, str]:
    """Every object labelled for ``app`` on the live cluster, with its resourceVersion."""
    cluster = kube.Cluster(client, dry_run=False)
    return {f"{kind.kind}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
            for kind in kinds.KINDS if kind.namespaced
            for item in cluster.list_owned(kind, namespace=app, app=app)}


@pytest.mark.skipif(not os.environ.get("FLOTILLA_TEST_KUBECONFIG"),
                    reason="set FLOTILLA_TEST_KUBECONFIG to the kubeconfig of a disposable cluster to run this")
def test_live_cluster_second_apply_changes_nothing_and_a_missing_image_is_reported():
    client = kube.connect(kubeconfig=os.environ["FLOTILLA_TEST_KUBECONFIG"],
                          context=os.environ.get("FLOTILLA_TEST_CONTEXT"))
    spec = load_spec(EVERY)
    app = f"fltest-{uuid.uuid4().hex[:6]}"
    spec = spec.model_copy(update={"app": app})
    broken = parse_spec(f"app: {app}-img\nservices:\n  web: {{image: 'flotilla.invalid/nope:1', port: 80}}\n",
                        filename="broken.yaml", environ={})
    options = RenderOptions(autoscale_mode="hpa-external")
    try:
        kube.apply(spec, options=options, secret_value=secret_value, api_client=client)
        before = resource_versions(client, app)
        kube.apply(spec, options=options, secret_value=secret_value, api_client=client)
        assert resource_versions(client, app) == before
        kube.apply(broken, options=RenderOptions(), secret_value=secret_value, api_client=client)
        with pytest.raises((RolloutFailedError, WaitTimeoutError), match="ImagePull|ErrImagePull|Unschedulable"):
            kube.wait_for_rollout(broken, api_client=client, timeout=120)
    finally:
        from kubernetes import client as k8s

        for namespace in (app, f"{app}-img"):
            with contextlib.suppress(Exception):
                k8s.CoreV1Api(client).delete_namespace(namespace)


def test_status_shows_a_row_per_pod_and_each_workloads_progress(api, run, tmp_path):
    run(load_spec(SHOP))
    api.seed(pull_failure("shop", "shop"))
    config = kubeconfig(tmp_path / "kubeconfig", api.start())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "FLOTILLA_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "flotilla", "status", "--target", "kubernetes", "-f", str(SHOP),
               "--kubeconfig", str(config), "--context", "fake"]
    shown = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[:2]
    assert header.split() == ["SERVICE", "POD", "STATE", "READY", "RESTARTS", "IMAGE", "NODE", "IP"]
    assert row.split()[:3] == ["web", "web-5d9c-x2", "ImagePullBackOff"]
    assert "Deployment web: 0/" in shown.stderr and "(rolling out)" in shown.stderr
    as_json = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, env=env,
                                        timeout=60).stdout)
    assert as_json["pods"][0]["state"] == "ImagePullBackOff" and as_json["namespace"] == "shop"

def test_registry_logins_become_pull_secrets_sent_only_to_their_endpoint(api, tmp_path):
    """Issue 15: an image pull Secret (dockerconfigjson) per logged-in registry, referenced by the pods,
    its password in the body of that Secret's request only, and kept (not pruned) on the next apply."""
    host, password = "127.0.0.1:5000", "REGPW-9c1e-secret"
    spec = parse_spec(f"app: private\nservices:\n  web: {{image: {host}/team/web:1, port: 8000}}\n",
                      filename="f.yaml", environ={})
    client = kube.connect(kubeconfig=str(kubeconfig(tmp_path / "kubeconfig", api.start())), context="fake")
    options = RenderOptions(registry_logins=(host,))
    for _ in range(2):
        result = kube.apply(spec, options=options, secret_value=secret_value, api_client=client,
                            registry_login=lambda _host: ("ci", password))
    assert not result.pruned
    name = "flotilla-registry-127-0-0-1-5000"
    secret = api.objects[("v1", "Secret", "private", name)]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert password in base64.b64decode(secret["data"][".dockerconfigjson"]).decode()
    pods = api.objects[("apps/v1", "Deployment", "private", "web")]["spec"]["template"]["spec"]
    assert pods["imagePullSecrets"] == [{"name": name}]
    needles = (password.encode(), base64.b64encode(password.encode()), secret["data"][".dockerconfigjson"].encode())
    carriers = {r.path for r in api.requests if any(n in r.body for n in needles)}
    assert carriers == {f"/api/v1/namespaces/private/secrets/{name}"}


@pytest.mark.skipif(not os.environ.get("FLOTILLA_TEST_KUBECONFIG"),
                    reason="set FLOTILLA_TEST_KUBECONFIG to the kubeconfig of a disposable cluster (with nodes)")
def test_live_cluster_cache_budget_allows_a_disruption_once_its_nodes_are_ready():
    client = kube.connect(kubeconfig=os.environ["FLOTILLA_TEST_KUBECONFIG"],
                          context=os.environ.get("FLOTILLA_TEST_CONTEXT"))
    app = f"fltest-{uuid.uuid4().hex[:6]}"
    spec = parse_spec(f"app: {app}\ncaches: {{sessions: {{shards: 3, replicas: 1}}}}\n"
                      "services:\n  web: {image: 'nginx:1.27', port: 8080, caches: [sessions]}\n",
                      filename="cache.yaml", environ={})
    try:
        kube.apply(spec, options=RenderOptions(image_pull_policy="IfNotPresent"), secret_value=secret_value,
                   api_client=client)
        kube.wait_for_rollout(spec, api_client=client, timeout=300)
        from kubernetes import client as k8s

        policy = k8s.PolicyV1Api(client)
        budget = policy.read_namespaced_pod_disruption_budget("sessions", app)
        assert budget.status.disruptions_allowed >= 1, budget.status
    finally:
        from kubernetes import client as k8s

        with contextlib.suppress(Exception):
            k8s.CoreV1Api(client).delete_namespace(app)


def test_a_before_deploy_job_is_waited_for_before_any_deployment_changes(api, run):
    spec = load_spec(EVERY)
    (gate,) = [o for o in render(spec, options=RenderOptions()) if o["kind"] == "Job" and "before-deploy" in
               o["metadata"]["name"]]
    api.failing_jobs.add(gate["metadata"]["name"])
    with pytest.raises(RolloutFailedError, match="before_deploy.*BackoffLimitExceeded.*no Deployment was changed"):
        run(spec)
    assert gate["metadata"]["name"] in api.names("Job")
    assert not api.names("Deployment") and not api.names("StatefulSet") and not api.names("CronJob")
    kinds_sent = [r.path.split("/")[-2] for r in patches(api)]
    assert "networkpolicies" in kinds_sent and "secrets" in kinds_sent  # what a Job needs went first
    api.failing_jobs.clear()
    api.objects.pop(next(k for k in api.objects if k[3] == gate["metadata"]["name"]))  # a new Job, succeeding
    run(spec)
    assert {"web", "api"} <= api.names("Deployment") and {"job-cleanup", "job-nightly-report"} <= api.names("CronJob")
