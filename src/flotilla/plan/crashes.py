"""Crash and vanish accounting: which replicas failed since the last look, as data.

A replica fails in two ways Flotilla must notice: its container exits (or
dies), or its container disappears while it was running and Flotilla did not
remove it (``docker rm -f`` behind Flotilla's back). Both give its slot the
same back-off and restart delay. These are decisions, so they live here, pure:
the reconciler feeds in the observation, the previous one, what it is removing
itself and the crash history (kept in the daemon's store, so a daemon restarted
in the middle of a crash loop keeps its back-off), and gets failures out. As
in Nomad, the history is an input to the planner, not a field of a long-lived
object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flotilla.naming import replica_name
from flotilla.plan.backoff import next_crash_record
from flotilla.plan.model import CrashRecord, Observed, ObservedReplica

Slot = tuple[str, int]  # (service, index)
DEAD_STATES = ("exited", "dead")


@dataclass(frozen=True)
class Failure:
    """One replica that failed: it exited, or it vanished while running."""

    service: str
    index: int
    container_id: str
    name: str
    exit_code: int | None = None
    vanished: bool = False

    @property
    def slot(self) -> Slot:
        return (self.service, self.index)

    @property
    def replica(self) -> str:
        return replica_name(self.service, self.index)

    def describe(self) -> str:
        if self.vanished:
            return f"{self.name} was removed outside Flotilla"
        return f"{self.name} exited with code {self.exit_code}"


@dataclass(frozen=True)
class Accounting:
    """What one look at an app found: new failures, and removals now confirmed gone."""

    failures: tuple[Failure, ...]
    removed_gone: frozenset[str]  # container ids Flotilla removed that are no longer observed


def account(
    *,
    observed: Observed,
    previous: Iterable[ObservedReplica],
    removing: frozenset[str],
    history: Mapping[Slot, CrashRecord],
) -> Accounting:
    """The failures in ``observed`` not yet counted in ``history``.

    ``previous`` is the app's replicas at the last look (empty after a daemon
    restart: a container removed while the daemon was down is not seen as
    vanished, there being no record that it ran). ``removing`` holds the
    containers Flotilla itself is removing, which never count as vanished.
    """
    counted = {record.container_id for record in history.values() if record.container_id}
    exits = [_exit(r) for r in observed.replicas if r.state in DEAD_STATES and r.container_id not in counted]
    current = {r.container_id for r in observed.replicas}
    gone = [r for r in previous if r.container_id not in current]
    vanished = [_vanish(r) for r in gone if r.running and r.container_id not in removing
                and r.container_id not in counted]
    return Accounting(
        failures=tuple(exits + vanished),
        removed_gone=frozenset(r.container_id for r in gone if r.container_id in removing),
    )


def record_failure(history: Mapping[Slot, CrashRecord], failure: Failure, *, now: float) -> CrashRecord:
    """The slot's crash record after ``failure`` at ``now``."""
    record = next_crash_record(history.get(failure.slot), now=now)
    return CrashRecord(count=record.count, last_failure=record.last_failure, container_id=failure.container_id)


def crash_loops(history: Mapping[Slot, CrashRecord], *, now: float) -> dict[str, CrashRecord]:
    """The slots that failed repeatedly and are still being restarted with back-off (``web-2``: record)."""
    return {
        replica_name(service, index): record
        for (service, index), record in sorted(history.items())
        if record.count >= 2 and next_crash_record(record, now=now).count > 1
    }


def _exit(replica: ObservedReplica) -> Failure:
    return Failure(service=replica.service, index=replica.index, container_id=replica.container_id,
                   name=replica.name, exit_code=replica.exit_code)


def _vanish(replica: ObservedReplica) -> Failure:
    return Failure(service=replica.service, index=replica.index, container_id=replica.container_id,
                   name=replica.name, vanished=True)
