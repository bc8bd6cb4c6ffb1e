"""A ``redis-cluster`` cache as a StatefulSet, a headless Service, a forming Job and a PodDisruptionBudget.

Kubernetes already gives what the one-host add-on builds by hand: stable
names (``sessions-0`` .. ``sessions-5``), a volume per node that follows it
(``nodes.conf`` and data on a PersistentVolumeClaim), and restarts. The rest
lives in small POSIX shell scripts in a ConfigMap, run with the Redis image's
own ``redis-server`` and ``redis-cli``:

* ``start.sh`` starts a cluster-enabled node that announces its DNS name
  (``cluster-announce-hostname``, ``cluster-preferred-endpoint-type
  hostname``), so clients never depend on pod IPs; the password, mounted as
  a file from the cache's Secret, reaches ``requirepass``/``masterauth`` on
  standard input and ``redis-cli`` in ``REDISCLI_AUTH``, never in argv;
* ``form.sh`` (the Job) waits for every node, then runs ``redis-cli --cluster
  create`` only if no node has its slots yet: running it again changes nothing;
* ``ready.sh`` (the readiness probe) passes only at ``cluster_state:ok``. When
  a formed cluster is not ok (every pod came back with a new IP, say), it
  also introduces the node to its peers again by name (``CLUSTER MEET`` with
  their current addresses), which is how the cluster heals without a human.

The headless Service publishes not-ready addresses: nodes must find each
other by name before any of them is ready. Pods start in parallel for the
same reason (ordered start would wait forever for the first one's readiness).
"""

from __future__ import annotations

from flotilla.engines.kubernetes import meta, secrets, workloads
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.spec.models import AppSpec, CacheSpec
from flotilla.spec.units import GIB, MIB

NODE_TIMEOUT_MS = 5000
SCRIPTS_DIR = "/flotilla"
AUTH_DIR = "/flotilla-auth"
DATA_DIR = "/data"

START_SH = """\
#!/bin/sh
# Start one cluster node. The password goes in on standard input (`-`), not in argv.
set -eu
password=$(cat "$PASSWORD_FILE")
set --
[ "$RDB_SNAPSHOTS" = yes ] || set -- --save ""
exec redis-server --port 6379 --dir /data \\
  --cluster-enabled yes --cluster-config-file nodes.conf \\
  --cluster-node-timeout "$NODE_TIMEOUT_MS" \\
  --cluster-announce-hostname "$POD_NAME.$NODE_DOMAIN" \\
  --cluster-preferred-endpoint-type hostname \\
  --maxmemory "$MAXMEMORY" --appendonly "$APPENDONLY" "$@" - <<EOF
requirepass $password
masterauth $password
EOF
"""

READY_SH = """\
#!/bin/sh
# Ready only when the cluster is ok. A formed cluster that is not ok (peers came
# back with new IPs) is healed here: meet every peer again at its current address.
REDISCLI_AUTH=$(cat "$PASSWORD_FILE")
export REDISCLI_AUTH
info=$(redis-cli -h 127.0.0.1 -p 6379 cluster info 2>/dev/null | tr -d '\\r')
case "$info" in *cluster_state:ok*) exit 0 ;; esac
known=$(printf '%s\\n' "$info" | sed -n 's/^cluster_known_nodes://p')
[ "${known:-1}" -gt 1 ] || exit 1
i=0
while [ "$i" -lt "$NODES" ]; do
  ip=$(getent hosts "$CACHE_NAME-$i.$NODE_DOMAIN" | cut -d' ' -f1)
  [ -n "$ip" ] && redis-cli -h 127.0.0.1 -p 6379 cluster meet "$ip" 6379 >/dev/null 2>&1
  i=$((i + 1))
done
exit 1
"""

FORM_SH = """\
#!/bin/sh
# Form the cluster once: wait for every node, do nothing if slots are assigned already.
set -eu
REDISCLI_AUTH=$(cat "$PASSWORD_FILE")
export REDISCLI_AUTH
hosts=""
i=0
while [ "$i" -lt "$NODES" ]; do hosts="$hosts $CACHE_NAME-$i.$NODE_DOMAIN"; i=$((i + 1)); done
for h in $hosts; do
  until redis-cli -h "$h" -p 6379 ping 2>/dev/null | grep -q PONG; do echo "waiting for $h"; sleep 2; done
done
for h in $hosts; do
  assigned=$(redis-cli -h "$h" -p 6379 cluster info | tr -d '\\r' | sed -n 's/^cluster_slots_assigned://p')
  if [ "${assigned:-0}" -gt 0 ]; then echo "the cluster is formed already ($h has $assigned slots)"; exit 0; fi
done
addrs=""
for h in $hosts; do addrs="$addrs $(getent hosts "$h" | cut -d' ' -f1):6379"; done
# shellcheck disable=SC2086 # one word per node
redis-cli --cluster create $addrs --cluster-replicas "$REPLICAS" --cluster-yes
"""

FORM_JOB_TTL = 600
SCRIPTS = {"start.sh": START_SH, "ready.sh": READY_SH, "form.sh": FORM_SH}


def cache_objects(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    """The scripts, headless Service, StatefulSet, forming Job and PodDisruptionBudget of one cache."""
    return [
        scripts_config_map(spec.app, name),
        headless_service(spec.app, name),
        stateful_set(spec, name, options=options),
        forming_job(spec, name, options=options),
        disruption_budget(spec.app, name),
    ]


def node_count(cache: CacheSpec) -> int:
    return cache.shards * (1 + cache.replicas)


def node_domain(app: str, name: str, options: RenderOptions) -> str:
    return f"{name}.{meta.namespace_of(app)}.svc.{options.cluster_domain}"


def scripts_config_map(app: str, name: str) -> dict:
    obj = meta.header("v1", "ConfigMap", name=f"{name}-scripts", namespace=meta.namespace_of(app),
                      labels=meta.cache_labels(app, name))
    obj["data"] = dict(SCRIPTS)
    return obj


def headless_service(app: str, name: str) -> dict:
    obj = meta.header("v1", "Service", name=name, namespace=meta.namespace_of(app),
                      labels=meta.cache_labels(app, name))
    obj["spec"] = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": meta.cache_node_selector(app, name),
        "ports": [{"name": "client", "port": 6379, "targetPort": 6379, "protocol": "TCP"},
                  {"name": "bus", "port": 16379, "targetPort": 16379, "protocol": "TCP"}],
    }
    return obj


def node_env(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    cache = spec.caches[name]
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CACHE_NAME", "value": name},
        {"name": "NODE_DOMAIN", "value": node_domain(spec.app, name, options)},
        {"name": "NODES", "value": str(node_count(cache))},
        {"name": "REPLICAS", "value": str(cache.replicas)},
        {"name": "NODE_TIMEOUT_MS", "value": str(NODE_TIMEOUT_MS)},
        {"name": "MAXMEMORY", "value": str(cache.memory)},
        {"name": "APPENDONLY", "value": "yes" if cache.persistence == "aof" else "no"},
        {"name": "RDB_SNAPSHOTS", "value": "yes" if cache.persistence == "rdb" else "no"},
        {"name": "PASSWORD_FILE", "value": f"{AUTH_DIR}/password"},
    ]


def image(cache: CacheSpec, options: RenderOptions) -> str:
    return cache.image or options.redis_image


def memory_limit(cache: CacheSpec) -> str:
    """Room above ``maxmemory`` for Redis' own overhead and the copy-on-write of a rewrite."""
    size = cache.memory + cache.memory // 2 + 64 * MIB
    return meta.memory_quantity(-(-size // MIB) * MIB)


def storage_size(cache: CacheSpec) -> str:
    """Twice the memory (an AOF and its rewrite), whole GiB, at least 1 GiB."""
    return meta.memory_quantity(max(GIB, -(-2 * cache.memory // GIB) * GIB))


def _volumes(name: str) -> list[dict]:
    """The scripts, the password as a file (read by the scripts, never in env or argv), and /tmp."""
    auth = {"secretName": secrets.cache_secret_name(name), "defaultMode": secrets.FILE_MODE,
            "items": [{"key": "password", "path": "password"}]}
    return [{"name": "scripts", "configMap": {"name": f"{name}-scripts", "defaultMode": 0o555}},
            {"name": "auth", "secret": auth}, workloads.tmp_volume()]


def _mounts() -> list[dict]:
    return [{"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}, workloads.tmp_mount()]


def _script_probe(script: str, *, period: int, timeout: int, failures: int) -> dict:
    return {"exec": {"command": ["sh", f"{SCRIPTS_DIR}/{script}"]}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures, "successThreshold": 1}


def node_container(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    cache = spec.caches[name]
    mem = memory_limit(cache)
    return {
        "name": "redis",
        "image": image(cache, options),
        "imagePullPolicy": options.image_pull_policy,
        "command": ["sh", f"{SCRIPTS_DIR}/start.sh"],
        "ports": [{"name": "client", "containerPort": 6379, "protocol": "TCP"},
                  {"name": "bus", "containerPort": 16379, "protocol": "TCP"}],
        "env": node_env(spec, name, options=options),
        "resources": {"requests": {"cpu": "100m", "memory": mem}, "limits": {"cpu": "1", "memory": mem}},
        "readinessProbe": _script_probe("ready.sh", period=5, timeout=5, failures=1),
        "livenessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 10, "timeoutSeconds": 2,
                          "failureThreshold": 6, "successThreshold": 1},
        "securityContext": workloads.container_security(options),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, *_mounts()],
    }


def stateful_set(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    cache = spec.caches[name]
    obj = meta.header("apps/v1", "StatefulSet", name=name, namespace=meta.namespace_of(spec.app),
                      labels=meta.cache_labels(spec.app, name))
    selector = meta.cache_selector(spec.app, name)
    pod_spec = {
        **workloads.pod_security(options),
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": selector}}}]}},
        "containers": [node_container(spec, name, options=options)],
        "volumes": _volumes(name),
    }
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage_size(cache)}}}
    if options.storage_class:
        claim["storageClassName"] = options.storage_class
    obj["spec"] = {
        "serviceName": name,
        "replicas": node_count(cache),
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": meta.cache_labels(spec.app, name, role="cache-node"),
                                  "annotations": {"io.flotilla.scripts": meta.short_hash(str(SCRIPTS))}},
                     "spec": pod_spec},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
    }
    return obj


def forming_job(spec: AppSpec, name: str, *, options: RenderOptions) -> dict:
    """Named after what it forms, so a changed cluster shape is a new Job (a Job's pods are immutable)."""
    cache = spec.caches[name]
    env = node_env(spec, name, options=options)
    shape = meta.short_hash(f"{node_count(cache)}/{cache.replicas}/{image(cache, options)}/{FORM_SH}")
    obj = meta.header("batch/v1", "Job", name=f"{name}-form-{shape}", namespace=meta.namespace_of(spec.app),
                      labels=meta.cache_labels(spec.app, name))
    worker = {
        "name": "form",
        "image": image(cache, options),
        "imagePullPolicy": options.image_pull_policy,
        "command": ["sh", f"{SCRIPTS_DIR}/form.sh"],
        "env": env,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        "securityContext": workloads.container_security(options),
        "volumeMounts": _mounts(),
    }
    obj["spec"] = {
        "backoffLimit": 10,
        "activeDeadlineSeconds": 1800,
        # Gone, with its pod, 10 min after it ends; the next apply makes it again and
        # form.sh, finding the cluster formed, exits at once.
        "ttlSecondsAfterFinished": FORM_JOB_TTL,
        "template": {
            "metadata": {"labels": meta.cache_labels(spec.app, name, role="cache-init")},
            "spec": {**workloads.pod_security(options), "restartPolicy": "OnFailure", "containers": [worker],
                     "volumes": _volumes(name)},
        },
    }
    return obj


def disruption_budget(app: str, name: str) -> dict:
    """Voluntary disruptions (drains, upgrades) take one node at a time, so a shard keeps a copy."""
    obj = meta.header("policy/v1", "PodDisruptionBudget", name=name, namespace=meta.namespace_of(app),
                      labels=meta.cache_labels(app, name))
    obj["spec"] = {"maxUnavailable": 1, "selector": {"matchLabels": meta.cache_node_selector(app, name)}}
    return obj
