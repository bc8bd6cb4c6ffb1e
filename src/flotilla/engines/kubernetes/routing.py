"""Routes as Ingress objects or Gateway API HTTPRoutes, routing exactly as the one-host gateway does.

The gateway's rules (gateway/config.py) are: a path prefix matches at segment
boundaries (``/api`` matches ``/api`` and ``/api/x``, never ``/apix``), the
longest prefix wins, exact hosts win over wildcards, and ``strip_prefix``
removes the prefix before forwarding (``/api/x`` -> ``/x``).

* Ingress (``pathType: Prefix``) matches the same way. Stripping is not part
  of the Ingress API: Flotilla uses ingress-nginx's ``rewrite-target`` with a
  regular-expression path (``/api(/|$)(.*)`` -> ``/$2``). ingress-nginx then
  treats every path of that host as a regular expression, so the other routes
  of such a host are written as ``/path(/|$)`` too, which keeps their
  segment-boundary meaning. Other controllers ignore these annotations: use
  Gateway API for portable stripping.
* HTTPRoute (``PathPrefix``) matches the same way and strips portably with a
  ``URLRewrite`` filter (``ReplacePrefixMatch: /``). One HTTPRoute per service
  and host, because an HTTPRoute's hostnames apply to all its rules.

HTTPS (docs/https.md): an Ingress gets a ``tls`` section per certificate,
naming a Secret of type ``kubernetes.io/tls`` (``tls_secret_name``). A vault
certificate's Secret is filled from the vault (``apply``, or ``render
--include-secrets``); an ACME route's is issued by cert-manager, asked for
with the ``cert-manager.io/cluster-issuer`` annotation (the issuer is an
option). ACME routes get Ingress objects of their own (``-acme``), so that
cert-manager never takes over a vault certificate's Secret; and routes with
``redirect: false`` get their own too, with ingress-nginx's ``ssl-redirect``
off (it redirects a TLS host by default, and its ACME solver is exempt).
HSTS is ingress-nginx's ConfigMap setting (``hsts``), not an annotation, and
in Gateway API mode TLS ends at the cluster's Gateway listeners: both belong
to the cluster, not to the app.

A service's ``max_body`` becomes ingress-nginx's ``proxy-body-size`` on each of
its Ingress objects (413 over it, as the one-host gateway answers; nginx
counts chunked bodies too). The Gateway API has no body limit: there it is
the Gateway implementation's own setting.
"""

from __future__ import annotations

import re

from flotilla.engines.kubernetes import meta, scaling
from flotilla.engines.kubernetes.options import RenderOptions
from flotilla.spec.models import AppSpec, RouteSpec
from flotilla.spec.units import KIB, MIB

NGINX = "nginx.ingress.kubernetes.io/"
GATEWAY_GROUP = "gateway.networking.k8s.io"
CERT_MANAGER_ISSUER = "cert-manager.io/cluster-issuer"


def route_objects(spec: AppSpec, *, options: RenderOptions) -> list[dict]:
    """Every routed service's Ingress objects or HTTPRoutes."""
    if options.ingress_mode == "gateway-api":
        return [r for name in sorted(spec.services) for r in http_routes(spec, name, options=options)]
    regex_hosts = _hosts_with_strip(spec)
    return [i for name in sorted(spec.services) for i in ingresses(spec, name, options=options,
                                                                  regex_hosts=regex_hosts)]


def normalize(path: str) -> str:
    """``/api/`` -> ``/api`` (the gateway's normalization); ``/`` stays."""
    return path.rstrip("/") or "/"


def strips(route: RouteSpec) -> bool:
    """Stripping ``/`` changes nothing, so such a route is an ordinary one."""
    return route.strip_prefix and normalize(route.path) != "/"


def _hosts_with_strip(spec: AppSpec) -> set[str]:
    return {r.host for svc in spec.services.values() for r in svc.routes if strips(r)}


def ingresses(spec: AppSpec, name: str, *, options: RenderOptions, regex_hosts: set[str]) -> list[dict]:
    """Ingress objects by path kind (plain prefixes, regex paths, stripped regex paths) and TLS handling
    (no TLS or a vault certificate, ACME, no redirect)."""
    svc = spec.services[name]
    groups: dict[tuple[str, str], list[RouteSpec]] = {}
    for route in svc.routes:
        kind = "strip" if strips(route) else "regex" if route.host in regex_hosts else "plain"
        groups.setdefault((kind, _tls_group(route)), []).append(route)
    suffix = {"plain": "", "regex": "-regex", "strip": "-strip", "": "", "acme": "-acme", "no-redirect": "-noredirect",
              "acme-no-redirect": "-acme-noredirect"}
    return [_ingress(spec, name, ingress_name=name + suffix[kind] + suffix[tls], routes=routes, kind=kind,
                     options=options, tls=tls)
            for (kind, tls), routes in sorted(groups.items(), key=lambda item: _group_order(item[0]))]


def _tls_group(route: RouteSpec) -> str:
    """``""`` (no TLS, or a vault certificate redirected), ``acme``, ``no-redirect``, ``acme-no-redirect``."""
    if route.tls is None:
        return ""
    return "-".join((["acme"] if route.tls.acme else []) + ([] if route.tls.redirect else ["no-redirect"]))


def _group_order(group: tuple[str, str]) -> tuple[int, str]:
    return (("plain", "regex", "strip").index(group[0]), group[1])


def tls_secret_name(route: RouteSpec) -> str:
    """The ``kubernetes.io/tls`` Secret of a TLS route: ``tls-NAME`` for a vault certificate, ``tls-acme-HOST``."""
    if route.tls is None:
        raise ValueError(f"route {route.host} has no tls")
    if route.tls.certificate:
        return meta.dns_label(f"tls-{route.tls.certificate}")
    return meta.dns_label(f"tls-acme-{route.host.replace('*', 'wildcard')}")


def _tls_sections(routes: list[RouteSpec]) -> list[dict]:
    hosts: dict[str, set[str]] = {}
    for route in routes:
        if route.tls is not None:
            hosts.setdefault(tls_secret_name(route), set()).add(route.host)
    return [{"hosts": sorted(found), "secretName": secret} for secret, found in sorted(hosts.items())]


def _ingress(spec: AppSpec, service: str, *, ingress_name: str, routes: list[RouteSpec], kind: str,
             options: RenderOptions, tls: str) -> dict:
    port = spec.services[service].port
    obj = meta.header("networking.k8s.io/v1", "Ingress", name=ingress_name, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, service))
    obj["metadata"]["annotations"] = {NGINX + "proxy-body-size": nginx_size(spec.services[service].max_body)}
    if kind != "plain":
        obj["metadata"]["annotations"][NGINX + "use-regex"] = "true"
    if kind == "strip":
        obj["metadata"]["annotations"][NGINX + "rewrite-target"] = "/$2"
    obj["metadata"]["annotations"].update(scaling.concurrency_annotations(spec.services[service]))
    if tls.startswith("acme"):
        obj["metadata"]["annotations"][CERT_MANAGER_ISSUER] = options.cluster_issuer
    if tls.endswith("no-redirect"):
        obj["metadata"]["annotations"][NGINX + "ssl-redirect"] = "false"
    backend = {"service": {"name": service, "port": {"number": port}}}
    rules = []
    for host in sorted({r.host for r in routes}):
        paths = sorted({normalize(r.path) for r in routes if r.host == host}, key=lambda p: (-len(p), p))
        rules.append({"host": host, "http": {"paths": [_ingress_path(p, kind=kind, backend=backend) for p in paths]}})
    obj["spec"] = {"ingressClassName": options.ingress_class, "rules": rules}
    if sections := _tls_sections(routes):
        obj["spec"]["tls"] = sections
    return obj


def nginx_size(size: int) -> str:
    """A size as nginx reads it (binary ``m`` and ``k``, else bytes): ``1m``, ``64k``, ``1000``."""
    for unit, suffix in ((MIB, "m"), (KIB, "k")):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _ingress_path(path: str, *, kind: str, backend: dict) -> dict:
    if kind == "plain":
        return {"path": path, "pathType": "Prefix", "backend": backend}
    prefix = "" if path == "/" else re.escape(path)
    pattern = f"{prefix}(/|$)(.*)" if kind == "strip" else f"{prefix}(/|$)"
    return {"path": pattern if path != "/" else "/", "pathType": "ImplementationSpecific", "backend": backend}


def http_routes(spec: AppSpec, name: str, *, options: RenderOptions) -> list[dict]:
    """One HTTPRoute per host of the service, attached to the configured Gateway."""
    svc = spec.services[name]
    return [_http_route(spec, name, host=host, routes=[r for r in svc.routes if r.host == host], options=options)
            for host in sorted({r.host for r in svc.routes})]


def _http_route(spec: AppSpec, service: str, *, host: str, routes: list[RouteSpec],
                options: RenderOptions) -> dict:
    label = meta.dns_label(f"{service}-{host.replace('*', 'wildcard')}")
    obj = meta.header(f"{GATEWAY_GROUP}/v1", "HTTPRoute", name=label, namespace=meta.namespace_of(spec.app),
                      labels=meta.service_labels(spec.app, service))
    port = spec.services[service].port
    rules = []
    for route in sorted(routes, key=lambda r: (-len(normalize(r.path)), normalize(r.path))):
        rule: dict = {"matches": [{"path": {"type": "PathPrefix", "value": normalize(route.path)}}]}
        if strips(route):
            rule["filters"] = [{"type": "URLRewrite", "urlRewrite": {
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
        # With the defaults the server would fill in (group, kind, weight) written out:
        # backendRefs is atomic, so a default added there makes every apply a change.
        rule["backendRefs"] = [{"group": "", "kind": "Service", "name": service, "port": port, "weight": 1}]
        rules.append(rule)
    obj["spec"] = {"parentRefs": [_parent_ref(options)], "hostnames": [host], "rules": rules}
    return obj


def _parent_ref(options: RenderOptions) -> dict:
    ref = options.gateway_ref
    parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
    if ref.namespace:
        parent["namespace"] = ref.namespace
    if ref.section_name:
        parent["sectionName"] = ref.section_name
    return parent
