"""The app spec as frozen data: what every other module of Flotilla reads.

These models hold values that have already passed validation (see
``validate.py``): durations in seconds, memory in bytes, names checked. They
are frozen so that a spec, once loaded, can be shared by the planner, the
engines and the gateway without anyone changing it under the others' feet.
Pydantic checks only the types here; the rules with their messages live in
the validator, which reports every problem with a file position.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flotilla.spec.units import MIB

Probe = Literal["http", "tcp", "none"]
PullPolicy = Literal["missing", "always", "never"]
# The largest request body the gateway lets through to a service unless its
# spec says otherwise: 1 MiB, the default of nginx's client_max_body_size and
# so of ingress-nginx's proxy-body-size, so a spec without max_body means the
# same on one host and on Kubernetes.
DEFAULT_MAX_BODY = 1 * MIB
# The most processes and threads a replica may have unless its spec says
# otherwise: plenty for a threaded server, far below what lets a fork bomb
# starve the host.
DEFAULT_PIDS_LIMIT = 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySpec(_Frozen):
    """Where the HAProxy gateway listens on the host (the only host port Flotilla opens)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # The HTTPS listener on the same host (docs/https.md); None: the gateway speaks plain HTTP only.
    https_port: int | None = None

    @property
    def listen(self) -> str:
        """``host:port``, with an IPv6 host in brackets: ``[::1]:8080``."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


class HealthSpec(_Frozen):
    """How readiness is probed: an HTTP GET on ``path``, or a TCP connect without one."""

    path: str | None = None
    interval: float = 2.0
    timeout: float = 1.0
    # Liveness (daemon/liveness.py): a replica failing its check this long is
    # replaced with the crash back-off; None (the default) keeps it, out of traffic.
    replace_after: float | None = None
    start_period: float = 0.0  # failures this soon after the start do not count towards it

    @property
    def kind(self) -> Literal["http", "tcp"]:
        """``http`` with a path; ``tcp`` otherwise (ServiceSpec.probe adds ``none``)."""
        return "http" if self.path else "tcp"


DEFAULT_DEPLOY_DEADLINE = 60.0


class DeploySpec(_Frozen):
    """How a rollout of the service is judged: its new replicas must make progress
    (one more healthy) within ``deadline``, or the rollout fails and, by default,
    the app returns to its previous revision (``on_failure: hold`` stops and reports)."""

    deadline: float = DEFAULT_DEPLOY_DEADLINE
    on_failure: Literal["rollback", "hold"] = "rollback"


class ResourcesSpec(_Frozen):
    """Limits for each replica: CPUs (fractions allowed) and memory in bytes."""

    cpus: float | None = None
    memory: int | None = None


class TlsSpec(_Frozen):
    """How a route is served over HTTPS: exactly one certificate source, ``certificate`` (a vault
    certificate of the app, ``flotilla certs set``) or ``acme`` (issued for the route's host)."""

    certificate: str | None = None
    acme: bool = False
    redirect: bool = True  # plain HTTP gets a 308 to https (never /.well-known/acme-challenge/)
    hsts: int = 0  # seconds of Strict-Transport-Security; 0: none (opt-in)


class RouteSpec(_Frozen):
    """A public entry: requests for ``host`` under ``path`` go to the service."""

    host: str
    path: str = "/"
    strip_prefix: bool = False
    tls: TlsSpec | None = None  # None: plain HTTP only


class AutoscaleTarget(_Frozen):
    """Per-replica targets; the autoscaler keeps the busiest metric at its target."""

    concurrency: float | None = None
    rps: float | None = None
    cpu: float | None = None  # percent of resources.cpus


class AutoscaleSpec(_Frozen):
    min: int
    max: int
    target: AutoscaleTarget
    scale_down_delay: float = 60.0


class BuildSpec(_Frozen):
    """How to build a service's image from source (compose's ``build:``): an absolute context once loaded."""

    context: str
    dockerfile: str = "Dockerfile"  # relative to the context, as in compose
    args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None


class ImagePin(_Frozen):
    """What an image reference resolved to at deploy: set by the daemon, never by a spec file.

    ``id`` is the local image (``sha256:...``) every replica of the deploy runs;
    ``digest`` the registry's manifest digest (``repo@sha256:...``) when the image
    came from a registry, which Kubernetes manifests use.
    """

    id: str
    digest: str | None = None


class VolumeSpec(_Frozen):
    """A volume of a service (docs/volumes.md): a named volume of each replica slot, owned by the
    app and kept until ``down --volumes``; or, with ``bind``, a host directory, which Flotilla does
    not own and which the spec must opt in to (``allow_host_paths``)."""

    path: str  # the mount point inside the container
    read_only: bool = False
    bind: str | None = None  # an absolute host path; None: a named volume


class BackupSpec(_Frozen):
    """How ``flotilla backup`` takes the service's data (docs/volumes.md, "Backups").

    With ``command`` it runs inside a running replica and its standard output is the
    backup (``pg_dump``: consistent while the service serves); ``restore_command`` reads
    a backup on its standard input. Without it, the volume is archived with the service
    stopped. ``schedule`` (cron, UTC) takes one regularly, keeping the last ``keep``.
    """

    command: tuple[str, ...] | None = None
    restore_command: tuple[str, ...] | None = None
    schedule: str | None = None
    keep: int = 7


DEFAULT_BEFORE_DEPLOY_TIMEOUT = 600.0


class BeforeDeploySpec(_Frozen):
    """A command run once in a new revision's image before its first new replica starts (a migration)."""

    command: tuple[str, ...]
    timeout: float = DEFAULT_BEFORE_DEPLOY_TIMEOUT


class ServiceSpec(_Frozen):
    """One service: the container to run, how many, and how it is reached."""

    image: str
    command: tuple[str, ...] | None = None
    port: int | None = None
    replicas: int = 1
    # Warm standby (docs/scaling.md): this many more replicas run and are probed but get no traffic
    # from the gateway; a scale-up takes them first, so new capacity is a routing change.
    standby: int = 0
    env: dict[str, str] = Field(default_factory=dict)
    health: HealthSpec = Field(default_factory=HealthSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    egress: bool = False
    routes: tuple[RouteSpec, ...] = ()
    max_body: int = DEFAULT_MAX_BODY  # bytes of a request body through the gateway
    secrets: dict[str, str] = Field(default_factory=dict)  # env name or file path -> secret
    autoscale: AutoscaleSpec | None = None
    # The gateway's limit per replica (spec/concurrency.py): None gives every request to a replica at once.
    concurrency: int | None = None
    queue_timeout: float | None = None  # seconds in the gateway's queue; None: 10 s
    caches: tuple[str, ...] = ()
    # How far the process may act (spec/hardening.py); every replica starts with
    # no capability, no-new-privileges and no core dumps.
    user: str | None = None  # UID[:GID] or NAME[:GROUP]; None: the image's USER
    read_only: bool = False  # a read-only root filesystem, with a tmpfs at /tmp
    cap_add: tuple[str, ...] = ()  # capabilities given back, without CAP_
    pids_limit: int = DEFAULT_PIDS_LIMIT
    # Each replica slot's own volumes (docs/volumes.md): a service with any is recreated on change.
    volumes: dict[str, VolumeSpec] = Field(default_factory=dict)
    allow_host_paths: bool = False  # the opt-in a volume with bind: needs
    backup: BackupSpec | None = None
    # Set only by add-ons for the services they make (a cache's nodes), never
    # by a spec file: the validator knows no such keys.
    restart_delay: float = 0.0  # a dead replica is replaced no sooner than this
    addon: str | None = None  # what made the service, e.g. "cache:sessions"
    # Where the image comes from (docs/spec.md, "Images"): None follows the app's pull.
    pull: PullPolicy | None = None
    build: BuildSpec | None = None
    before_deploy: BeforeDeploySpec | None = None  # daemon/tasks.py; not in the config hash

    def serves(self, index: int) -> bool:
        """Whether replica slot ``index`` takes traffic: within the count; the slots after it are warm standby."""
        return index <= self.replicas

    @property
    def probe(self) -> Probe:
        """``http`` with a health path, ``tcp`` with a port, ``none`` without either."""
        if self.health.path and self.port is not None:
            return "http"
        return "tcp" if self.port is not None else "none"

    @property
    def named_volumes(self) -> dict[str, VolumeSpec]:
        """The volumes Flotilla creates and owns (not host paths): volume name -> its spec."""
        return {name: v for name, v in self.volumes.items() if v.bind is None}

    @property
    def secret_env(self) -> dict[str, str]:
        """Secrets delivered as environment variables: env name -> secret name."""
        return {k: v for k, v in self.secrets.items() if not k.startswith("/")}

    @property
    def secret_files(self) -> dict[str, str]:
        """Secrets delivered as files: absolute path -> secret name."""
        return {k: v for k, v in self.secrets.items() if k.startswith("/")}


class CacheSpec(_Frozen):
    """A Redis Cluster add-on: ``shards`` masters, each with ``replicas`` replicas."""

    type: Literal["redis-cluster"]
    shards: int = 3
    replicas: int = 1
    memory: int = 128 * MIB
    persistence: Literal["none", "aof", "rdb"] = "aof"
    image: str | None = None


LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class AcmeSpec(_Frozen):
    """The app's ACME account, for routes with ``tls: {acme: true}`` (docs/https.md): where
    certificates are ordered (any RFC 8555 directory; Let's Encrypt by default) and who the CA
    may write to about them."""

    email: str | None = None
    directory: str = LETS_ENCRYPT_DIRECTORY


DEFAULT_JOB_TIMEOUT = 3600.0
Concurrency = Literal["forbid", "allow", "replace"]
Missed = Literal["skip", "run_once"]


class JobSpec(_Frozen):
    """A scheduled job (plan/jobs.py): a container run on a cron ``schedule`` (spec/schedules.py, UTC).

    It takes its image, env, secrets and networks from ``service`` (the image the
    deploy pinned), or runs ``image`` with only its own env and secrets.
    ``concurrency`` says what a run due while another is still going does:
    ``forbid`` skips it, ``allow`` starts it too, ``replace`` stops the old one.
    ``missed`` says what happens to runs due while the daemon was down:
    ``run_once`` (the default) runs one when it is back, ``skip`` waits for the next."""

    schedule: str
    command: tuple[str, ...] | None = None
    service: str | None = None
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    timeout: float = DEFAULT_JOB_TIMEOUT
    concurrency: Concurrency = "forbid"
    missed: Missed = "run_once"


class AppSpec(_Frozen):
    """A whole application: the one file ``flotilla up`` makes real."""

    app: str
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    services: dict[str, ServiceSpec]
    caches: dict[str, CacheSpec] = Field(default_factory=dict)
    pull: PullPolicy = "missing"  # the default of every service's pull
    acme: AcmeSpec = Field(default_factory=AcmeSpec)
    jobs: dict[str, JobSpec] = Field(default_factory=dict)
    # Set by the daemon at deploy (daemon/images.py), never by a spec file:
    # image reference -> what it resolved to; every replica of the deploy runs it.
    images: dict[str, ImagePin] = Field(default_factory=dict)
