"""Exponential back-off for replicas that keep failing.

A replica that dies once is replaced at once (healing must take under two
seconds); one that keeps dying is restarted ever more slowly, so a broken
image does not turn into a hot loop of container creations.
"""

from __future__ import annotations

from flotilla.plan.model import CrashRecord

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
# A replica that stays healthy this long has recovered: its failure count resets.
RECOVERY_TIME = 30.0


def restart_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row before restarting."""
    if failures <= 1:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** (failures - 2))


def next_crash_record(previous: CrashRecord | None, *, now: float) -> CrashRecord:
    """The record after a failure at ``now``.

    Failures count as "in a row" while each comes before the replica could
    have run for ``RECOVERY_TIME`` after its delayed restart; otherwise the
    count starts again at one.
    """
    if previous is None:
        return CrashRecord(count=1, last_failure=now)
    recovered_at = previous.last_failure + restart_delay(previous.count) + RECOVERY_TIME
    count = 1 if now >= recovered_at else previous.count + 1
    return CrashRecord(count=count, last_failure=now)
