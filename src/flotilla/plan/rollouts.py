"""Judging a rollout, pure: settled, still progressing, or failed, and why.

A rollout replaces an app's replicas with those of a new revision, one slot
at a time (planner.py). It fails when a new replica crashes, or when no new
replica turns healthy for longer than the service's ``deploy.deadline`` (the
meaning of Kubernetes' ``progressDeadlineSeconds``: time without progress, not
the rollout's whole length). The reconciler stores the progress (how many new
replicas were healthy, since when), so a daemon restarted mid-rollout keeps
counting from where it was; this module only decides, from that record, the
desired and observed state, the failures of this pass and the time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from flotilla.plan.crashes import Failure
from flotilla.plan.model import Desired, DesiredService, Observed, ObservedReplica
from flotilla.plan.planner import rollout_state


@dataclass(frozen=True)
class RolloutCheck:
    state: Literal["progressing", "settled", "failed"]
    progress: int  # new replicas healthy now
    progress_at: float
    reason: str = ""
    container_id: str = ""  # the failing replica, whose last output the reason should carry


def check_rollout(
    *,
    desired: Desired,
    observed: Observed,
    progress: int,
    progress_at: float,
    now: float,
    deadlines: dict[str, float],
    failures: Iterable[Failure] = (),
) -> RolloutCheck:
    """Where the rollout of ``desired`` stands; ``progress``/``progress_at`` are the stored record."""
    by_service = {s.name: [r for r in observed.replicas if r.service == s.name] for s in desired.services}
    healthy = sum(len(_fresh(s, by_service[s.name], healthy=True)) for s in desired.services)
    if healthy > progress:
        progress, progress_at = healthy, now
    crash = _new_replica_crash(desired, observed, failures)
    if crash:
        return RolloutCheck("failed", progress, progress_at, f"new replica {crash.describe()}", crash.container_id)
    pending = [s for s in desired.services if rollout_state(s, by_service[s.name]) != "settled"]
    if not pending:
        return RolloutCheck("settled", progress, progress_at)
    for service in pending:
        deadline = deadlines.get(service.name)
        if deadline is not None and now - progress_at > deadline:
            return _too_slow(service, by_service[service.name], deadline, progress, progress_at)
    return RolloutCheck("progressing", progress, progress_at)


def _fresh(service: DesiredService, replicas: list[ObservedReplica], *, healthy: bool = False) -> list[ObservedReplica]:
    return [r for r in replicas if r.running and r.config_hash == service.config_hash
            and (r.healthy is True or not healthy)]


def _new_replica_crash(desired: Desired, observed: Observed, failures: Iterable[Failure]) -> Failure | None:
    """The first failure this pass of a replica that runs the new configuration."""
    hashes = {s.name: s.config_hash for s in desired.services}
    fresh = {r.container_id for r in observed.replicas if hashes.get(r.service) == r.config_hash}
    return next((f for f in failures if not f.vanished and f.container_id in fresh), None)


def _too_slow(service: DesiredService, replicas: list[ObservedReplica], deadline: float,
              progress: int, progress_at: float) -> RolloutCheck:
    waiting = [r for r in _fresh(service, replicas) if r.healthy is not True]
    who = f" ({', '.join(r.name for r in waiting)} not healthy)" if waiting else ""
    reason = f"{service.name}: no new replica turned healthy within the deploy deadline of {deadline:g}s{who}"
    return RolloutCheck("failed", progress, progress_at, reason, waiting[0].container_id if waiting else "")
