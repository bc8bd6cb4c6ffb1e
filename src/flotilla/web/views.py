"""The dashboard's HTML: the page and the fragments the event stream swaps into it.

Pure: plain data in (a ``Picture``'s parts), text out. Every value that comes
from an app or a user (names, images, hosts, health details, event messages)
goes through ``esc`` (html.escape, quotes too), so a service called
``<script>`` is shown as text; markup is written only here, never taken
from data. No inline script or style: the page's behaviour is in
static/dashboard.js, its looks in static/dashboard.css, so the
Content-Security-Policy can forbid both.
"""

from __future__ import annotations

import html
import json
import time
from urllib.parse import quote

PREFIX = "/dashboard"
HTMX_CONFIG = {"includeIndicatorStyles": False, "allowEval": False, "allowScriptTags": False,
               "selfRequestsOnly": True, "historyCacheSize": 0}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def url(*parts: str) -> str:
    """A dashboard path, each part percent-encoded (an app or replica name may hold any character)."""
    return "/".join([PREFIX, *(quote(p, safe="") for p in parts)])


def page(*, csrf: str) -> str:
    """The whole page: empty sections that the stream fills at once."""
    sections = "".join(
        f'<section class="panel {name}"><h2>{esc(title)}</h2>'
        f'<div id="{name}" sse-swap="{name}"><p class="muted">loading…</p></div></section>'
        for name, title in (("services", "Services"), ("replicas", "Replicas"), ("caches", "Caches"),
                            ("routes", "Routes"), ("events", "Events"))
    )
    headers = esc(json.dumps({"X-CSRF-Token": csrf}))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="{esc(json.dumps(HTMX_CONFIG))}">
<title>Flotilla dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{PREFIX}/static/vendor/uPlot.min.css">
<link rel="stylesheet" href="{PREFIX}/static/dashboard.css">
<script src="{PREFIX}/static/vendor/htmx.min.js"></script>
<script src="{PREFIX}/static/vendor/sse.min.js"></script>
<script src="{PREFIX}/static/vendor/uPlot.iife.min.js"></script>
<script src="{PREFIX}/static/dashboard.js"></script>
</head>
<body hx-ext="sse" sse-connect="{PREFIX}/stream" hx-headers="{headers}">
<header><h1>Flotilla</h1><span id="link" class="badge warn">connecting</span>
<output id="notice" aria-live="polite"></output></header>
<main>
<section class="panel charts"><h2>Traffic and replicas</h2>
<div id="metrics" sse-swap="metrics" hx-swap="none"></div><div id="charts"></div></section>
{sections}
</main></body></html>
"""


def health_badge(*, healthy: bool, state: str) -> str:
    """Health by colour and by word."""
    if state != "running":
        return f'<span class="badge bad">{esc(state)}</span>'
    return '<span class="badge ok">healthy</span>' if healthy else '<span class="badge bad">unhealthy</span>'


def _service_badge(service: dict) -> str:
    if service["desired"] == 0:
        return '<span class="badge muted">scaled to zero</span>'
    if service["ready"] >= service["desired"]:
        return '<span class="badge ok">up</span>'
    if service["ready"] == 0:
        return '<span class="badge bad">down</span>'
    return '<span class="badge warn">degraded</span>'


def services(apps: list[dict]) -> str:
    if not apps:
        return '<p class="muted">No apps yet: <code>flotilla up</code> starts one.</p>'
    return "".join(_app_services(app) for app in apps)


def _app_services(app: dict) -> str:
    state = ('<span class="badge ok">converged</span>' if app["converged"]
             else '<span class="badge warn">converging</span>')
    error = f'<p class="badge bad">{esc(app["error"])}</p>' if app.get("error") else ""
    rows = "".join(_service_row(app["app"], s) for s in app["services"])
    return (f'<article class="app" data-app="{esc(app["app"])}"><h3>{esc(app["app"])} {state}</h3>{error}'
            '<table><thead><tr><th>service</th><th>health</th><th>replicas</th><th>image</th>'
            f'<th>reach</th><th>autoscaler</th><th>scale</th></tr></thead><tbody>{rows}</tbody></table></article>')


def _service_row(app: str, service: dict) -> str:
    name = service["name"]
    scaler = service.get("autoscale")
    autoscale = (f'{esc(scaler["min"])}–{esc(scaler["max"])}: {esc(scaler["reason"] or "starting")}'
                 if scaler else '<span class="muted">off</span>')
    reach = '<span class="badge info">public</span>' if service["public"] else "internal"
    return (
        f'<tr data-service="{esc(name)}"><td class="name">{esc(name)}</td><td>{_service_badge(service)}</td>'
        f'<td class="count"><span class="ready">{esc(service["ready"])}</span> ready of '
        f'<span class="desired">{esc(service["desired"])}</span></td>'
        f'<td class="image">{esc(service["image"])}</td><td>{reach}</td><td>{autoscale}</td>'
        f'<td>{_scale_form(app, service)}</td></tr>'
    )


def _scale_form(app: str, service: dict) -> str:
    if service.get("cache"):
        return '<span class="muted">cache node</span>'
    return (
        f'<form class="scale" hx-post="{esc(url("apps", app, "scale"))}" hx-target="#notice" hx-swap="innerHTML">'
        f'<input type="hidden" name="service" value="{esc(service["name"])}">'
        f'<input type="number" name="replicas" min="0" max="100" value="{esc(service["desired"])}" '
        f'aria-label="replicas of {esc(service["name"])}"><button type="submit">Scale</button></form>'
    )


def replicas(apps: list[dict], *, now: float) -> str:
    rows = "".join(_replica_row(app["app"], r, now=now) for app in apps for r in app["replicas"])
    if not rows:
        return '<p class="muted">No replicas.</p>'
    return ('<table><thead><tr><th>app</th><th>replica</th><th>state</th><th>up for</th><th>gateway</th>'
            f'<th>config</th><th>health check</th><th></th></tr></thead><tbody>{rows}</tbody></table>')


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``: two units at most."""
    whole = max(0, int(seconds))
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // smaller} {small_unit}"
    return f"{whole} s"


def _uptime(replica: dict, *, now: float) -> str:
    started = replica.get("started")
    if replica["state"] != "running" or started is None:
        return '<span class="muted">–</span>'
    return esc(duration(now - started))


def _replica_row(app: str, replica: dict, *, now: float) -> str:
    gateway = esc(replica["gateway"]) if replica["gateway"] else '<span class="muted">internal</span>'
    config = "current" if replica["current"] else '<span class="badge warn">old</span>'
    restart = (
        f'<form hx-post="{esc(url("apps", app, "replicas", replica["name"], "restart"))}" hx-target="#notice" '
        f'hx-swap="innerHTML"><button type="submit">Restart</button></form>'
    )
    return (
        f'<tr data-replica="{esc(replica["name"])}" data-container="{esc(replica["container_id"][:12])}">'
        f'<td>{esc(app)}</td><td class="name">{esc(replica["replica"])}</td>'
        f'<td>{health_badge(healthy=replica["healthy"], state=replica["state"])}</td>'
        f'<td class="uptime">{_uptime(replica, now=now)}</td><td>{gateway}</td>'
        f'<td>{config}</td><td class="detail">{esc(replica["health"])}</td><td>{restart}</td></tr>'
    )


def caches(apps: list[dict]) -> str:
    found = [(app["app"], c) for app in apps for c in app["caches"]]
    if not found:
        return '<p class="muted">No caches.</p>'
    return "".join(_cache(app, cache) for app, cache in found)


def _cache(app: str, cache: dict) -> str:
    ready = '<span class="badge ok">ready</span>' if cache["ready"] else '<span class="badge warn">not ready</span>'
    rows = "".join(
        f'<tr><td>{esc(n["name"])}</td><td>{esc(n["shard"] if n["shard"] is not None else "–")}</td>'
        f'<td>{esc(n["role"])}</td><td>{esc(_slots(n["slots"]))}</td>'
        f'<td>{health_badge(healthy=n["ready"], state="running" if n["reachable"] else "unreachable")}</td></tr>'
        for n in cache["nodes"]
    )
    return (f'<article><h3>{esc(app)} / {esc(cache["name"])} {ready}</h3>'
            f'<p>{esc(cache["shards"])} shards × {esc(cache["replicas"])} replicas; {esc(cache["reason"])}</p>'
            '<table><thead><tr><th>node</th><th>shard</th><th>role</th><th>slots</th><th>ready</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></article>')


def _slots(ranges: list[list[int]]) -> str:
    return ", ".join(f"{a}–{b}" if a != b else str(a) for a, b in ranges) or "none"


def routes(apps: list[dict]) -> str:
    rows = "".join(
        f'<tr><td>{esc(app["app"])}</td><td>{esc(r["service"])}</td>'
        + (f'<td><span class="badge info">public</span></td><td>{esc(r["listen"])}</td>'
           f'<td>{esc(r["host"])}{esc(r["path"])}</td></tr>'
           if r["public"] else '<td>internal</td><td class="muted">–</td><td class="muted">app network only</td></tr>')
        for app in apps for r in app["routes"]
    )
    if not rows:
        return '<p class="muted">No routes.</p>'
    return ('<table><thead><tr><th>app</th><th>service</th><th>reach</th><th>listen</th><th>host and path</th>'
            f'</tr></thead><tbody>{rows}</tbody></table>')


def events(items: list[dict]) -> str:
    if not items:
        return '<p class="muted">No events.</p>'
    rows = "".join(
        f'<li class="kind-{esc(e["kind"])}"><time>{esc(_clock(e["time"]))}</time> <b>{esc(e["app"])}</b> '
        f'<span class="kind">{esc(e["kind"])}</span> <span class="subject">{esc(e["subject"])}</span> '
        f'<span class="message">{esc(e["message"])}</span></li>'
        for e in items
    )
    return f'<ol class="events">{rows}</ol>'


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def notice(message: str, *, ok: bool) -> str:
    """The answer to an action, shown in the header."""
    return f'<span class="badge {"ok" if ok else "bad"}">{esc(message)}</span>'


def fragments(picture) -> dict[str, str]:
    """Every section of the page, by the name of its stream event; the charts' data as JSON."""
    return {
        "services": services(picture.apps),
        "replicas": replicas(picture.apps, now=picture.at),
        "caches": caches(picture.apps),
        "routes": routes(picture.apps),
        "events": events(picture.events),
        "metrics": json.dumps(picture.charts, separators=(",", ":")),
    }
