"""The daemon's ACME loop: every ``tls: {acme: true}`` route gets a certificate, and keeps one.

Observe, plan, apply, like the reconciler: for each app it reads which hosts want
an ACME certificate (the spec) and what the certificate store holds for them
(daemon/certificates.py), asks the pure planner (plan/renewals.py) what is due
now, and orders each due certificate through gateway/acme.py, the HTTP-01
challenge answered by the gateway's own map (gateway/challenge_map.py). A new
certificate goes into the store and the app is woken, so the gateway sync loads
it into HAProxy at run time; this loop never talks to HAProxy's SSL commands.

Every step is an event (``certificate.requested``, ``.ordered``, ``.challenge``,
``.validated``, then ``.issued`` or ``.renewed``, or ``.failed``), and a failure
is loud three ways: the event, the error recorded on the certificate
(``flotilla certs ls`` shows it), and ``/metrics`` (``flotilla_acme_failures_total``,
``flotilla_acme_failing``). The old certificate
keeps serving until a new one is stored. The account key is made on the first
order and kept in the vault, one per app and directory.

The clock is injected: the planner reads ``clock()`` as epoch seconds, so a test
can move time past the renewal point instead of waiting weeks.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from flotilla.daemon.apps import AppRepository
from flotilla.daemon.certificates import acme_name
from flotilla.daemon.events import EventLog
from flotilla.daemon.wakeups import Wakeups
from flotilla.errors import FlotillaError
from flotilla.gateway.acme import AcmeClient, ChallengeResponder, IssuedCertificate, Progress, new_account_key
from flotilla.plan.renewals import (
    DEFAULT_POLICY,
    AttemptRecord,
    HeldCertificate,
    Order,
    RenewalPlan,
    RenewalPolicy,
    plan_renewals,
)
from flotilla.secrets import Vault
from flotilla.secrets.vault import ACME_NAMESPACE
from flotilla.spec import AppSpec

log = logging.getLogger(__name__)
CA_BUNDLE_SETTING = "FLOTILLA_ACME_CA_BUNDLE"  # CA certificates for the directory's own HTTPS
INTERVAL = 5.0  # seconds between two looks when nothing is due sooner
SOURCE = "acme"


class Issued(Protocol):
    """What the store tells of a certificate: its validity (``info``) and its last error."""

    info: object | None  # has not_before, not_after (epoch seconds) when a certificate is held
    error: str | None


class CertificateStore(Protocol):
    """The part of daemon/certificates.py this loop uses."""

    def get(self, app: str, name: str) -> Issued | None: ...

    def put(self, app: str, name: str, cert_pem: bytes, key_pem: bytes, *, source: str = "vault") -> object: ...

    def record_error(self, app: str, name: str, error: str, *, source: str = "acme") -> None: ...


class Client(Protocol):
    def issue(self, hosts: list[str], *, responder: ChallengeResponder, progress: Progress) -> IssuedCertificate: ...


ClientFactory = Callable[..., Client]


@dataclass(frozen=True)
class HostState:
    """What the loop remembers of one host: attempts, for the planner's back-off, and counts, for metrics."""

    attempt: AttemptRecord | None = None
    failures_total: int = 0
    issued_total: int = 0
    not_after: float | None = None  # the held certificate's expiry, as last seen


def acme_hosts(spec: AppSpec, *, routed: Callable[[str, str], bool] | None = None) -> list[str]:
    """The hosts of ``spec``'s routes that ask for an ACME certificate, each once, sorted.

    With ``routed(app, service)``, only the hosts of services the gateway routes
    already: the CA's challenge must reach the gateway's listener, and a failed
    validation counts against the CA's rate limits."""
    return sorted({route.host.lower() for name, svc in spec.services.items() for route in svc.routes
                   if route.tls is not None and route.tls.acme and (routed is None or routed(spec.app, name))})


def account_entry(app: str, directory: str) -> str:
    """The vault name of ``app``'s account key on ``directory`` (one account per CA)."""
    return f"{app}-{hashlib.sha256(directory.encode()).hexdigest()[:16]}"


class AcmeIssuer:
    """The loop (see the module docstring); ``tick`` is one pass, ``run`` the daemon's thread."""

    def __init__(
        self,
        *,
        apps: AppRepository,
        certificates: CertificateStore,
        vault: Vault,
        events: EventLog,
        wakeups: Wakeups,
        responder: ChallengeResponder,
        clock: Callable[[], float] = time.time,
        ca_bundle: str | None = None,
        client_factory: ClientFactory = AcmeClient,
        policy: RenewalPolicy = DEFAULT_POLICY,
        interval: float = INTERVAL,
        routed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._apps = apps
        self._certificates = certificates
        self._vault = vault
        self._events = events
        self._wakeups = wakeups
        self._responder = responder
        self._clock = clock
        self._ca_bundle = ca_bundle
        self._client_factory = client_factory
        self._policy = policy
        self._interval = interval
        self._routed = routed  # (app, service) -> does the gateway route it now? None: assume so
        self._lock = threading.Lock()
        self._hosts: dict[tuple[str, str], HostState] = {}
        self._clients: dict[tuple[str, str, str | None], Client] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                next_check = self.tick()
            except Exception:  # the loop must survive any bug
                log.exception("the ACME loop failed")
                next_check = None
            stop.wait(self._pause(next_check))

    def tick(self) -> float | None:
        """Order what is due for every app; the earliest time something else falls due."""
        soonest: list[float] = []
        wanted: set[tuple[str, str]] = set()
        for spec in self._apps.active():
            hosts = acme_hosts(spec, routed=self._routed)
            wanted |= {(spec.app, host) for host in hosts}
            if not hosts:
                continue
            for order in self._plan(spec.app, hosts).orders:
                self._order(spec, order)
            after = self._plan(spec.app, hosts).next_check  # what the orders just changed included
            if after is not None:
                soonest.append(after)
        self._forget_all_but(wanted)
        return min(soonest) if soonest else None

    def _forget_all_but(self, wanted: set[tuple[str, str]]) -> None:
        """Hosts no longer wanted (a route or an app removed) leave the metrics."""
        with self._lock:
            self._hosts = {key: state for key, state in self._hosts.items() if key in wanted}

    def _plan(self, app: str, hosts: list[str]) -> RenewalPlan:
        return plan_renewals(hosts, held=self._held(app, hosts), attempts=self._attempts(app, hosts),
                             now=self._clock(), policy=self._policy)

    def prometheus(self) -> str:
        """The loop's metrics in Prometheus' text format: failures never go unseen."""
        with self._lock:
            rows = sorted(self._hosts.items())
        lines = ["# HELP flotilla_acme_failures_total ACME orders that failed, per host",
                 "# TYPE flotilla_acme_failures_total counter"]
        lines += [f"flotilla_acme_failures_total{_labels(app, host)} {s.failures_total}" for (app, host), s in rows]
        lines += ["# HELP flotilla_acme_failing 1 while the last ACME order of the host failed",
                  "# TYPE flotilla_acme_failing gauge"]
        lines += [f"flotilla_acme_failing{_labels(app, host)} {int(bool(s.attempt and s.attempt.failures))}"
                  for (app, host), s in rows]
        lines += ["# HELP flotilla_acme_issued_total certificates issued or renewed through ACME, per host",
                  "# TYPE flotilla_acme_issued_total counter"]
        lines += [f"flotilla_acme_issued_total{_labels(app, host)} {s.issued_total}" for (app, host), s in rows]
        lines += ["# HELP flotilla_acme_certificate_expiry_timestamp_seconds when the host's ACME certificate expires",
                  "# TYPE flotilla_acme_certificate_expiry_timestamp_seconds gauge"]
        lines += [f"flotilla_acme_certificate_expiry_timestamp_seconds{_labels(app, host)} {s.not_after:.0f}"
                  for (app, host), s in rows if s.not_after is not None]
        return "\n".join(lines) + "\n"

    def state(self, app: str, host: str) -> HostState:
        with self._lock:
            return self._hosts.get((app, host), HostState())

    # -- one order -------------------------------------------------------------------------------

    def _order(self, spec: AppSpec, order: Order) -> None:
        app, host, name = spec.app, order.host, acme_name(order.host)
        self._events.record(app, "certificate.requested", name,
                            f"ordering a certificate for {host} from {spec.acme.directory} ({order.reason})")
        started = self._clock()

        def step(kind: str, detail: str) -> None:
            self._events.record(app, f"certificate.{kind}", name, detail)

        try:
            issued = self._client(spec).issue([host], responder=self._responder, progress=step)
            self._certificates.put(app, name, issued.chain_pem.encode(), issued.key_pem.encode(), source=SOURCE)
        except FlotillaError as exc:
            self._failed(app, host, exc.message, at=started)
            return
        self._succeeded(app, host)
        verb = "renewed" if order.kind == "renew" else "issued"
        self._events.record(app, f"certificate.{verb}", name,
                            f"certificate for {host} {verb} by {issued.issuer}, valid until "
                            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(issued.not_after.timestamp()))}")
        self._wakeups.trigger(app)  # the gateway sync loads it, no reload

    def _failed(self, app: str, host: str, message: str, *, at: float) -> None:
        with self._lock:
            state = self._hosts.get((app, host), HostState())
            failures = (state.attempt.failures if state.attempt else 0) + 1
            attempt = AttemptRecord(failures=failures, last_attempt=at, last_error=message)
            self._hosts[(app, host)] = replace(state, attempt=attempt, failures_total=state.failures_total + 1)
        try:
            self._certificates.record_error(app, acme_name(host), message, source=SOURCE)
        except FlotillaError as exc:
            log.warning("could not record the ACME error of %s/%s: %s", app, host, exc.message)
        self._events.record(app, "certificate.failed", acme_name(host),
                            f"ACME order for {host} failed (failure {failures} in a row; the current certificate, "
                            f"if any, keeps serving): {message}")

    def _succeeded(self, app: str, host: str) -> None:
        with self._lock:
            state = self._hosts.get((app, host), HostState())
            self._hosts[(app, host)] = replace(state, attempt=None, issued_total=state.issued_total + 1)

    # -- observing -------------------------------------------------------------------------------

    def _held(self, app: str, hosts: Iterable[str]) -> dict[str, HeldCertificate]:
        held = {}
        for host in hosts:
            stored = self._certificates.get(app, acme_name(host))
            info = getattr(stored, "info", None)
            if info is not None:
                held[host] = HeldCertificate(not_before=info.not_before, not_after=info.not_after)
        with self._lock:
            for host, certificate in held.items():
                state = self._hosts.get((app, host), HostState())
                self._hosts[(app, host)] = replace(state, not_after=certificate.not_after)
        return held

    def _attempts(self, app: str, hosts: Iterable[str]) -> dict[str, AttemptRecord]:
        with self._lock:
            found = {h: self._hosts.get((app, h), HostState()).attempt for h in hosts}
        return {h: a for h, a in found.items() if a is not None}

    def _client(self, spec: AppSpec) -> Client:
        key = (spec.app, spec.acme.directory, spec.acme.email)
        if key not in self._clients:
            self._clients[key] = self._client_factory(
                directory=spec.acme.directory, account_key_pem=self._account_key(spec.app, spec.acme.directory),
                email=spec.acme.email, ca_bundle=self._ca_bundle)
        return self._clients[key]

    def _account_key(self, app: str, directory: str) -> str:
        entry = account_entry(app, directory)
        if self._vault.version(ACME_NAMESPACE, entry) is None:
            self._vault.set(ACME_NAMESPACE, entry, new_account_key().encode())
            self._events.record(app, "certificate.account", directory,
                                f"new ACME account key for {directory}, kept in the vault")
        return self._vault.get(ACME_NAMESPACE, entry).decode()

    def _pause(self, next_check: float | None) -> float:
        if next_check is None:
            return self._interval
        return max(0.05, min(self._interval, next_check - self._clock()))


def _labels(app: str, host: str) -> str:
    return f'{{app="{app}",host="{host}"}}'
