"""Turning API answers into what a person reads: tables, plans, events.

Kept out of the command definitions so every command prints the same way,
and ``--json`` always prints the API's own data instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import click

PS_COLUMNS = (
    ("APP", "app"),
    ("SERVICE", "service"),
    ("REPLICA", "replica"),
    ("NAME", "name"),
    ("STATE", "state"),
    ("HEALTH", "health_text"),
    ("GATEWAY", "gateway"),
    ("IP", "ip"),
    ("IMAGE", "image"),
)
CACHE_COLUMNS = (
    ("NODE", "name"),
    ("SHARD", "shard"),
    ("ROLE", "role"),
    ("MASTER", "master"),
    ("SLOTS", "slots_text"),
    ("#SLOTS", "slot_count"),
    ("LINK", "link"),
    ("READY", "ready_text"),
    ("IP", "ip"),
)
ROUTE_COLUMNS = (
    ("LISTEN", "listen"),
    ("HOST", "host"),
    ("PATH", "path"),
    ("STRIP", "strip_prefix"),
    ("SERVICE", "service"),
    ("PORT", "port"),
    ("IN GATEWAY", "replicas_in_gateway"),
)
METRIC_COLUMNS = (
    ("SERVICE", "service"),
    ("REQ/S", "rps"),
    ("IN FLIGHT", "in_flight"),
    ("QUEUED", "queued"),
    ("5XX", "http_5xx_total"),
    ("UNSERVED", "unserved_total"),
    ("RESPONSE MS", "response_ms"),
    ("REQUESTS", "requests_total"),
)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[str(row.get(key) if row.get(key) is not None else "-") for _, key in columns] for row in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(t.ljust(w) for (t, _), w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    return "\n".join(lines)


def ps_table(rows: Sequence[dict]) -> str:
    shown = [
        {**r, "health_text": ("healthy" if r["healthy"] else "unhealthy") + ("" if r["current"] else " (old config)")
         + (" (standby)" if r.get("standby") else "")}
        for r in rows
    ]
    return table(shown, PS_COLUMNS)


def autoscale_line(service: dict) -> str:
    bounds = service["autoscale"]
    return (
        f"{service['app']}/{service['name']}: {service['running']} running, desired {service['desired']} "
        f"(autoscale {bounds['min']}..{bounds['max']}): {bounds['reason'] or 'no decision yet'}"
    )


def up_line(status: dict) -> str:
    """``shop is up: 6 replica(s) healthy; cache sessions ready (3 shards x 1 replica)``."""
    replicas = sum(s["desired"] for s in status["services"] if not s.get("cache"))
    caches = [f"cache {c['name']} ready ({c['shards']} shards x {c['replicas']} replicas)"
              for c in status.get("caches", [])]
    return f"{status['app']} is up: {replicas} replica(s) healthy" + "".join(f"; {c}" for c in caches)


def with_cache_nodes(status: dict) -> list[dict]:
    """The replica rows, a cache node's carrying its role, shard, slots and link."""
    nodes = {n["name"]: {"cache": c["name"], **n} for c in status.get("caches", []) for n in c["nodes"]}
    return [{**r, "cache_node": nodes[r["service"]]} if r["service"] in nodes else r for r in status["replicas"]]


def cache_text(cache: dict) -> str:
    """A cache's state line and a table of its nodes."""
    state = "ready" if cache["ready"] else "not ready"
    head = (f"{cache['app']}/{cache['name']}: redis-cluster {cache['shards']} shards x {cache['replicas']} "
            f"replicas, {state}: {cache['reason']}")
    rows = [{**n, "slots_text": slot_text(n["slots"]), "master": n["master"] or "-",
             "ready_text": "yes" if n["ready"] else "no"} for n in cache["nodes"]]
    return head + ("\n" + table(rows, CACHE_COLUMNS) if rows else "")


def slot_text(ranges: Sequence[Sequence[int]]) -> str:
    """``0-5460,16000`` (at most four ranges, then how many more)."""
    parts = [f"{a}-{b}" if a != b else str(a) for a, b in ranges]
    return ",".join(parts[:4]) + (f",+{len(parts) - 4} more" if len(parts) > 4 else "") or "-"


def routes_table(rows: Sequence[dict]) -> str:
    return table(rows, ROUTE_COLUMNS)


def metrics_table(rows: Sequence[dict]) -> str:
    return table(rows, METRIC_COLUMNS) if rows else "no traffic figures yet (only routed services have them)"


SECRET_COLUMNS = (("NAME", "name"), ("VERSION", "version"), ("UPDATED", "updated"), ("VERSIONS KEPT", "versions"))


def secrets_table(rows: Sequence[dict]) -> str:
    shown = [{**r, "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))} for r in rows]
    return table(shown, SECRET_COLUMNS)


def plan_text(plan: dict) -> str:
    changes = [a for a in plan["actions"] if a["kind"] != "hold"]
    holds = [a for a in plan["actions"] if a["kind"] == "hold"]
    if not changes and not holds:
        return "\n".join([f"{plan['app']}: up to date, nothing to change", *_image_lines(plan)])
    lines = [f"{plan['app']}: {len(changes)} change(s)"]
    lines += [f"  {_symbol(a)} {_subject(a)}: {a['reason']}" for a in changes]
    lines += [f"  = {_subject(a)}: {a['reason']}" for a in holds]
    return "\n".join(lines + _image_lines(plan))


def _image_lines(plan: dict) -> list[str]:
    """Each service's image as tag@short digest; ``~`` where the deploy changes it (a moved tag, a new build)."""
    changed = {c["service"]: c for c in plan.get("image_changes", []) if c["before"]}
    lines = []
    for service, image in sorted(plan.get("images", {}).items()):
        was = f" (was {changed[service]['before']})" if service in changed else ""
        lines.append(f"  {'~' if was else ' '} image {service}: {image}{was}")
    return ["images:", *lines] if lines else []


def _symbol(action: dict) -> str:
    return {"create_replica": "+", "remove_replica": "-", "ensure_network": "+"}.get(action["kind"], "~")


def _subject(action: dict) -> str:
    if action["kind"] == "ensure_network":
        return f"network {action['name']}"
    if action["kind"] == "remove_replica":
        return f"{action['service']}-{action['index']} ({action['name']})"
    return f"{action['service']}-{action['index']}"


def event_line(event: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
    return f"{when}  {event['kind']:<7} {event['subject']:<12} {event['message']}"


def access_line(entry: dict) -> str:
    """One request through the gateway: when, which service, status, method and path, time, size, who."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.get("time", 0)))
    where = f"{entry['app']}/{entry['service']}" if entry.get("app") else "(no route)"
    took = entry.get("ms", {}).get("total", -1)
    return (f"{when}  {where:<16} {entry.get('status', '-'):>3} {entry.get('method', '-')} {entry.get('path', '-')}"
            f"  {took}ms {entry.get('bytes_out', 0)}B  {entry.get('client', '-')}  {entry.get('request_id', '-')}")
