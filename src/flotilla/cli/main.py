"""The `flotilla` command: every user-facing verb, each a thin call to the daemon.

Commands validate what they can locally (the spec, with file and line), then
ask the daemon, which they start in the background when it is not running.
Every error is a Flotilla error printed as one clear message with its own
exit code; ``--json`` prints the API's data for scripts.
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import sys
from pathlib import Path

import click

from flotilla import __version__
from flotilla.cli import certs, dashboard, data, deploys, images, kube, render, tasks
from flotilla.cli.wait import last_event_id, wait_converged
from flotilla.daemon.client import DaemonClient, app_path
from flotilla.daemon.paths import Home, default_home
from flotilla.errors import FlotillaError, SpecError
from flotilla.spec import load_spec, spec_to_dict
from flotilla.spec.loader import locate_problems

DEFAULT_SPEC = "flotilla.yaml"
spec_option = click.option(
    "-f", "--file", "spec_file", default=DEFAULT_SPEC, show_default=True,
    type=click.Path(dir_okay=False), help="The app spec.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient.connect(ctx.obj)


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home", envvar="FLOTILLA_HOME", type=click.Path(file_okay=False),
    help="The daemon's state directory [env FLOTILLA_HOME; default /var/lib/flotilla as root].",
)
@click.version_option(__version__, prog_name="flotilla")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Deploy, run and manage microservices from one declarative file.

    \b
    Quick start:
      flotilla validate flotilla.yaml      # check the spec, change nothing
      flotilla up -f flotilla.yaml         # create or update the app, wait until healthy
      flotilla ps shop                     # one row per replica
      flotilla scale shop web=5            # horizontal scaling
      flotilla down shop                   # remove everything the app owns
    """
    ctx.obj = Home(Path(home).resolve()) if home else default_home()


@cli.command()
@click.argument("spec_file", default=DEFAULT_SPEC, type=click.Path(dir_okay=False))
@json_option
def validate(spec_file: str, as_json: bool) -> None:
    """Check a spec and report every problem at once; touches nothing.

    Each problem is printed as FILE:LINE:COLUMN: path: what is wrong; what to do.
    Exits 2 when the spec is invalid.

    \b
    Example:
      flotilla validate examples/shop/flotilla.yaml
    """
    try:
        spec = load_spec(spec_file)
    except SpecError as exc:
        if as_json:
            render.echo_json({"valid": False, "problems": [p.to_dict() for p in exc.problems]})
            sys.exit(exc.exit_code)
        raise
    if as_json:
        render.echo_json({"valid": True, "app": spec.app, "services": sorted(spec.services),
                          "caches": sorted(spec.caches)})
    else:
        caches = f", {len(spec.caches)} cache(s)" if spec.caches else ""
        click.echo(f"{spec_file}: valid ({spec.app}: {len(spec.services)} service(s){caches})")


@cli.command()
@spec_option
@json_option
@click.pass_context
def plan(ctx: click.Context, spec_file: str, as_json: bool) -> None:
    """Show what `up` would change, without changing anything.

    \b
    Example:
      flotilla plan -f examples/shop/flotilla.yaml
    """
    spec = load_spec(spec_file)
    result = _client(ctx).request("POST", "/v1/apps", body={"spec": spec_to_dict(spec)}, query={"dry_run": 1})
    render.echo_json(result) if as_json else click.echo(render.plan_text(result))


@cli.command()
@spec_option
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for every replica to be healthy.")
@click.option("--detach", "-d", is_flag=True, help="Return once the spec is accepted; do not wait.")
@click.option("--build", "build_images", is_flag=True,
              help="Build each service with build: first (compose's flag; `up` builds what is missing anyway).")
@json_option
@click.pass_context
def up(ctx: click.Context, spec_file: str, timeout: float, detach: bool, build_images: bool, as_json: bool) -> None:
    """Create or update an app from its spec and wait until every replica is healthy.

    Validates the spec first (nothing changes if it is invalid), shows the
    plan, then reports progress until the app has converged. Replicas whose
    config changed are replaced one at a time, the new one healthy before the
    old one stops. Exits non-zero with the reason on a timeout or a crash loop.

    Before anything changes, images are built (services with build:, tagged
    by the hash of their inputs, so an unchanged source builds nothing) and
    pulled as each service's pull: says (missing, always, never), with
    progress per layer; each tag is pinned to its digest for this deploy.

    \b
    Example:
      flotilla up -f examples/shop/flotilla.yaml --timeout 60
    """
    spec = load_spec(spec_file)
    client = _client(ctx)
    since = last_event_id(client, spec.app)
    result = _submit(client, spec_file, spec, quiet=as_json)
    if not as_json:
        _say(render.plan_text(result))
    if detach:
        render.echo_json(result) if as_json else None
        return
    status = wait_converged(client, spec.app, timeout=timeout, since=since, say=_quiet_if(as_json),
                            revision=result.get("revision", 0))
    if as_json:
        render.echo_json(status)
    else:
        click.echo(render.up_line(status) + (f" (revision {result['revision']})" if result.get("revision") else ""))
        for warning in status.get("warnings", []):  # what the host does that weakens every app
            _say(f"warning: {warning}")


def _submit(client: DaemonClient, spec_file: str, spec, *, quiet: bool = False) -> dict:
    """POST the spec; the daemon's pulls and builds stream to the terminal (cli/images.py) before its plan."""
    try:
        return client.with_progress("POST", "/v1/apps", body={"spec": spec_to_dict(spec)}, query={"progress": 1},
                                    on_progress=images.progress_printer(quiet=quiet))
    except SpecError as exc:  # problems found by the daemon (a missing image, secret, certificate): file and line
        raise SpecError(_located(exc.problems, spec_file)) from exc


def _located(problems, spec_file: str) -> list:
    try:
        text = Path(spec_file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return [p.__class__(**{**p.to_dict(), "file": spec_file}) for p in problems]
    return locate_problems(problems, text=text, filename=spec_file)


def _quiet_if(quiet: bool):
    return (lambda _message: None) if quiet else _say


@cli.command()
@click.argument("app")
@click.option("--volumes", "with_volumes", is_flag=True,
              help="Also delete the app's volumes (its data), each named in the output.")
@json_option
@click.pass_context
def down(ctx: click.Context, app: str, with_volumes: bool, as_json: bool) -> None:
    """Remove every container and network labelled for APP, and nothing else.

    The volumes of the spec's services (the app's data) are kept, for the next
    `up`, unless --volumes; `flotilla volumes ls APP` lists them.

    \b
    Example:
      flotilla down shop
      flotilla down shop --volumes     # and delete its data
    """
    result = _client(ctx).request("DELETE", app_path(app), query={"volumes": "1"} if with_volumes else None)
    if as_json:
        render.echo_json(result)
        return
    click.echo(f"{app}: removed {len(result['containers'])} container(s), {len(result['networks'])} network(s), "
               f"{len(result.get('volumes', []))} volume(s)")
    for name in result.get("volumes", []) if with_volumes else ():
        click.echo(f"  deleted volume {name}")
    kept = result.get("kept_volumes", [])
    if kept:
        click.echo(f"{app}: kept {len(kept)} volume(s) with its data: {', '.join(kept)} "
                   f"(`flotilla down {app} --volumes` deletes them)")


@cli.command()
@click.argument("app", required=False)
@json_option
@click.pass_context
def ps(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """List replicas: one row per replica, of APP or of every app; then each cache's nodes.

    JSON rows carry service, replica, name, state, healthy, ip, config_hash,
    current (running the current config), standby (a warm replica out of
    rotation, taken first by a scale-up), container_id and image (tag@short
    digest of the deploy, for a current replica); the row of a
    cache node also carries cache_node: its cache, role, shard, slot ranges,
    master, link status (up: reachable and, for a replica, replicating) and
    ready (link up and every slot of the cluster served).

    \b
    Example:
      flotilla ps shop --json
    """
    client = _client(ctx)
    apps = [app] if app else [a["app"] for a in client.request("GET", "/v1/apps")["apps"]]
    rows, scaled, caches = [], [], []
    for name in apps:
        status = client.request("GET", app_path(name))
        rows += [{"app": name, **r} for r in render.with_cache_nodes(status)]
        scaled += [{"app": name, **s} for s in status["services"] if "autoscale" in s]
        caches += [{"app": name, **c} for c in status.get("caches", [])]
    if as_json:
        render.echo_json(rows)
        return
    click.echo(render.ps_table(rows))
    for service in scaled:
        click.echo(render.autoscale_line(service))
    for cache in caches:
        click.echo(render.cache_text(cache))


@cli.command()
@click.argument("app")
@click.argument("counts", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Wait until the new count is healthy.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait with --wait.")
@json_option
@click.pass_context
def scale(ctx: click.Context, app: str, counts: tuple[str, ...], wait: bool, timeout: float, as_json: bool) -> None:
    """Set the number of replicas of one or more services: SERVICE=N ...

    The new count is kept until the next `up` of a spec with other replicas.

    \b
    Example:
      flotilla scale shop web=5 catalog=3 --wait
    """
    wanted = _parse_counts(counts)
    client = _client(ctx)
    since = last_event_id(client, app)
    result = client.request("POST", app_path(app, "scale"), body={"replicas": wanted})
    if wait:
        result = wait_converged(client, app, timeout=timeout, since=since, say=_quiet_if(as_json))
    if as_json:
        render.echo_json(result)
    else:
        click.echo(f"{app}: " + ", ".join(f"{s}={n}" for s, n in wanted.items()))


def _parse_counts(counts: tuple[str, ...]) -> dict[str, int]:
    wanted = {}
    for item in counts:
        service, sep, number = item.partition("=")
        if not sep or not service or not number.isdigit():
            raise click.BadParameter(f"{item!r}: write SERVICE=N, for example web=3", param_hint="COUNTS")
        wanted[service] = int(number)
    return wanted


@cli.command()
@click.argument("app", required=False)
@click.argument("service", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", default="all", show_default=True,
              help="Lines from the end of each replica's log (with --gateway: of the access log).")
@click.option("--gateway", is_flag=True, help="The gateway's access log of APP (of every app without APP).")
@click.option("--json", "as_json", is_flag=True, help="With --gateway: each request as its JSON object.")
@click.pass_context
def logs(ctx: click.Context, app: str | None, service: str | None, follow: bool, tail: str, gateway: bool,
         as_json: bool) -> None:
    """Print the logs of APP's replicas (or of one SERVICE), each line prefixed by its replica.

    With --gateway, print the gateway's access log instead: one line per request
    to APP (or SERVICE; every app's without APP) with its time, service,
    status, method, path, duration, bytes sent, client address and request
    id. Besides the request id, the gateway logs no header value (never
    Authorization or Cookie) and no query string. The log is
    $FLOTILLA_HOME/gateway/access.log, kept to 4 files of 10 MiB.

    \b
    Examples:
      flotilla logs shop web -f --tail 20
      flotilla logs --gateway shop -f
      flotilla logs --gateway shop web --tail 100 --json
    """
    if not gateway and (app is None or as_json):
        raise click.UsageError("give APP (only --gateway may go without one); --json goes with --gateway")
    query = {"follow": int(follow), "tail": tail, **({"service": service} if service else {})}
    if gateway:
        _print_access_log(ctx, app, query=query, as_json=as_json)
        return
    out = click.get_binary_stream("stdout")
    for line in _client(ctx).stream(app_path(app, "logs"), query=query):
        out.write(line)
        out.flush()


def _print_access_log(ctx: click.Context, app: str | None, *, query: dict, as_json: bool) -> None:
    path = app_path(app, "gateway-logs") if app else "/v1/gateway/logs"
    for line in _client(ctx).stream(path, query=query):
        click.echo(line.decode().rstrip("\n") if as_json else render.access_line(json.loads(line)))


@cli.command()
@click.argument("app")
@json_option
@click.pass_context
def routes(ctx: click.Context, app: str, as_json: bool) -> None:
    """Show APP's routing table: which host and path reach which service through the gateway.

    Services without routes are internal: the gateway cannot reach them.

    \b
    Example:
      flotilla routes shop
    """
    rows = _client(ctx).request("GET", app_path(app, "routes"))["routes"]
    if as_json:
        render.echo_json(rows)
    elif not rows:
        click.echo(f"{app} has no routes: every service is internal")
    else:
        click.echo(render.routes_table(rows))


@cli.command()
@click.argument("app")
@json_option
@click.pass_context
def metrics(ctx: click.Context, app: str, as_json: bool) -> None:
    """Show traffic per routed service of APP: requests/s, in flight, queued, 5xx, response time.

    Read from the gateway once a second. The daemon also serves every app's
    metrics in Prometheus' text format at GET /metrics on its socket.

    \b
    Example:
      flotilla metrics shop --json
    """
    rows = _client(ctx).request("GET", app_path(app, "metrics"))["services"]
    render.echo_json(rows) if as_json else click.echo(render.metrics_table(rows))


@cli.command()
@click.argument("app")
@click.option("--since", default=0, help="Only events after this id.")
@click.option("--limit", default=200, show_default=True, help="At most this many events.")
@json_option
@click.pass_context
def events(ctx: click.Context, app: str, since: int, limit: int, as_json: bool) -> None:
    """Show what Flotilla did to APP and why: starts, removals, crashes, health, scaling.

    \b
    Example:
      flotilla events shop --json
    """
    found = _client(ctx).request("GET", app_path(app, "events"), query={"since": since, "limit": limit})
    if as_json:
        render.echo_json(found["events"])
        return
    for event in found["events"]:
        click.echo(render.event_line(event))


@cli.group()
def secrets() -> None:
    """Keep passwords, access keys and encryption keys in Flotilla's encrypted vault.

    Values are encrypted with AES-256-GCM under the master key
    (FLOTILLA_MASTER_KEY, or $FLOTILLA_HOME/master.key made on first use) and
    reach containers as environment variables or files without ever being
    written to disk in plaintext. Map them in the spec:

    \b
      services:
        web:
          secrets:
            DB_PASSWORD: db-password          # env var <- secret
            /run/secrets/tls.key: tls-key     # file <- secret
    """


@secrets.command("set")
@click.argument("app")
@click.argument("name")
@click.option("--from-file", type=click.File("rb"), help="Read the value from this file instead of standard input.")
@json_option
@click.pass_context
def secrets_set(ctx: click.Context, app: str, name: str, from_file, as_json: bool) -> None:
    """Store a new version of secret NAME for APP, read from standard input (or --from-file).

    Never on the command line, where `ps` would show it. Services using the
    secret are replaced one replica at a time to pick up the new value.

    \b
    Example:
      printf %s "$DB_PASSWORD" | flotilla secrets set shop db-password
      flotilla secrets set shop tls-key --from-file key.pem
    """
    value = from_file.read() if from_file else _read_stdin_secret(name)
    body = {"value_b64": base64.b64encode(value).decode()}
    result = _client(ctx).request("PUT", app_path(app, "secrets", name), body=body)
    if as_json:
        render.echo_json(result)
        return
    rolling = f"; rolling {', '.join(result['rolling'])}" if result["rolling"] else ""
    click.echo(f"{app}: secret {name} is at version {result['version']}{rolling}")


def _read_stdin_secret(name: str) -> bytes:
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        return getpass.getpass(f"value of {name} (not echoed): ").encode()
    return click.get_binary_stream("stdin").read()


@secrets.command("ls")
@click.argument("app")
@json_option
@click.pass_context
def secrets_ls(ctx: click.Context, app: str, as_json: bool) -> None:
    """List APP's secrets: names, versions and dates, never values.

    \b
    Example:
      flotilla secrets ls shop
    """
    rows = _client(ctx).request("GET", app_path(app, "secrets"))["secrets"]
    if as_json:
        render.echo_json(rows)
    else:
        click.echo(render.secrets_table(rows) if rows else f"{app} has no secrets")


@secrets.command("get")
@click.argument("app")
@click.argument("name")
@click.option("--reveal", is_flag=True, help="Required: print the value.")
@click.pass_context
def secrets_get(ctx: click.Context, app: str, name: str, reveal: bool) -> None:
    """Print the current value of secret NAME (only with --reveal).

    \b
    Example:
      flotilla secrets get shop db-password --reveal
    """
    if not reveal:
        raise click.UsageError("this prints a secret's value: add --reveal to confirm")
    found = _client(ctx).request("GET", app_path(app, "secrets", name), query={"reveal": 1})
    out = click.get_binary_stream("stdout")
    out.write(base64.b64decode(found["value_b64"]))
    out.flush()


@secrets.command("rm")
@click.argument("app")
@click.argument("name")
@click.pass_context
def secrets_rm(ctx: click.Context, app: str, name: str) -> None:
    """Remove secret NAME of APP (refused while a service of APP uses it).

    \b
    Example:
      flotilla secrets rm shop old-token
    """
    _client(ctx).request("DELETE", app_path(app, "secrets", name))
    click.echo(f"{app}: secret {name} removed")


@secrets.command("rekey")
@json_option
@click.pass_context
def secrets_rekey(ctx: click.Context, as_json: bool) -> None:
    """Re-encrypt every secret under a new master key, in one transaction.

    With a key file ($FLOTILLA_HOME/master.key) the file is replaced. With
    FLOTILLA_MASTER_KEY the new key is written to $FLOTILLA_HOME/master.key.new
    (0600): put it in FLOTILLA_MASTER_KEY before the daemon next starts.

    \b
    Example:
      flotilla secrets rekey
    """
    result = _client(ctx).request("POST", "/v1/secrets/rekey")
    render.echo_json(result) if as_json else click.echo(result["message"])


@cli.command()
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option(
    "--api-listen", envvar="FLOTILLA_API_LISTEN", metavar="HOST:PORT",
    help="Also serve the API over TCP; every request then needs `Authorization: Bearer TOKEN` "
    "(FLOTILLA_API_TOKEN, or the token in $FLOTILLA_HOME/api.token, made on first use).",
)
@click.option(
    "--dashboard-listen", envvar="FLOTILLA_DASHBOARD_LISTEN", metavar="HOST:PORT", default="127.0.0.1:0",
    show_default=True, help="The dashboard's own listener, loopback only (port 0: a free one); "
    "`off` serves it on the API listeners only. `flotilla dashboard` prints a login link.",
)
@click.pass_context
def daemon(ctx: click.Context, log_level: str, api_listen: str | None, dashboard_listen: str) -> None:
    """Run the daemon in the foreground (other commands start it when needed).

    It serves its API on $FLOTILLA_HOME/flotilla.sock (mode 0600), keeps its
    state in $FLOTILLA_HOME/state.db, and reconciles every app on each spec
    change, Docker event, health change and every 5 seconds.

    \b
    Example:
      FLOTILLA_HOME=/tmp/fl flotilla daemon --log-level DEBUG
    """
    from flotilla.daemon.server import run_daemon  # imports the Docker SDK: only here
    from flotilla.web import Dashboard

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_daemon(ctx.obj, api_listen=api_listen, frontend=Dashboard.build,
               frontend_listen="" if dashboard_listen == "off" else dashboard_listen)


kube.register(cli)
dashboard.register(cli)
images.register(cli)
deploys.register(cli)
certs.register(cli)
data.register(cli)
tasks.register(cli)


def main() -> None:
    try:
        result = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FlotillaError as exc:
        click.echo(f"flotilla: {exc.message}" if not isinstance(exc, SpecError) else exc.message, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
