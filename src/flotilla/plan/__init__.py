"""Planning: pure decisions about what to change, as data (see planner.py)."""

from flotilla.plan.model import (
    Action,
    CrashRecord,
    CreateReplica,
    Desired,
    DesiredService,
    EnsureNetwork,
    Hold,
    Observed,
    ObservedReplica,
    Plan,
    RemoveReplica,
)
from flotilla.plan.planner import plan, plan_removal

__all__ = [
    "Action",
    "CrashRecord",
    "CreateReplica",
    "Desired",
    "DesiredService",
    "EnsureNetwork",
    "Hold",
    "Observed",
    "ObservedReplica",
    "Plan",
    "RemoveReplica",
    "plan",
    "plan_removal",
]
