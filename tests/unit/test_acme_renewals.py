"""The ACME renewal planner (plan/renewals.py): pure, so tested with plain data and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flotilla.plan.renewals import (
    DEFAULT_POLICY,
    AttemptRecord,
    HeldCertificate,
    RenewalPolicy,
    plan_renewals,
    renewal_time,
    retry_delay,
)

DAY = 86400.0
NINETY_DAYS = HeldCertificate(not_before=0.0, not_after=90 * DAY)
hosts = st.lists(st.from_regex(r"[a-z]{1,8}\.example", fullmatch=True), min_size=1, max_size=30, unique=True)


def plan(names, *, held=None, attempts=None, now=0.0, policy=DEFAULT_POLICY):
    return plan_renewals(names, held=held or {}, attempts=attempts or {}, now=now, policy=policy)


def test_a_host_without_a_certificate_is_issued_at_once():
    (order,) = plan(["a.example"]).orders
    assert (order.host, order.kind, order.expires) == ("a.example", "issue", None)


def test_a_certificate_is_renewed_at_two_thirds_of_its_lifetime_less_its_spread():
    at = renewal_time("a.example", NINETY_DAYS)
    assert 51 * DAY <= at <= 60 * DAY  # spread: up to 10% of the lifetime (9 days) earlier, never later
    held = {"a.example": NINETY_DAYS}
    assert plan(["a.example"], held=held, now=at - 1).orders == ()
    assert plan(["a.example"], held=held, now=at - 1).next_check == at
    (order,) = plan(["a.example"], held=held, now=at).orders
    assert order.kind == "renew" and "renewal point" in order.reason


def test_a_failure_is_retried_after_a_growing_capped_delay():
    delays = [retry_delay("a.example", n) for n in range(1, 20)]
    assert 45.0 <= delays[0] <= 60.0
    assert all(later >= earlier * 1.4 for earlier, later in zip(delays, delays[1:]) if later < 0.75 * 6 * 3600)
    assert max(delays) <= 6 * 3600 and delays[-1] >= 0.75 * 6 * 3600
    attempts = {"a.example": AttemptRecord(failures=1, last_attempt=100.0, last_error="connection refused")}
    assert plan(["a.example"], attempts=attempts, now=101.0).orders == ()
    (order,) = plan(["a.example"], attempts=attempts, now=100.0 + delays[0]).orders
    assert order.kind == "issue" and "retry 1" in order.reason and "connection refused" in order.reason


@given(hosts, st.floats(min_value=0, max_value=200 * DAY))
def test_no_plan_orders_more_than_its_cap_and_the_rest_is_looked_at_again_at_once(names, now):
    result = plan(names, now=now, policy=RenewalPolicy(max_orders=3))
    assert len(result.orders) == min(3, len(names))
    assert (result.next_check == now) == (len(names) > 3)


@given(hosts)
def test_certificates_issued_together_do_not_renew_together(names):
    held = {name: NINETY_DAYS for name in names}
    times = sorted(renewal_time(name, held[name]) for name in names)
    assert all(51 * DAY <= t <= 60 * DAY for t in times)
    if len(names) >= 10:  # spread over the 9-day window, not one instant
        assert times[-1] - times[0] > DAY


@given(hosts, st.floats(min_value=0, max_value=89 * DAY))
def test_every_certificate_is_renewed_before_it_expires_and_never_before_half_its_life(names, now):
    held = {name: NINETY_DAYS for name in names}
    ordered = {o.host for o in plan(names, held=held, now=now, policy=RenewalPolicy(max_orders=100)).orders}
    for name in names:
        at = renewal_time(name, NINETY_DAYS)
        assert 45 * DAY < at < 90 * DAY
        assert (name in ordered) == (now >= at)


@given(hosts, st.integers(min_value=1, max_value=40), st.floats(min_value=0, max_value=10 * DAY))
def test_a_failing_host_is_never_ordered_before_its_back_off_ends(names, failures, last):
    attempts = {name: AttemptRecord(failures=failures, last_attempt=last) for name in names}
    policy = RenewalPolicy(max_orders=100)
    for name in names:
        delay = retry_delay(name, failures)
        assert 0.75 * min(policy.retry_cap, 60.0 * 2 ** (failures - 1)) <= delay <= policy.retry_cap
        assert name not in {o.host for o in plan(names, attempts=attempts, now=last + delay * 0.99).orders}
        assert name in {o.host for o in plan(names, attempts=attempts, now=last + delay, policy=policy).orders}


def test_the_most_urgent_orders_go_first():
    held = {"late.example": HeldCertificate(not_before=0.0, not_after=10 * DAY),
            "soon.example": HeldCertificate(not_before=0.0, not_after=20 * DAY)}
    names = ["fresh.example", "soon.example", "late.example"]
    result = plan(names, held=held, now=9 * DAY, policy=RenewalPolicy(max_orders=2))
    assert [o.host for o in result.orders] == ["fresh.example", "late.example"]
