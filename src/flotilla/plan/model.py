"""Plain data the planner reads and writes: observed state in, actions out.

Kept apart from the planner's logic so that engines, the daemon and the CLI
can build and read these values without importing any decision code, and so
that a plan is something you can print, store and compare in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flotilla.naming import replica_name

RUNNING = "running"


class InSlot:
    """Mixin for anything that names a replica slot by service and index."""

    service: str
    index: int

    @property
    def replica(self) -> str:
        """The short name a user sees and the replica knows itself by: ``web-3``."""
        return replica_name(self.service, self.index)


@dataclass(frozen=True)
class ObservedReplica(InSlot):
    """One container that carries this app's labels, as the engine saw it."""

    container_id: str
    name: str
    service: str
    index: int
    config_hash: str
    state: str  # Docker's state: created, running, exited, dead, restarting, paused
    healthy: bool | None = None  # None: not probed yet
    ip: str | None = None
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING


@dataclass(frozen=True)
class Observed:
    """Everything the engine saw of one app at one moment."""

    app: str
    replicas: tuple[ObservedReplica, ...] = ()
    networks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DesiredService:
    """What one service should look like, reduced to what the planner needs."""

    name: str
    replicas: int
    config_hash: str
    egress: bool = False
    # Stateful (own volumes): an old replica stops before its successor starts.
    recreate: bool = False
    restart_delay: float = 0.0  # at least this long between a death and the replacement
    # Services of one group (a cache's nodes) are replaced one service at a time.
    group: str | None = None
    # Liveness (plan/liveness.py): replace a replica failing its check this long, after start_period.
    replace_after: float | None = None
    start_period: float = 0.0
    # Set while a failed rollout is held (deploy.on_failure: hold): no further old replica is replaced.
    paused: str | None = None
    # Warm standby: slots replicas+1 .. replicas+standby run, probed, out of the gateway's rotation,
    # so a scale-up takes them at once (a routing change) while new standby replicas start behind.
    standby: int = 0

    @property
    def slots(self) -> int:
        """How many slots run: the serving ones, then the standby ones."""
        return self.replicas + self.standby


@dataclass(frozen=True)
class Desired:
    app: str
    services: tuple[DesiredService, ...]

    @property
    def needs_egress(self) -> bool:
        return any(s.egress for s in self.services)


@dataclass(frozen=True)
class CrashRecord:
    """How often a replica slot has failed lately, and when it last did."""

    count: int
    last_failure: float
    container_id: str = ""  # the container whose failure was counted last: never counted twice


@dataclass(frozen=True)
class EnsureNetwork:
    name: str
    internal: bool
    reason: str
    kind: Literal["ensure_network"] = "ensure_network"


@dataclass(frozen=True)
class CreateReplica(InSlot):
    service: str
    index: int
    config_hash: str
    reason: str
    kind: Literal["create_replica"] = "create_replica"


@dataclass(frozen=True)
class RemoveReplica(InSlot):
    container_id: str
    name: str
    service: str
    index: int
    reason: str
    graceful: bool = True  # a running replica is stopped with SIGTERM first
    kind: Literal["remove_replica"] = "remove_replica"


@dataclass(frozen=True)
class Hold(InSlot):
    """Nothing is done for this replica now, and the plan says why."""

    service: str
    index: int
    reason: str
    until: float | None = None
    kind: Literal["hold"] = "hold"


Action = EnsureNetwork | CreateReplica | RemoveReplica | Hold


@dataclass(frozen=True)
class Plan:
    app: str
    actions: tuple[Action, ...] = field(default_factory=tuple)

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that change something (holds only explain)."""
        return tuple(a for a in self.actions if not isinstance(a, Hold))

    @property
    def empty(self) -> bool:
        return not self.changes

    def of_kind(self, kind: type) -> tuple:
        return tuple(a for a in self.actions if isinstance(a, kind))
