"""What ``render`` makes of a spec: each field checked against the Kubernetes object it becomes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from flotilla.engines.kubernetes import GatewayRef, RenderOptions, render
from flotilla.errors import ConflictError, NotFoundError
from flotilla.spec import load_spec, parse_spec
from flotilla.spec.models import VolumeSpec

HERE = Path(__file__).resolve().parents[1] / "kubernetes"
SHOP = Path(__file__).resolve().parents[2] / "examples/shop/flotilla.yaml"
VALUES = {"db-password": b"pw-db", "tls-key": b"pw-tls", "api-token": b"pw-api"}
PASSWORDS = {"sessions": b"pw-sessions", "events": b"pw-events"}


@pytest.fixture(scope="module")
def spec():
    return load_spec(HERE / "every-feature.yaml")


@pytest.fixture(scope="module")
def objects(spec):
    return render(spec, options=RenderOptions())


def find(objects, kind, name):
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert matches, f"no {kind} {name}"
    return matches[0]


def container(objects, name):
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_render_is_deterministic_and_ordered(spec, objects):
    again = render(spec, options=RenderOptions())
    assert again == objects
    assert objects[0]["kind"] == "Namespace" and objects[0]["metadata"]["name"] == "market"
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = [o["kind"] for o in objects]
    assert kinds.index("NetworkPolicy") < kinds.index("Deployment") < kinds.index("Ingress")
    assert all(o["metadata"].get("namespace") == "market" for o in objects[1:])


def test_every_object_is_labelled_for_its_app(objects):
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["io.flotilla.app"] == "market"
        assert labels["app.kubernetes.io/managed-by"] == "flotilla"
        assert labels["app.kubernetes.io/part-of"] == "market"
    deployment = find(objects, "Deployment", "web")
    assert deployment["metadata"]["labels"]["io.flotilla.service"] == "web"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "web"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/instance"] == "market-web"
    assert deployment["spec"]["selector"]["matchLabels"] == {"io.flotilla.app": "market", "io.flotilla.service": "web"}


def test_replicas_follow_the_spec_unless_an_autoscaler_owns_them(spec, objects):
    assert find(objects, "Deployment", "worker")["spec"]["replicas"] == 2
    for name in ("web", "api", "search"):  # autoscaled: the HPA/KEDA sets the count, apply must not fight it
        assert "replicas" not in find(objects, "Deployment", name)["spec"]
    shop = render(load_spec(SHOP), options=RenderOptions())
    assert [find(shop, "Deployment", n)["spec"]["replicas"] for n in ("web", "catalog", "cart")] == [2, 2, 2]
    rolling = find(objects, "Deployment", "worker")["spec"]["strategy"]
    assert rolling == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_ports_and_cluster_services(objects):
    assert container(objects, "web")["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    service = find(objects, "Service", "web")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8000 and service["spec"]["ports"][0]["targetPort"] == 8000
    assert service["spec"]["selector"] == {"io.flotilla.app": "market", "io.flotilla.service": "web"}
    assert "ports" not in container(objects, "worker")
    assert not [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "worker"]


def test_image_command_and_env(objects):
    web = container(objects, "web")
    assert web["image"] == "registry.example/market-web:1.4.2"
    assert web["imagePullPolicy"] == "Always"
    assert "command" not in web  # the spec's command replaces CMD, keeps the image's ENTRYPOINT
    assert web["args"] == ["python3", "-m", "web", "--greeting", "$$HOME is not expanded"]
    env = env_of(web)
    assert env["LOG_LEVEL"] == "info" and env["WORKERS"] == "4" and env["FEATURE_X"] == "true"
    assert env["FLOTILLA_APP"] == "market" and env["FLOTILLA_SERVICE"] == "web"
    assert env["FLOTILLA_REPLICA"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container(objects, "worker")["args"] == ["python3", "-m", "worker", "--queue", "default"]


def test_secret_references_never_values(objects):
    web = container(objects, "web")
    env = env_of(web)
    assert env["DB_PASSWORD"] == {"secretKeyRef": {"name": "flotilla-secrets", "key": "db-password"}}
    assert {"name": "flotilla-secrets", "mountPath": "/run/secrets/tls.key", "subPath": "tls-key",
            "readOnly": True} in web["volumeMounts"]
    volume = next(v for v in find(objects, "Deployment", "web")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "flotilla-secrets")
    assert volume["secret"]["secretName"] == "flotilla-secrets"
    assert volume["secret"]["items"] == [{"key": "tls-key", "path": "tls-key"}]
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = repr(objects)
    assert not any(v.decode() in text for v in (*VALUES.values(), *PASSWORDS.values()))


def test_include_secrets_puts_values_in_secret_objects_only(spec):
    options = RenderOptions(include_secrets=True, secret_values=VALUES, cache_passwords=PASSWORDS)
    objects = render(spec, options=options)
    app_secret = find(objects, "Secret", "flotilla-secrets")
    assert {k: base64.b64decode(v) for k, v in app_secret["data"].items()} == VALUES
    assert base64.b64decode(find(objects, "Secret", "sessions-redis")["data"]["password"]) == b"pw-sessions"
    others = repr([o for o in objects if o["kind"] != "Secret"])
    assert not any(base64.b64encode(v).decode() in others for v in VALUES.values())
    with pytest.raises(NotFoundError, match="api-token"):
        render(spec, options=RenderOptions(include_secrets=True, secret_values={"db-password": b"x", "tls-key": b"y"},
                                           cache_passwords=PASSWORDS))


def test_secret_versions_roll_the_pods_that_use_them(spec):
    before = render(spec, options=RenderOptions(secret_versions={"db-password": 1, "tls-key": 1, "api-token": 1}))
    after = render(spec, options=RenderOptions(secret_versions={"db-password": 2, "tls-key": 1, "api-token": 1}))

    def template(objs, name):
        return find(objs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]

    assert template(before, "web") != template(after, "web")
    assert template(before, "worker") != template(after, "worker")
    assert template(before, "api") == template(after, "api")
    assert template(after, "web")["io.flotilla.secret-versions"] == "db-password=2,tls-key=1"


def test_probes_from_health(objects):
    web = container(objects, "web")
    assert web["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    assert web["readinessProbe"]["periodSeconds"] == 2 and web["readinessProbe"]["timeoutSeconds"] == 1
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    api = container(objects, "api")
    assert api["readinessProbe"]["tcpSocket"] == {"port": 9000} and api["readinessProbe"]["periodSeconds"] == 5
    assert "readinessProbe" not in container(objects, "worker")  # no port: nothing to probe, as on one host


def test_resources_are_requests_and_limits(objects):
    assert container(objects, "web")["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                                                      "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert container(objects, "search")["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}


def test_restrictive_security_context(objects):
    for name in ("web", "api", "search", "worker"):
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = pod["containers"][0]["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["runAsUser"] >= 10000
        assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_a_service_with_volumes_is_a_stateful_set_with_a_claim_per_volume(objects):
    sts = find(objects, "StatefulSet", "db")
    assert not [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "db"]
    assert sts["spec"]["serviceName"] == "db" and sts["spec"]["replicas"] == 1
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    claims = {c["metadata"]["name"]: c["spec"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {name: {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                      for name in ("vol-data", "vol-seed")}
    pod = sts["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "vol-data", "mountPath": "/var/lib/postgresql/data"} in mounts
    assert {"name": "vol-seed", "mountPath": "/seed", "readOnly": True} in mounts
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] >= 10000
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_storage_class_and_size_reach_the_claims(spec):
    sts = find(render(spec, options=RenderOptions(storage_class="fast", volume_size="20Gi")), "StatefulSet", "db")
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "20Gi"
    with pytest.raises(ValueError, match="storage quantity"):
        RenderOptions(volume_size="lots")


def test_a_host_path_is_refused_on_kubernetes(spec):
    db = spec.services["db"]
    bound = db.model_copy(update={"volumes": {**db.volumes, "up": VolumeSpec(path="/up", bind="/srv/up")},
                                  "allow_host_paths": True})
    with pytest.raises(ConflictError, match=r"host path .* \(restricted\)"):
        render(spec.model_copy(update={"services": {**spec.services, "db": bound}}), options=RenderOptions())


def test_cpu_target_becomes_an_hpa(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 3600  # 2h, capped by the API


def test_traffic_targets_become_a_keda_scaled_object(objects):
    web = find(objects, "ScaledObject", "web")
    assert web["apiVersion"] == "keda.sh/v1alpha1"
    assert (web["spec"]["minReplicaCount"], web["spec"]["maxReplicaCount"]) == (0, 20)
    assert web["spec"]["cooldownPeriod"] == 90
    behavior = web["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 90
    triggers = {t["name"]: t for t in web["spec"]["triggers"]}
    assert triggers["concurrency"]["type"] == "prometheus" and triggers["concurrency"]["metadata"]["threshold"] == "10"
    assert 'exported_service="web"' in triggers["concurrency"]["metadata"]["query"]
    assert triggers["cpu"]["metadata"]["value"] == "70"
    search = find(objects, "ScaledObject", "search")
    assert search["spec"]["triggers"][0]["metadata"]["threshold"] == "150.5"
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "web"]


def test_hpa_external_mode(spec):
    objects = render(spec, options=RenderOptions(autoscale_mode="hpa-external"))
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    web = find(objects, "HorizontalPodAutoscaler", "web")
    assert web["spec"]["minReplicas"] == 1  # an HPA cannot scale to zero
    external = [m["external"] for m in web["spec"]["metrics"] if m["type"] == "External"]
    assert external == [{"metric": {"name": "flotilla_concurrency", "selector": {
        "matchLabels": {"namespace": "market", "service": "web"}}},
        "target": {"type": "AverageValue", "averageValue": "10"}}]
    search = find(objects, "HorizontalPodAutoscaler", "search")
    assert search["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "150500m"


def test_routes_as_ingress(objects):
    web = find(objects, "Ingress", "web")
    assert web["spec"]["ingressClassName"] == "nginx"
    assert web["spec"]["rules"] == [{"host": "market.example", "http": {"paths": [
        {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 8000}}}},
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 8000}}}}]}}]
    strip = find(objects, "Ingress", "web-strip")
    assert strip["spec"]["rules"][0]["host"] == "*.market.example"
    assert strip["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/api(/|$)(.*)"
    assert strip["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert find(objects, "Ingress", "api-strip")["spec"]["rules"][0]["host"] == "api.market.example"
    assert not [o for o in objects if o["kind"] == "Ingress" and o["metadata"]["name"].startswith("search")]


BODY_LIMITS = """
app: a
services:
  default: {image: i:1, port: 80, routes: [{host: d.example}]}
  big:
    {image: i:1, port: 80, routes: [{host: b.example}, {host: b.example, path: /x, strip_prefix: true}], max_body: 8M}
  odd: {image: i:1, port: 80, routes: [{host: o.example}], max_body: 1500}
"""


def test_max_body_is_ingress_nginx_proxy_body_size_on_every_ingress_of_the_service():
    objects = render(parse_spec(BODY_LIMITS, filename="t.yaml", environ={}), options=RenderOptions())
    sizes = {o["metadata"]["name"]: o["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
             for o in objects if o["kind"] == "Ingress"}
    assert sizes == {"default": "1m", "big-regex": "8m", "big-strip": "8m", "odd": "1500"}


def test_plain_routes_on_a_host_with_stripping_keep_segment_matching():
    spec = parse_spec("""
app: a
services:
  s:
    image: i:1
    port: 80
    routes: [{host: h.example, path: /api, strip_prefix: true}, {host: h.example, path: /app}]
""", filename="t.yaml", environ={})
    objects = render(spec, options=RenderOptions(ingress_class="internal"))
    regex = find(objects, "Ingress", "s-regex")
    assert regex["spec"]["ingressClassName"] == "internal"
    assert regex["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/app(/|$)"
    assert "rewrite-target" not in str(regex["metadata"]["annotations"])


def test_routes_as_http_routes(spec):
    objects = render(spec, options=RenderOptions(ingress_mode="gateway-api",
                                                 gateway_ref=GatewayRef.parse("infra/public:https")))
    assert not [o for o in objects if o["kind"] == "Ingress"]
    routes = {o["spec"]["hostnames"][0]: o for o in objects if o["kind"] == "HTTPRoute"}
    assert set(routes) == {"market.example", "*.market.example", "api.market.example"}
    wildcard = routes["*.market.example"]
    assert wildcard["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                               "name": "public", "namespace": "infra", "sectionName": "https"}]
    rule = wildcard["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}}]
    assert rule["filters"] == [{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "web", "port": 8000, "weight": 1}]
    plain = routes["market.example"]["spec"]["rules"]
    assert [r["matches"][0]["path"]["value"] for r in plain] == ["/static", "/"]
    assert all("filters" not in r for r in plain)
    with pytest.raises(ValueError, match="gateway"):
        RenderOptions(ingress_mode="gateway-api")


def test_redis_cluster_objects(objects):
    sts = find(objects, "StatefulSet", "sessions")
    assert sts["spec"]["replicas"] == 6 and sts["spec"]["serviceName"] == "sessions"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod = sts["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"io.flotilla.app": "market",
                                                                       "io.flotilla.cache": "sessions"}
    node = pod["containers"][0]
    env = env_of(node)
    assert env["NODE_DOMAIN"] == "sessions.market.svc.cluster.local" and env["APPENDONLY"] == "yes"
    assert env["MAXMEMORY"] == str(128 * 1024 * 1024) and env["REPLICAS"] == "1"
    assert node["readinessProbe"]["exec"]["command"] == ["sh", "/flotilla/ready.sh"]
    assert node["image"] == "redis:7"
    assert "secretKeyRef" not in repr(node)  # the password is a mounted file, not an env var
    events = find(objects, "StatefulSet", "events")
    assert events["spec"]["replicas"] == 3
    assert events["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/redis:7.2.5"
    headless = find(objects, "Service", "sessions")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert find(objects, "PodDisruptionBudget", "sessions")["spec"]["maxUnavailable"] == 1
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("sessions-form-"))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "/flotilla/form.sh"]
    scripts = find(objects, "ConfigMap", "sessions-scripts")["data"]
    assert "--cluster create" in scripts["form.sh"] and "cluster-announce-hostname" in scripts["start.sh"]
    assert "cluster_state:ok" in scripts["ready.sh"]


def test_cache_consumers_get_nodes_and_password(objects):
    env = env_of(container(objects, "web"))
    nodes = env["SESSIONS_REDIS_NODES"].split(",")
    assert nodes[0] == "sessions-0.sessions.market.svc.cluster.local:6379" and len(nodes) == 6
    assert env["SESSIONS_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "sessions-redis", "key": "password"}}
    worker = env_of(container(objects, "worker"))
    assert "SESSIONS_REDIS_NODES" in worker and len(worker["EVENTS_REDIS_NODES"].split(",")) == 3
    assert "SESSIONS_REDIS_NODES" not in env_of(container(objects, "api"))


def test_a_changed_cluster_shape_is_a_new_forming_job(spec):
    bigger = spec.model_copy(update={"caches": {**spec.caches, "sessions": spec.caches["sessions"].model_copy(
        update={"shards": 4})}})

    def job_names(s):
        return {o["metadata"]["name"] for o in render(s, options=RenderOptions()) if o["kind"] == "Job"}

    assert job_names(spec) != job_names(bigger)


def test_apps_cannot_take_kubernetes_own_namespaces():
    spec = parse_spec("app: kube-system\nservices: {s: {image: i:1}}\n", filename="t.yaml", environ={})
    with pytest.raises(ConflictError, match="kube-system"):
        render(spec, options=RenderOptions())


def selects(selector: dict, pod_labels: dict) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())


def test_a_caches_service_and_budget_select_its_nodes_never_its_forming_job(objects):
    """Issue 20: a PDB that also matched the Job's pod allowed no disruption, blocking every drain,
    and the headless Service listed the Job's pod among the nodes."""
    nodes = find(objects, "StatefulSet", "sessions")["spec"]["template"]["metadata"]["labels"]
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"].startswith("sessions-form-"))
    former = job["spec"]["template"]["metadata"]["labels"]
    for selector in (find(objects, "PodDisruptionBudget", "sessions")["spec"]["selector"]["matchLabels"],
                     find(objects, "Service", "sessions")["spec"]["selector"]):
        assert selects(selector, nodes) and not selects(selector, former)
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # its finished pod does not linger
