"""The pure planner: desired state + observed state + now -> a Plan.

This is the one place where Flotilla decides what to change. It imports no
SDK and performs no I/O, so every decision (scale up or down, replace a
replica whose config changed, heal a dead one, back off from a crash loop) is
a plain function of its inputs, tested without Docker, and shown to users by
``flotilla plan`` before anything is touched.

Replicas live in numbered slots (``web-1`` .. ``web-N``), then the warm
standby ones (``web-N+1`` ..), which run and are probed but get no traffic
until a scale-up makes them serving slots (daemon/traffic.py routes only
``index <= replicas``). A slot holds at most
one replica of the current config; a replica of an older config in the same
slot is removed only once its successor is healthy, and only one slot per
service is being replaced at a time (a rolling update with a surge of one).
A service with its own volumes (``recreate``) cannot run two replicas on one
volume, so there the old replica is stopped first and its successor started
on the next pass. Services of one ``group`` (the nodes of a cache) are
replaced one service at a time, the next only once the last is healthy.
Networks: the app's internal one, the egress one if a service has egress, and
for each cache (a group ``cache:NAME``) its own, which only its nodes and its
consumers join.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from flotilla.naming import cache_network, cache_of_addon, egress_network, internal_network
from flotilla.plan.backoff import restart_delay
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


def plan(
    desired: Desired,
    observed: Observed,
    *,
    now: float,
    crashes: Mapping[tuple[str, int], CrashRecord] | None = None,
) -> Plan:
    """Return the actions that move ``observed`` towards ``desired``."""
    crashes = crashes or {}
    actions: list[Action] = list(_network_actions(desired, observed))
    by_service = _group_by_service(observed.replicas)
    wanted = {s.name for s in desired.services}
    gates = _group_gates(desired, by_service)
    for service in desired.services:
        actions += _service_actions(
            service, by_service.get(service.name, []), now=now, crashes=crashes, waiting_for=gates.get(service.name)
        )
    for name, replicas in sorted(by_service.items()):
        if name not in wanted:
            actions += [_remove(r, f"service {name} is no longer in the spec") for r in replicas]
    return Plan(app=desired.app, actions=tuple(actions))


def plan_removal(observed: Observed) -> Plan:
    """Every replica of the app goes (``flotilla down``); networks follow in apply."""
    return Plan(
        app=observed.app,
        actions=tuple(_remove(r, "the app is being removed") for r in observed.replicas),
    )


def _group_gates(desired: Desired, by_service: Mapping[str, list[ObservedReplica]]) -> dict[str, str]:
    """In each group, the one service being replaced (or the first due, by name); the others wait for it."""
    groups: dict[str, list[DesiredService]] = defaultdict(list)
    for service in desired.services:
        if service.group:
            groups[service.group].append(service)
    gates: dict[str, str] = {}
    for members in groups.values():
        states = {s.name: rollout_state(s, by_service.get(s.name, [])) for s in sorted(members, key=lambda s: s.name)}
        busy = [n for n, state in states.items() if state == "replacing"] or [
            n for n, state in states.items() if state == "stale"]
        for name, state in states.items():
            if state == "stale" and busy and busy[0] != name:
                gates[name] = busy[0]
    return gates


def rollout_state(service: DesiredService, replicas: list[ObservedReplica]) -> str:
    """``stale``: only old replicas run; ``replacing``: old and new, or new ones not all healthy yet; ``settled``."""
    live = [r for r in replicas if r.running]
    fresh = [r for r in live if r.config_hash == service.config_hash]
    stale = len(fresh) < len(live)
    if stale and not fresh:
        return "stale"
    if stale or len(fresh) < service.slots or any(r.healthy is not True for r in fresh):
        return "replacing"
    return "settled"


def _network_actions(desired: Desired, observed: Observed) -> list[EnsureNetwork]:
    needed = [EnsureNetwork(internal_network(desired.app), True, "the app's private network")]
    if desired.needs_egress:
        needed.append(
            EnsureNetwork(egress_network(desired.app), False, "a service has egress: true")
        )
    caches = sorted({c for s in desired.services if (c := cache_of_addon(s.group))})
    needed += [EnsureNetwork(cache_network(desired.app, c), True, f"cache {c}'s own network") for c in caches]
    return [n for n in needed if n.name not in observed.networks]


def _group_by_service(replicas: tuple[ObservedReplica, ...]) -> dict[str, list[ObservedReplica]]:
    groups: dict[str, list[ObservedReplica]] = defaultdict(list)
    for replica in replicas:
        groups[replica.service].append(replica)
    return groups


def _service_actions(
    service: DesiredService,
    replicas: list[ObservedReplica],
    *,
    now: float,
    crashes: Mapping[tuple[str, int], CrashRecord],
    waiting_for: str | None = None,
) -> list[Action]:
    actions: list[Action] = []
    live: list[ObservedReplica] = []
    for replica in replicas:
        if replica.running:
            live.append(replica)
        else:
            actions.append(_remove(replica, _dead_reason(replica), graceful=False))
    slots: dict[int, list[ObservedReplica]] = defaultdict(list)
    for replica in live:
        slots[replica.index].append(replica)
    for index, occupants in sorted(slots.items()):
        if index > service.slots:
            actions += [_remove(r, _scale_down_reason(service)) for r in occupants]
    rolling = _slots_mid_rollout(service, slots)
    for index in range(1, service.slots + 1):
        actions += _slot_actions(
            service, index, slots.get(index, []), now=now, crashes=crashes, rolling=rolling, waiting_for=waiting_for
        )
    return actions


def _slots_mid_rollout(service: DesiredService, slots: dict[int, list[ObservedReplica]]) -> set[int]:
    """Slots where a new replica is still starting beside an old one."""
    return {
        index
        for index, occupants in slots.items()
        if index <= service.slots
        and any(r.config_hash == service.config_hash for r in occupants)
        and any(r.config_hash != service.config_hash for r in occupants)
    }


def _slot_actions(
    service: DesiredService,
    index: int,
    occupants: list[ObservedReplica],
    *,
    now: float,
    crashes: Mapping[tuple[str, int], CrashRecord],
    rolling: set[int],
    waiting_for: str | None = None,
) -> list[Action]:
    current = sorted(
        (r for r in occupants if r.config_hash == service.config_hash),
        key=lambda r: (r.healthy is not True, r.name),
    )
    stale = [r for r in occupants if r.config_hash != service.config_hash]
    actions: list[Action] = [_remove(r, "a second replica in the same slot") for r in current[1:]]
    if current:
        if stale and current[0].healthy:
            actions += [_remove(r, f"replaced by {current[0].name}, now healthy") for r in stale]
        return actions
    hold = _backoff_hold(service, index, now=now, crashes=crashes)
    if hold:
        return [hold]
    if not stale:
        return [CreateReplica(service.name, index, service.config_hash, _create_reason(service, index, crashes))]
    if service.paused:
        return [Hold(service.name, index, service.paused)]
    if waiting_for:
        return [Hold(service.name, index, f"waiting for {waiting_for} to be replaced first (one at a time)")]
    if rolling - {index}:
        return [Hold(service.name, index, "waiting for the replica being replaced before it")]
    rolling.add(index)
    if service.recreate:
        return [_remove(r, "config changed: stopping it before its replacement starts") for r in stale]
    return [CreateReplica(service.name, index, service.config_hash, "config changed: starting the replacement")]


def _backoff_hold(
    service: DesiredService, index: int, *, now: float, crashes: Mapping[tuple[str, int], CrashRecord]
) -> Hold | None:
    record = crashes.get((service.name, index))
    if record is None:
        return None
    until = record.last_failure + max(restart_delay(record.count), service.restart_delay)
    if now >= until:
        return None
    why = f"crash loop: failed {record.count} times" if record.count > 1 else "it died"
    return Hold(service.name, index, f"{why}, restarting in {until - now:.1f}s", until=until)


def _create_reason(
    service: DesiredService, index: int, crashes: Mapping[tuple[str, int], CrashRecord]
) -> str:
    record = crashes.get((service.name, index))
    if record:
        return f"restarting after failure #{record.count}"
    if index > service.replicas:
        return f"{service.name} keeps {service.standby} on standby"
    return f"{service.name} wants {service.replicas} replica(s)"


def _scale_down_reason(service: DesiredService) -> str:
    standby = f" and {service.standby} on standby" if service.standby else ""
    return f"scaling {service.name} down to {service.replicas}{standby}"


def _dead_reason(replica: ObservedReplica) -> str:
    if replica.exit_code is not None and replica.state in ("exited", "dead"):
        return f"{replica.state} with code {replica.exit_code}"
    return f"not running (state {replica.state})"


def _remove(replica: ObservedReplica, reason: str, *, graceful: bool = True) -> RemoveReplica:
    return RemoveReplica(
        container_id=replica.container_id,
        name=replica.name,
        service=replica.service,
        index=replica.index,
        reason=reason,
        graceful=graceful and replica.running,
    )
