"""Benchmark: HTTPS through Flotilla's gateway against nginx and Caddy, with wrk.

Why it exists: a TLS route puts the gateway's HAProxy in charge of every
handshake and every encrypted byte, and a user would otherwise terminate TLS in
nginx or Caddy. So the three must be measured side by side: the same
certificate, the same replicas, the same wrk settings, in one run.

* replicas: two of flotilla/static:bookworm (nginx-light from Debian, built on
  demand by `scripts/build-images.sh static` and cached by tag), run by
  Flotilla as the app's service. Each is one nginx worker answering every path
  with a fixed 12-byte JSON body (`return 200`), far faster than any proxy in
  front of it here (the `direct` row shows the replicas' own ceiling);
* certificate: made by this script with `cryptography` (a throwaway CA and a
  leaf for `localhost`, ECDSA P-256 by default, `--key-type rsa` for RSA 2048),
  given to every side; each side's served certificate is checked to be it;
* flotilla: the gateway on `gateway.listen` and `gateway.https_port`, the route
  `localhost/` with `tls: {certificate: bench}` from `flotilla certs set`;
* nginx: started here (`daemon off`, by pid), `worker_processes auto`, an
  `upstream` of both replicas with keep-alive, `ssl_session_cache` on, and
  `keepalive_requests` raised so that it never closes a client's connection
  mid-run (its default 1000 would add handshakes to the keep-alive case);
* caddy: started here (`caddy run`, by pid), admin API off, no automatic
  HTTPS, `tls CERT KEY`, `reverse_proxy` to both replicas round-robin.

wrk sends the URL's host as SNI, so every URL is `localhost` (127.0.0.1), the
name the certificate and the routes carry. Three cases per side, each on
`--connections` connections (split over `--threads` wrk threads):

* http:      plain HTTP with keep-alive (the same proxy without TLS);
* https:     HTTPS with keep-alive: requests/s, and p50 minus the http p50
             (the latency TLS adds);
* handshake: HTTPS with `Connection: close`: every request is a new TCP
             connection and a full TLS handshake (wrk resumes no session), so
             requests/s is new TLS connections/s.

Each case runs for all sides before the next case (the peers all stay up,
idle while another side is measured), and the whole `--rounds` times, so a
slow spell on this shared machine spreads over the sides instead of landing
on one; the table shows each figure's median over the rounds, and the ratios
Flotilla/best peer are the medians of each round's own ratio. Beside the
rates, the CPU each side's processes spend per request (for Flotilla: its
daemon, which drains the access log, and the HAProxy below it), which swings
far less than the rates do when other work shares the cores. Prints the
table, the ratios on both rates with the aim (>= 1.0), and says clearly when
a side is unavailable (not installed, failed to start, or a Flotilla without
HTTPS). Exit status 1 when a side or case failed or was INVALID (wrk saw
socket errors or non-2xx answers); an aim not met is reported, not an error.

    .venv/bin/python benchmarks/tls.py [--seconds 4] [--rounds 3] [--connections 32] [--key-type rsa] [--json]

Needs root's Docker Engine, wrk, nginx and caddy (scripts/setup.sh). Flotilla
runs with a private FLOTILLA_HOME in a temp dir; at the end the app is brought
down and the daemon, nginx and Caddy are stopped by pid, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proxy_harness import (  # noqa: E402
    NGINX_PROXY,
    BenchError,
    FlotillaApp,
    Load,
    WrkResult,
    binary,
    descendants,
    free_port,
    measure,
    median_result,
    require_wrk,
    start_nginx,
    start_server,
    stop_process,
    usable,
    wait_answering,
)

APP = "benchtls"
HOST = "localhost"  # the route, the certificate's name and the URLs' host (so wrk's SNI): resolves to 127.0.0.1
IMAGE = "flotilla/static:bookworm"
REPLICA_PORT = 8000
CERT_NAME = "bench"
AIM_RATIO = 1.0  # Flotilla / best peer, on both rates
SIDES = ("direct", "flotilla", "nginx", "caddy")
PEERS = ("nginx", "caddy")
CASES = ("http", "https", "handshake")
READY_WAIT_SECONDS = 20

# The replicas' nginx.conf, written to /tmp by the container's command (the
# image is plain Debian; replicas run as www-data with no capability).
REPLICA_CONF = """\
daemon off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen 8000;
        default_type application/json;
        location / { return 200 '{"ok":true}\\n'; }
    }
}
"""

SERVICE = """\
services:
  static:
    image: {image}
    command: ["sh", "-c", 'printf "%s" "$NGINX_CONF" >/tmp/nginx.conf && exec nginx -c /tmp/nginx.conf']
    env: {{NGINX_CONF: {conf}}}
    user: "33:33"
    port: {replica_port}
    replicas: 2
    health: {{path: /healthz, interval: 2s, timeout: 1s}}
    routes:
      - {{host: {host}, path: /{tls}}}
"""

# nginx's TLS: its own recommended session cache; keepalive_requests raised (see the module doc).
NGINX_SERVER = """\
    keepalive_requests 1000000;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name {host};
{location}
    }}"""

CADDYFILE = """\
{{
    admin off
    auto_https off
    storage file_system {tmp}/caddy-data
    servers {{
        protocols h1 h2
    }}
}}
http://{host}:{http_port} {{
    bind 127.0.0.1
    reverse_proxy {upstreams} {{
        lb_policy round_robin
    }}
}}
https://{host}:{https_port} {{
    bind 127.0.0.1
    tls {cert} {key}
    reverse_proxy {upstreams} {{
        lb_policy round_robin
    }}
}}
"""


@dataclass(frozen=True)
class Certificate:
    """The one certificate every side serves, as files, and what identifies it."""

    ca: Path  # the throwaway CA the probes trust
    chain: Path  # the leaf, PEM
    key: Path
    sha256: str  # of the leaf's DER
    kind: str  # "ECDSA P-256" or "RSA 2048"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass(frozen=True)
class Side:
    """Where one side answers: plain HTTP and HTTPS (None where it has no such listener)."""

    name: str
    http_urls: tuple[str, ...]
    https_url: str | None = None
    cpu_roots: tuple[int, ...] = ()  # the processes whose CPU (with their descendants') the side costs

    def cpu_pids(self) -> list[int]:
        return [pid for root in self.cpu_roots for pid in descendants(root)]


# -- the certificate ----------------------------------------------------------


def _private_key(kind: str):
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else rsa.generate_private_key(65537, 2048)


def _signed(*, subject: str, public_key, issuer: str, signer, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_certificate(tmp: Path, *, kind: str) -> Certificate:
    """A CA and a leaf for HOST signed by it, valid for a day, written under tmp (0600 keys)."""
    ca_key, leaf_key = _private_key(kind), _private_key(kind)
    ca = _signed(subject="flotilla bench CA", public_key=ca_key.public_key(), issuer="flotilla bench CA",
                 signer=ca_key, ca=True)
    leaf = _signed(subject=HOST, public_key=leaf_key.public_key(), issuer="flotilla bench CA", signer=ca_key,
                   ca=False)
    paths = {name: tmp / f"{name}.pem" for name in ("ca", "chain", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["chain"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths["key"].touch(mode=0o600)
    paths["key"].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return Certificate(ca=paths["ca"], chain=paths["chain"], key=paths["key"],
                       sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
                       kind="ECDSA P-256" if kind == "ecdsa" else "RSA 2048")


def served_sha256(port: int, *, cert: Certificate) -> str:
    """The SHA-256 of the leaf certificate served on 127.0.0.1:port for SNI HOST (verified against our CA)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            cert.context().wrap_socket(raw, server_hostname=HOST) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def check_serves(side: str, port: int, *, cert: Certificate) -> None:
    try:
        served = served_sha256(port, cert=cert)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise BenchError(f"{side} on 127.0.0.1:{port}: TLS handshake for {HOST} failed: {exc}") from exc
    if served != cert.sha256:
        raise BenchError(f"{side} on 127.0.0.1:{port} serves another certificate (sha256 {served[:16]}..., "
                         f"ours is {cert.sha256[:16]}...)")


# -- the peers ----------------------------------------------------------------


def _peer(name: str, *, http_port: int, https_port: int) -> Side:
    return Side(name, (f"http://{HOST}:{http_port}/",), f"https://{HOST}:{https_port}/")


def _with_cpu(side: Side, proc: subprocess.Popen) -> tuple[Side, subprocess.Popen]:
    return replace(side, cpu_roots=(proc.pid,)), proc


def run_nginx(tmp: Path, *, ips: list[str], cert: Certificate) -> tuple[Side, subprocess.Popen]:
    ports = {"http_port": free_port(), "https_port": free_port()}
    side = _peer("nginx", **ports)
    http = NGINX_SERVER.format(cert=cert.chain, key=cert.key, host=HOST, location=NGINX_PROXY, **ports)
    proc = start_nginx(tmp, upstreams=[f"{ip}:{REPLICA_PORT}" for ip in ips], http=http, url=side.https_url,
                       host=HOST, context=cert.context())
    return _with_cpu(side, proc)


def run_caddy(tmp: Path, *, ips: list[str], cert: Certificate) -> tuple[Side, subprocess.Popen]:
    ports = {"http_port": free_port(), "https_port": free_port()}
    side = _peer("caddy", **ports)
    conf = tmp / "Caddyfile"
    conf.write_text(CADDYFILE.format(tmp=tmp, host=HOST, cert=cert.chain, key=cert.key,
                                     upstreams=" ".join(f"{ip}:{REPLICA_PORT}" for ip in ips), **ports))
    # Caddy keeps its state under XDG/HOME: point them at the temp dir, not at root's home.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "caddy-config"),
           "XDG_DATA_HOME": str(tmp / "caddy-data")}
    proc = start_server([binary("caddy"), "run", "--config", str(conf), "--adapter", "caddyfile"], name="caddy",
                        log=tmp / "caddy.log", url=side.https_url, host=HOST, env=env, context=cert.context())
    return _with_cpu(side, proc)


# -- Flotilla -----------------------------------------------------------------


def flotilla_has_https(app: FlotillaApp) -> str | None:
    """None if this Flotilla serves HTTPS (it has `flotilla certs`), else why the side is unavailable."""
    if app.cli("certs", "--help", timeout=60).returncode == 0:
        return None
    return "this Flotilla has no HTTPS (no `flotilla certs` command: the tls-serve work is not merged)"


def flotilla_spec(*, port: int, https_port: int | None) -> str:
    https = f", https_port: {https_port}" if https_port else ""
    # redirect off: the plain-HTTP case must reach the replicas, not measure 308s.
    tls = f", tls: {{certificate: {CERT_NAME}, redirect: false}}" if https_port else ""
    head = f'app: {APP}\ngateway: {{listen: "127.0.0.1:{port}"{https}}}\n'
    return head + SERVICE.format(image=IMAGE, conf=json.dumps(REPLICA_CONF), replica_port=REPLICA_PORT, host=HOST,
                                 tls=tls)


def start_flotilla(tmp: Path, app: FlotillaApp, *, cert: Certificate) -> tuple[Side, str | None]:
    """Up the app (HTTPS when this Flotilla has it); the gateway's side and why HTTPS is missing, if it is."""
    missing = flotilla_has_https(app)
    port, https_port = free_port(), (None if missing else free_port())
    if not missing:
        app.check("certs", "set", APP, CERT_NAME, "--cert", str(cert.chain), "--key", str(cert.key))
    spec = tmp / "flotilla.yaml"
    spec.write_text(flotilla_spec(port=port, https_port=https_port))
    print(f"flotilla up -f {spec} (FLOTILLA_HOME={app.home})", flush=True)
    app.up(spec)
    # Flotilla's cost is its daemon (which drains the access log) and the HAProxy below it.
    side = Side("flotilla", (f"http://{HOST}:{port}/",), https_port and f"https://{HOST}:{https_port}/",
                cpu_roots=(int((app.home / "daemon.pid").read_text()),))
    problem = wait_answering(side.http_urls[0], host=HOST, seconds=READY_WAIT_SECONDS)
    if problem:
        raise BenchError(f"the gateway does not answer on {side.http_urls[0]}: {problem}")
    if https_port:
        problem = wait_answering(side.https_url, host=HOST, seconds=READY_WAIT_SECONDS, context=cert.context())
        if problem:
            raise BenchError(f"the gateway does not answer on {side.https_url}: {problem}")
        check_serves("flotilla", https_port, cert=cert)
    return side, missing


def ensure_image() -> None:
    """flotilla/static:bookworm, built from Debian packages the first time (cached by tag after)."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "static"], capture_output=True,
                          text=True, check=False)
    for line in proc.stderr.splitlines():
        print(f"  {line}", flush=True)
    if proc.returncode != 0:
        raise BenchError(f"scripts/build-images.sh static exited {proc.returncode} (its output is above)")


# -- the run ------------------------------------------------------------------

Outcome = WrkResult | BenchError


def case_urls(side: Side, case: str) -> tuple[str, ...]:
    if case == "http":
        return side.http_urls
    return (side.https_url,) if side.https_url else ()


def case_load(case: str, args: argparse.Namespace) -> Load:
    headers = ("Connection: close",) if case == "handshake" else ()
    return Load(host=HOST, threads=args.threads, connections=args.connections, seconds=args.seconds,
                warmup=args.warmup, headers=headers)


Results = dict[str, dict[str, Outcome]]  # side -> case -> outcome


def run_cases(sides: list[Side], args: argparse.Namespace) -> list[Results]:
    """Every case for every side, case by case, `--rounds` times over (see the module doc)."""
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number} of {args.rounds}", flush=True)
        results: Results = {side.name: {} for side in sides}
        for case in CASES:
            for side in sides:
                if urls := case_urls(side, case):
                    results[side.name][case] = measure_case(side, case, urls, args)
        rounds.append(results)
    return rounds


def measure_case(side: Side, case: str, urls: tuple[str, ...], args: argparse.Namespace) -> Outcome:
    try:
        return measure(f"{side.name} {case}", list(urls), load=case_load(case, args),
                       cpu_pids=side.cpu_pids if side.cpu_roots else None)
    except BenchError as exc:
        return exc


def merge_rounds(rounds: list[Results]) -> Results:
    """Each side's and case's median over the rounds; a case that failed in any round failed."""
    merged: Results = {}
    for side, row in rounds[0].items():
        merged[side] = {}
        for case in row:
            outcomes = [results[side][case] for results in rounds]
            failed = [o for o in outcomes if isinstance(o, BenchError)]
            merged[side][case] = failed[0] if failed else median_result(outcomes)
    return merged


def start_peers(tmp: Path, stack: contextlib.ExitStack, *, ips: list[str],
                cert: Certificate) -> tuple[list[Side], dict]:
    """nginx and Caddy, each stopped by the stack; a peer that cannot start is unavailable, not fatal."""
    sides, unavailable = [], {}
    for name, start in (("nginx", run_nginx), ("caddy", run_caddy)):
        try:
            side, proc = start(tmp, ips=ips, cert=cert)
            stack.callback(stop_process, proc)
            check_serves(name, urllib.parse.urlsplit(side.https_url).port, cert=cert)
        except BenchError as exc:
            unavailable[name] = str(exc)
            continue
        sides.append(side)
    return sides, unavailable


def run(tmp: Path, app: FlotillaApp, stack: contextlib.ExitStack, args: argparse.Namespace) -> dict:
    require_wrk()
    ensure_image()
    cert = make_certificate(tmp, kind=args.key_type)
    flotilla, missing = start_flotilla(tmp, app, cert=cert)
    ips = app.replica_ips(expected=2)
    direct = Side("direct", tuple(f"http://{ip}:{REPLICA_PORT}/" for ip in ips))
    peers, unavailable = start_peers(tmp, stack, ips=ips, cert=cert)
    if missing:
        unavailable["flotilla HTTPS"] = missing
    rounds = run_cases([direct, flotilla, *peers], args)
    return {"certificate": cert.kind, "rounds": rounds, "results": merge_rounds(rounds), "unavailable": unavailable}


def clean_result(results: Results, side: str, case: str) -> WrkResult | None:
    result = results.get(side, {}).get(case)
    return result if isinstance(result, WrkResult) and not result.errors else None


def best_peer(results: Results, case: str) -> tuple[str, WrkResult] | None:
    clean = [(name, r) for name in PEERS if (r := clean_result(results, name, case))]
    return max(clean, key=lambda item: item[1].requests_per_s) if clean else None


def round_ratio(results: Results, case: str) -> float | None:
    ours, best = clean_result(results, "flotilla", case), best_peer(results, case)
    return ours.requests_per_s / best[1].requests_per_s if ours and best else None


def ratio(outcome: dict, case: str) -> dict | None:
    """Flotilla's requests/s over the best peer's in `case`: each round's (both measured side by side), their
    median and range; None when a side is missing, failed or INVALID in a round."""
    values = [round_ratio(results, case) for results in outcome["rounds"]]
    best = best_peer(outcome["results"], case)
    if None in values or best is None:
        return None
    value = statistics.median(values)
    return {"value": round(value, 3), "rounds": [round(v, 3) for v in values], "best_peer": best[0],
            "met": value >= AIM_RATIO}


def added_p50(row: dict[str, Outcome]) -> float | None:
    http, https = row.get("http"), row.get("https")
    return https.p50_ms - http.p50_ms if usable(http, https) else None


def summary(outcome: dict, args: argparse.Namespace) -> dict:
    results = outcome["results"]
    sides = {}
    for name, row in results.items():
        sides[name] = {case: (r.as_json() if isinstance(r, WrkResult) else {"failed": str(r)})
                       for case, r in row.items()}
        if (added := added_p50(row)) is not None:
            sides[name]["added_p50_ms"] = round(added, 3)
    return {
        "settings": {"seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup,
                     "connections": args.connections, "threads": args.threads, "replicas": 2, "image": IMAGE,
                     "certificate": outcome["certificate"]},
        "sides": sides,
        "unavailable": outcome["unavailable"],
        "ratios": {"https_keepalive": ratio(outcome, "https"), "new_tls_connections": ratio(outcome, "handshake"),
                   "plain_http": ratio(outcome, "http")},
    }


def cell(result: Outcome | None, width: int) -> str:
    if result is None:
        return f"{'-':>{width}} {'-':>8}"
    if isinstance(result, BenchError):
        return f"{'FAILED':>{width}} {'':>8}"
    mark = "!" if result.errors else " "
    return f"{result.requests_per_s:>{width}.0f}{mark}{result.p50_ms:>7.3f}ms"


def cpu_cell(result: Outcome | None) -> str:
    cpu = result.cpu_us_per_request if isinstance(result, WrkResult) else None
    return f"{cpu:8.1f}" if cpu is not None else f"{'-':>8}"


def print_report(outcome: dict, data: dict, args: argparse.Namespace) -> None:
    results = outcome["results"]
    print(f"\nGET / (Host and SNI: {HOST}), 2 replicas of {IMAGE} (nginx-light, a 12-byte `return 200`); "
          f"{outcome['certificate']} certificate, the same for every side; "
          f"wrk -t {args.threads} -c {args.connections} -d {args.seconds:g}s per case, "
          f"median of {args.rounds} rounds")
    print(f"  {'side':9} {'HTTP req/s':>11} {'p50':>8}  {'HTTPS req/s':>11} {'p50':>8}  "
          f"{'new TLS conn/s':>14} {'p50':>8}  {'TLS adds at p50':>15}")
    for name in SIDES:
        if name not in results:
            continue
        row = results[name]
        added = added_p50(row)
        shown = f"{added:12.3f} ms" if added is not None else f"{'-':>15}"
        print(f"  {name:9} {cell(row.get('http'), 11)}  {cell(row.get('https'), 11)}  "
              f"{cell(row.get('handshake'), 14)}  {shown}")
    print(f"  {'CPU per request (us)':21} {'HTTP':>8} {'HTTPS':>8} {'new TLS':>8}   (the side's own processes)")
    for name in SIDES:
        row = results.get(name, {})
        if any(isinstance(r, WrkResult) and r.cpu_s is not None for r in row.values()):
            print(f"  {name:21} " + " ".join(cpu_cell(row.get(case)) for case in CASES))
    for name, why in outcome["unavailable"].items():
        print(f"  {name}: UNAVAILABLE: {why}")
    for name, row in results.items():
        for case, result in row.items():
            if isinstance(result, BenchError):
                print(f"  {name} {case}: FAILED: {result}")
            elif result.errors:
                print(f"  {name} {case}: INVALID (marked !): {result.errors}")
    labels = {"https_keepalive": "HTTPS keep-alive req/s", "new_tls_connections": "new TLS connections/s",
              "plain_http": "plain HTTP req/s (reference)"}
    for key, label in labels.items():
        value = data["ratios"][key]
        if value is None:
            print(f"  Flotilla/best peer, {label}: not judged (a side is missing, failed or INVALID)")
            continue
        aim = "" if key == "plain_http" else f"; aim >= {AIM_RATIO:.1f}: {'met' if value['met'] else 'NOT met'}"
        spread = f"rounds {min(value['rounds']):.2f}..{max(value['rounds']):.2f}"
        print(f"  Flotilla/best peer, {label}: {value['value']:.2f} ({spread}; best peer: {value['best_peer']}{aim})")


def clean(outcome: dict) -> bool:
    rows = outcome["results"].values()
    return not outcome["unavailable"] and all(isinstance(r, WrkResult) and not r.errors
                                              for row in rows for r in row.values())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=4, help="measured seconds of wrk per case (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="times every case runs for every side (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured wrk seconds before each case (default 1)")
    parser.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                        help="the certificate's key: ECDSA P-256 or RSA 2048 (default ecdsa)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (progress goes to stderr)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-tls-") as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        app = FlotillaApp(tmp, app=APP)
        stack.callback(app.down)
        if args.json:
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        try:
            outcome = run(tmp, app, stack, args)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        data = summary(outcome, args)
        if not args.json:
            print_report(outcome, data, args)
    if args.json:
        print(json.dumps(data, indent=2))
    return 0 if clean(outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
