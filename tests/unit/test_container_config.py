"""What a replica's container looks like (engines/docker/containers.py), without Docker.

The mapping from spec to container is where the public/internal line and
ownership labels are made, so each rule is checked here on plain data.
"""

from __future__ import annotations

from flotilla import labels
from flotilla.addons.redis_cluster.nodes import with_cache_nodes
from flotilla.engines.docker.containers import INTERNAL_DNS_OPTIONS, MountSpec, Overrides, replica_container_config
from flotilla.spec import parse_spec
from flotilla.spec.models import VolumeSpec

SPEC = parse_spec("""\
app: shop
services:
  web:
    image: shop-web:1
    port: 8000
    command: [serve, --fast]
    env: {LOG_LEVEL: info}
    resources: {cpus: 0.5, memory: 128M}
  db:
    image: db:1
  fetcher:
    image: fetch:1
    egress: true
""", filename="flotilla.yaml", environ={})


# Volumes come from add-ons (a cache node's /data), not from the spec's own keys.
DB = SPEC.services["db"].model_copy(update={"volumes": {"data": VolumeSpec(path="/var/lib/db")}})
SPEC = SPEC.model_copy(update={"services": {**SPEC.services, "db": DB}})


def config(service: str, **kwargs):
    return replica_container_config(spec=SPEC, service=service, index=2, config_hash="abcdef123456", **kwargs)


def test_a_replica_is_named_labelled_and_knows_who_it_is():
    web = config("web")
    assert (web.name, web.hostname) == ("shop-web-2-abcdef", "web-2")
    assert web.labels[labels.APP] == "shop" and web.labels[labels.SERVICE] == "web"
    assert web.labels[labels.REPLICA] == "2" and web.labels[labels.CONFIG_HASH] == "abcdef123456"
    assert web.environment == {"LOG_LEVEL": "info", "FLOTILLA_APP": "shop", "FLOTILLA_SERVICE": "web",
                               "FLOTILLA_REPLICA": "web-2"}


def test_limits_and_command_come_from_the_spec():
    web = config("web")
    assert (web.nano_cpus, web.mem_limit) == (500_000_000, 128 * 1024 * 1024)
    assert web.command == ("serve", "--fast") and web.entrypoint is None
    assert config("db").nano_cpus is None


def test_replicas_live_on_the_internal_network_found_by_service_and_replica_name():
    web = config("web")
    assert web.network == "flotilla-shop-internal" and web.aliases == ("web", "web-2")
    assert web.extra_networks == () and web.dns_options == INTERNAL_DNS_OPTIONS


def test_only_an_egress_service_joins_the_egress_network_and_keeps_default_dns():
    fetcher = config("fetcher")
    assert fetcher.extra_networks == ("flotilla-shop-egress",) and fetcher.dns_options == ()


CACHED = with_cache_nodes(parse_spec("""\
app: shop
caches:
  sessions: {type: redis-cluster, shards: 3, replicas: 0}
services:
  cart: {image: shop-cart:1, port: 8000, caches: [sessions], egress: true}
  catalog: {image: shop-catalog:1, port: 8000}
""", filename="flotilla.yaml", environ={}))


def test_a_cache_node_lives_only_on_its_caches_network_and_only_its_consumers_join_it():
    def of(service: str):
        return replica_container_config(spec=CACHED, service=service, index=1, config_hash="abcdef123456")
    node, cart, catalog = of("sessions-0-0"), of("cart"), of("catalog")
    assert (node.network, node.aliases, node.extra_networks) == (
        "flotilla-shop-cache-sessions", ("sessions-0-0", "sessions-0-0-1"), ())
    assert node.dns_options == INTERNAL_DNS_OPTIONS
    assert cart.network == "flotilla-shop-internal"
    assert cart.extra_networks == ("flotilla-shop-cache-sessions", "flotilla-shop-egress")
    assert (catalog.network, catalog.extra_networks) == ("flotilla-shop-internal", ())


def test_each_slot_gets_its_own_named_volumes():
    db = config("db")
    assert [v.name for v in db.volumes] == ["flotilla-shop-db-2-data"]
    assert db.mounts == (MountSpec(kind="volume", source="flotilla-shop-db-2-data", target="/var/lib/db",
                                   read_only=False),)


def test_overrides_mount_secrets_and_wrap_the_command():
    secret = MountSpec.bind("/run/s", "/run/secrets")
    wrapped = config("web", overrides=Overrides(mounts=(secret,), entrypoint=("/shim",), command=("serve",)))
    assert wrapped.mounts == (secret,) and secret.read_only
    assert (wrapped.entrypoint, wrapped.command) == (("/shim",), ("serve",))
