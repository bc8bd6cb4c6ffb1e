"""When to order an ACME certificate: first issue, renewal, and retries after a failure.

A decision, so it is pure: the daemon's ACME manager (daemon/acme.py) passes the
hosts that want an ACME certificate, what the certificate store holds for each
(its validity), the attempt history it keeps (failures in a row, the last
attempt) and the time, and gets orders out, each with its reason.

- A host without a certificate is ordered at once; one whose certificate has
  lived ``renew_at`` of its lifetime (two thirds, as Let's Encrypt advises) is
  renewed, with the remaining third left for retries before it expires.
- Each host's renewal point is moved earlier by up to ``spread`` of its lifetime,
  by a fraction fixed by its name: certificates issued together (a new app with
  fifty hosts) do not all renew in the same tick, forever after.
- A failure is retried after ``retry_first`` seconds, doubling up to
  ``retry_cap``, each delay shortened by up to a quarter by a fraction fixed by the
  host and the failure count: many hosts failing together (a CA outage) come back
  spread out, not as one burst.
- At most ``max_orders`` orders per plan, the most urgent first (the one that
  expires soonest); the rest wait for the next plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class HeldCertificate:
    """What the store holds for a host: the validity of its current certificate (epoch seconds)."""

    not_before: float
    not_after: float

    @property
    def lifetime(self) -> float:
        return max(0.0, self.not_after - self.not_before)


@dataclass(frozen=True)
class AttemptRecord:
    """The history that matters: failures in a row since the last success, and when the last attempt was."""

    failures: int
    last_attempt: float
    last_error: str = ""


@dataclass(frozen=True)
class RenewalPolicy:
    renew_at: float = 2 / 3  # fraction of the lifetime after which a certificate is renewed
    spread: float = 0.1  # renewal moved earlier by up to this fraction of the lifetime, per host
    retry_first: float = 60.0  # seconds after the first failure
    retry_cap: float = 6 * 3600.0  # the longest wait between two attempts
    max_orders: int = 3  # orders per plan (per tick of the loop)


DEFAULT_POLICY = RenewalPolicy()


@dataclass(frozen=True)
class Order:
    """Order a certificate for ``host`` now."""

    host: str
    kind: Literal["issue", "renew"]
    reason: str
    due: float  # when it became due (the most overdue is ordered first)
    expires: float | None  # the current certificate's expiry, None when there is none


@dataclass(frozen=True)
class RenewalPlan:
    orders: tuple[Order, ...]
    next_check: float | None  # the earliest time a plan could order something not ordered now


def plan_renewals(
    hosts: Iterable[str],
    *,
    held: Mapping[str, HeldCertificate],
    attempts: Mapping[str, AttemptRecord],
    now: float,
    policy: RenewalPolicy = DEFAULT_POLICY,
) -> RenewalPlan:
    """The orders due at ``now`` for ``hosts``, and when to look again."""
    due: list[Order] = []
    later: list[float] = []
    for host in sorted(set(hosts)):
        at, order = _due(host, held=held.get(host), attempt=attempts.get(host), policy=policy)
        if at <= now:
            due.append(order)
        else:
            later.append(at)
    due.sort(key=_urgency)
    chosen, waiting = due[:max(0, policy.max_orders)], due[max(0, policy.max_orders):]
    if waiting:
        later.append(now)  # the rest are due already: the next plan takes them
    return RenewalPlan(orders=tuple(chosen), next_check=min(later) if later else None)


def renewal_time(host: str, certificate: HeldCertificate, *, policy: RenewalPolicy = DEFAULT_POLICY) -> float:
    """When ``certificate`` of ``host`` is renewed: at ``renew_at`` of its lifetime, less the host's spread."""
    early = policy.spread * _fraction(host) * certificate.lifetime
    return certificate.not_before + policy.renew_at * certificate.lifetime - early


def retry_delay(host: str, failures: int, *, policy: RenewalPolicy = DEFAULT_POLICY) -> float:
    """Seconds after the ``failures``-th failure in a row before the next attempt."""
    if failures <= 0:
        return 0.0
    full = min(policy.retry_cap, policy.retry_first * 2 ** min(failures - 1, 64))
    return full * (1 - 0.25 * _fraction(f"{host}#{failures}"))


def _due(host: str, *, held: HeldCertificate | None, attempt: AttemptRecord | None,
         policy: RenewalPolicy) -> tuple[float, Order]:
    if held is None:
        at, kind, reason = float("-inf"), "issue", "no certificate yet"
    else:
        at, kind = renewal_time(host, held, policy=policy), "renew"
        reason = f"renewal point reached ({policy.renew_at:.0%} of its lifetime, expires at {held.not_after:.0f})"
    if attempt is not None and attempt.failures > 0:
        retry_at = attempt.last_attempt + retry_delay(host, attempt.failures, policy=policy)
        if retry_at > at:
            at = retry_at
            reason = f"retry {attempt.failures} after: {attempt.last_error or 'a failure'}"
    expires = held.not_after if held is not None else None
    return at, Order(host=host, kind=kind, reason=reason, due=at, expires=expires)


def _urgency(order: Order) -> tuple:
    # no certificate first, then the soonest expiry, then the longest overdue
    return (order.expires is not None, order.expires or 0.0, order.due, order.host)


def _fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``: the same host always gets the same spread."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64
