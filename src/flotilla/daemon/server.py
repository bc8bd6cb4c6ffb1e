"""Running the daemon: one per home, in the foreground or spawned by the CLI.

``build`` wires every part of the daemon once, in dependency order (the
drawing is in docs/architecture.md). A file lock makes a second daemon on
the same home refuse to start (and say which pid holds it); the API socket is
created with mode 0600 so only its owner can talk to the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flotilla.addons.redis_cluster.client import ClusterClient
from flotilla.addons.redis_cluster.nodes import DEFAULT_IMAGE as DEFAULT_CACHE_IMAGE
from flotilla.addons.redis_cluster.nodes import IMAGE_SETTING as CACHE_IMAGE_SETTING
from flotilla.daemon.acme import CA_BUNDLE_SETTING as ACME_CA_BUNDLE_SETTING
from flotilla.daemon.acme import AcmeIssuer
from flotilla.daemon.activator import Activator, gateway_access
from flotilla.daemon.activator import socket_path as activator_socket
from flotilla.daemon.api import LIMITS as API_LIMITS
from flotilla.daemon.api import Api, BearerToken, DaemonParts, Frontend, FrontendFactory
from flotilla.daemon.apps import AppRepository
from flotilla.daemon.autoscaler import Autoscaler
from flotilla.daemon.backups import Backups
from flotilla.daemon.cache_states import CacheStates
from flotilla.daemon.caches import CacheKeeper
from flotilla.daemon.certificates import CertificateStore, default_bundle
from flotilla.daemon.counts import ReplicaCounts
from flotilla.daemon.deployments import Deployments
from flotilla.daemon.events import EventLog
from flotilla.daemon.health import HealthProber
from flotilla.daemon.images import Images
from flotilla.daemon.injection import SecretInjector, open_vault
from flotilla.daemon.job_store import JobStore
from flotilla.daemon.jobs import Jobs
from flotilla.daemon.operations import Operations
from flotilla.daemon.paths import Home
from flotilla.daemon.reconciler import Reconciler
from flotilla.daemon.registries import Registries
from flotilla.daemon.revision_store import RevisionStore
from flotilla.daemon.runtime import ReadyReplicas, RuntimeSpecs
from flotilla.daemon.serving import HttpServer, serve_all
from flotilla.daemon.snapshots import Snapshots
from flotilla.daemon.status import StatusViews
from flotilla.daemon.store import Store
from flotilla.daemon.tasks import Tasks
from flotilla.daemon.traffic import Traffic
from flotilla.daemon.wakeups import Loops, Wakeups
from flotilla.daemon.watchers import EngineWatcher, on_health_change
from flotilla.engines.docker import DockerEngine
from flotilla.engines.docker.images import DockerImages
from flotilla.errors import DaemonError, FlotillaError
from flotilla.gateway.accesslog import AccessLog
from flotilla.gateway.certificates import GatewayCertificates
from flotilla.gateway.challenge_map import ChallengeMap
from flotilla.gateway.manager import GatewayManager
from flotilla.gateway.metrics import MetricsWindow
from flotilla.gateway.process import GatewayFiles
from flotilla.gateway.workers import worker_user
from flotilla.secrets.injection import SecretsRuntime
from flotilla.secrets.keys import read_private_file

log = logging.getLogger(__name__)
NO_USERNS_WARNING = (
    "Docker Engine does not remap user namespaces, so a replica's uid is the same uid on the host "
    "and a host user sharing it can read the replica's environment and secret files under /proc; "
    'start dockerd with --userns-remap=default (or "userns-remap": "default" in '
    "/etc/docker/daemon.json, then restart Docker; scripts/setup.sh does it when it starts dockerd)"
)
TOKEN_VARIABLE = "FLOTILLA_API_TOKEN"
DASHBOARD_LISTEN = "127.0.0.1:0"  # the dashboard's loopback listener; port 0: a free one, chosen at start


@dataclass(frozen=True)
class Daemon:
    """Every part of a running daemon, each built once (see ``build``)."""

    store: Store
    api: Api
    loops: Loops
    wakeups: Wakeups
    activator: Activator
    engine: DockerEngine
    frontend: Frontend | None = None  # the dashboard, when the daemon was handed one


def build(home: Home, *, docker_url: str | None, environ: Mapping[str, str],
          frontend: FrontendFactory | None = None, frontend_url: str = "") -> Daemon:
    """Wire the daemon's parts in one place, in dependency order; nothing is set afterwards.

    Arrows only point at parts built earlier: the store and the engine first,
    then what observes (snapshots, runtime specs), what decides and acts
    (reconciler, autoscaler, cache keeper), and last what answers (status,
    operations, the API). A front end (the dashboard) comes last but one: it
    reads and acts through those parts, and the API mounts it.
    """
    store = Store(home.store, clock=time.time)
    engine = DockerEngine(home=home.identity, home_path=str(home.root.resolve()), base_url=docker_url)
    vault, keys = open_vault(home=home.root, store=home.store, environ=environ, clock=time.time)
    injector = SecretInjector(vault=vault, runtime=SecretsRuntime(home=home.root), engine=engine, keys=keys)
    apps = AppRepository(store)
    certificates = CertificateStore(vault, clock=time.time)
    events = EventLog(store, secret_values=vault.values)
    wakeups = Wakeups(clock=time.time)
    metrics = MetricsWindow()
    activator_path = activator_socket(home=home.root, identity=home.identity)
    gateway_files = GatewayFiles(home.root / "gateway")
    tls_files = GatewayCertificates(directory=injector.runtime.gateway_dir,
                                    default_bundle=lambda: default_bundle(now=time.time()))
    gateway = GatewayManager(files=gateway_files, worker_user=worker_user(environ),
                             activator_socket=str(activator_path), certificates=tls_files)
    traffic = Traffic(gateway=gateway, metrics=metrics, clock=time.monotonic, scale_from_zero=True,
                      certificates=certificates.bundles)
    prober = HealthProber(on_change=on_health_change(events=events, wakeups=wakeups), clock=time.time,
                          on_ready=traffic.serve_ready)
    snapshots = Snapshots(engine=engine, prober=prober)
    cache_states = CacheStates()
    runtime = RuntimeSpecs(cache_states=cache_states, snapshots=snapshots,
                           cache_image=environ.get(CACHE_IMAGE_SETTING) or DEFAULT_CACHE_IMAGE)
    counts = ReplicaCounts(apps=apps, events=events, wakeups=wakeups)
    autoscaler = Autoscaler(apps=apps, snapshots=snapshots, metrics=metrics, engine=engine, counts=counts,
                            clock=time.monotonic)
    ready = ReadyReplicas(apps=apps, runtime=runtime, snapshots=snapshots)
    access_log = AccessLog(gateway_files.access_log, pipe=gateway_files.access_pipe)
    activator = Activator(path=activator_path, access=gateway_access(worker_user(environ)),
                          wake=autoscaler.wake, ready_replica=ready.find, held=traffic.held)
    deployments = Deployments(store=RevisionStore(home.store), apps=apps, events=events, engine=engine,
                              clock=time.time, vault=vault)
    reconciler = Reconciler(engine=engine, apps=apps, snapshots=snapshots, runtime=runtime, events=events,
                            wakeups=wakeups, crash_history=store, cache_states=cache_states, clock=time.time,
                            injector=injector, traffic=traffic, deployments=deployments)
    keeper = CacheKeeper(apps=apps, runtime=runtime, snapshots=snapshots, states=cache_states,
                         client=ClusterClient(), vault=vault, events=events, wakeups=wakeups, clock=time.monotonic)
    issuer = AcmeIssuer(apps=apps, certificates=certificates, vault=vault, events=events, wakeups=wakeups,
                        responder=ChallengeMap(gateway_files.challenge_map, gateway.runtime),
                        ca_bundle=environ.get(ACME_CA_BUNDLE_SETTING) or None, clock=time.time,
                        routed=lambda app, service: gateway.backend_of(app, service) is not None)
    status = StatusViews(apps=apps, runtime=runtime, snapshots=snapshots, reconciler=reconciler,
                         cache_states=cache_states, traffic=traffic, autoscaler=autoscaler,
                         warnings=_host_warnings(engine), more_metrics=(issuer.prometheus,))
    image_source = DockerImages.of(engine)
    registries = Registries(vault=vault, checker=image_source)
    images = Images(source=image_source, store=store, registries=registries)
    tasks = Tasks(engine=engine, injector=injector, clock=time.time)
    jobs = Jobs(apps=apps, store=JobStore(home.store), tasks=tasks, engine=engine, events=events, clock=time.time)
    operations = Operations(apps=apps, runtime=runtime, engine=engine, reconciler=reconciler, counts=counts,
                            events=events, wakeups=wakeups, injector=injector, images=images,
                            deployments=deployments, certificates=certificates, tasks=tasks, jobs=jobs)
    backups = Backups(root=home.backups, engine=engine, apps=apps, reconciler=reconciler, events=events)
    loops = Loops([
        ("reconcile", reconciler.run),
        ("docker-events", EngineWatcher(engine=engine, wakeups=wakeups).run),
        ("health", prober.run),
        ("metrics", traffic.run_sampler),
        ("caches", keeper.run),
        ("autoscaler", autoscaler.run),
        ("gateway-log", access_log.run),
        ("acme", issuer.run),
        ("backups", backups.run),
        ("jobs", jobs.loop),
    ])
    parts = DaemonParts(apps=apps, status=status, history=store, metrics=metrics, operations=operations,
                        events=events, snapshots=snapshots, traffic=traffic, engine=engine, wakeups=wakeups,
                        access_log=access_log)
    front = frontend(parts, frontend_url) if frontend else None
    api = Api(apps=apps, operations=operations, status=status, history=store, engine=engine, access_log=access_log,
              frontend=front, registries=registries, images=images, backups=backups, tasks=tasks, jobs=jobs)
    return Daemon(store=store, api=api, loops=loops, wakeups=wakeups, activator=activator, engine=engine,
                  frontend=front)


def _host_warnings(engine: DockerEngine) -> tuple[str, ...]:
    """What this host does that weakens every app, asked of Docker once, at start, and logged."""
    try:
        remapped = engine.remaps_users()
    except FlotillaError as exc:
        log.warning("could not ask Docker whether it remaps user namespaces: %s", exc.message)
        return ()
    if remapped:
        return ()
    log.warning("%s", NO_USERNS_WARNING)
    return (NO_USERNS_WARNING,)


def run_daemon(home: Home, *, docker_url: str | None = None, api_listen: str | None = None,
               frontend: FrontendFactory | None = None, frontend_listen: str = DASHBOARD_LISTEN) -> None:
    """Serve until SIGTERM or SIGINT; returns after a clean shutdown.

    With ``frontend`` (the dashboard's factory), it is also served alone on a
    loopback listener (``frontend_listen``; port 0 picks a free one), whose
    address the login URLs carry.
    """
    home.ensure()
    lock = _take_lock(home)
    try:
        token = api_token(home, os.environ) if api_listen else ""  # refused before anything starts
        home.pid_file.write_text(f"{os.getpid()}\n")
        front_sock = _loopback_socket(frontend_listen) if frontend and frontend_listen else None
        daemon = build(home, docker_url=docker_url, environ=os.environ, frontend=frontend,
                       frontend_url=_url_of(front_sock) if front_sock else "")
        daemon.engine.guard_host()  # before any replica of an app already here runs again
        daemon.activator.start()
        servers = [_bind(home, daemon.api)]
        if api_listen:
            servers.append(_listen_tcp(daemon.api, api_listen, token=token, admits=daemon.frontend))
        if front_sock and daemon.frontend:
            servers.append(HttpServer(daemon.frontend, sockets=[front_sock], limits=API_LIMITS))
            log.info("dashboard on %s (`flotilla dashboard` prints a login link)", _url_of(front_sock))
        _stop_on_signals(servers, daemon)
        daemon.loops.start()
        log.info("flotilla daemon %d serving on %s", os.getpid(), home.socket)
        serve_all(servers)  # this thread's event loop, until a signal stops every server
        daemon.activator.stop()
        daemon.store.close()
    finally:
        _cleanup(home)
        lock.close()


def _take_lock(home: Home):
    lock = open(home.lock_file, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock.close()
        raise DaemonError(
            f"another flotilla daemon (pid {home.daemon_pid()}) is already running for {home.root}"
        ) from exc
    return lock


def _bind(home: Home, api: Api) -> HttpServer:
    """The API on the UNIX socket, created 0600 (under umask 0o177, so never wider, not even for a moment)."""
    if home.socket.exists():
        home.socket.unlink()  # stale: we hold the lock, so no daemon serves it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(home.socket))
    finally:
        os.umask(old_umask)
    os.chmod(home.socket, 0o600)
    sock.listen(API_LIMITS.backlog)  # clients queue from now on, before the event loop runs
    return HttpServer(api, sockets=[sock], limits=API_LIMITS)


def _tcp_socket(option: str, listen: str, *, loopback_only: bool = False) -> socket.socket:
    """A listening TCP socket on ``listen`` (HOST:PORT, given as ``option``)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise DaemonError(f"{option} {listen!r}: write HOST:PORT, for example 127.0.0.1:7070")
    if loopback_only and not _is_loopback(host):
        raise DaemonError(f"{option} {listen!r}: the dashboard's own listener is for loopback only "
                          "(127.0.0.1 or ::1); to reach it from elsewhere, use --api-listen (bearer token)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, backlog=API_LIMITS.backlog)
    except OSError as exc:
        raise DaemonError(f"cannot listen on {listen}: {exc.strerror}; choose another {option}") from exc


def _loopback_socket(listen: str) -> socket.socket:
    """The dashboard's own listener: loopback only (elsewhere it is served on --api-listen, behind the token)."""
    return _tcp_socket("--dashboard-listen", listen, loopback_only=True)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listen_tcp(api: Api, listen: str, *, token: str, admits: Frontend | None = None) -> HttpServer:
    """The API on TCP too, where every request needs the bearer token (never empty: ``api_token``);
    the dashboard's paths take its own session instead."""
    sock = _tcp_socket("--api-listen", listen)
    log.info("API also on http://%s (bearer token required)", listen)
    gate = BearerToken(api, token=token, admits=admits.admits if admits else None)
    return HttpServer(gate, sockets=[sock], limits=API_LIMITS)


def api_token(home: Home, environ: Mapping[str, str]) -> str:
    """The TCP listener's token: FLOTILLA_API_TOKEN when set (even empty: an empty one is an
    error, never a fall-back to the file), else the token file. Never empty, so that
    ``Authorization: Bearer`` with nothing after it can never match."""
    if TOKEN_VARIABLE in environ:
        return _non_empty(environ[TOKEN_VARIABLE], what=TOKEN_VARIABLE,
                          fix=f"set {TOKEN_VARIABLE} to a long random token, or unset it to use {home.root}/api.token")
    return _token_file(home)


def _token_file(home: Home) -> str:
    """$FLOTILLA_HOME/api.token, made (0600) on first use, then checked as master.key is."""
    path = home.root / "api.token"
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    text = read_private_file(path, what="the API token file").decode("utf-8", errors="replace")
    return _non_empty(text, what=f"the API token file {path}",
                      fix="delete it (the daemon then makes a new one) or write a long random token into it")


def _non_empty(token: str, *, what: str, fix: str) -> str:
    token = token.strip()
    if not token:
        raise DaemonError(f"{what} is empty, and an empty token would let anyone in: {fix}")
    return token


def _stop_on_signals(servers: list[HttpServer], daemon: Daemon) -> None:
    """SIGTERM and SIGINT stop the loops first, then the API servers (``serve_all`` returns)."""

    def stop(signum, frame):  # signal handler signature
        log.info("signal %d: stopping", signum)
        daemon.loops.stop()
        daemon.wakeups.interrupt()
        for server in servers:
            server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _cleanup(home: Home) -> None:
    for path in (home.socket, home.pid_file):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
