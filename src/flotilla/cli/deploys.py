"""`flotilla history`, `flotilla rollback` and `flotilla restart`: the deploy history and what undoes it.

A command module of its own (as ``kube`` and ``dashboard`` are) so that the
verbs around revisions sit together: reading the history, returning to an
older revision through the same health-gated rolling update as ``up``, and
restarting replicas one at a time without a change of spec.
"""

from __future__ import annotations

import time

import click

from flotilla.cli import kube, render
from flotilla.cli.wait import last_event_id, wait_converged
from flotilla.daemon.client import DaemonClient, app_path
from flotilla.errors import ConflictError
from flotilla.spec import spec_from_dict

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
timeout_option = click.option("--timeout", default=120.0, show_default=True,
                              help="Seconds to wait for every replica to be healthy.")
detach_option = click.option("--detach", "-d", is_flag=True, help="Return once accepted; do not wait.")


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.argument("app")
@click.argument("revision", type=int, required=False)
@json_option
@click.pass_context
def history(ctx: click.Context, app: str, revision: int | None, as_json: bool) -> None:
    """List an app's revisions, or show revision N and its diff against the one before.

    \b
    Example:
      flotilla history shop        # every revision: when, by which command, its outcome
      flotilla history shop 3      # revision 3: spec, image IDs, secret versions, diff
    """
    client = DaemonClient.connect(ctx.obj)
    if revision is None:
        data = client.request("GET", app_path(app, "history"))
        render.echo_json(data) if as_json else click.echo(history_table(data))
        return
    data = client.request("GET", app_path(app, "history", str(revision)))
    render.echo_json(data) if as_json else click.echo(revision_text(data))


@click.command()
@click.argument("app")
@click.argument("revision", type=int, required=False)
@timeout_option
@detach_option
@json_option
@click.option("--target", type=click.Choice(["kubernetes"]),
              help="Re-apply the revision's manifests to a Kubernetes cluster instead of this host.")
@click.option("--context", help="With --target: the kubeconfig context [default: the current one].")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="With --target: the kubeconfig file.")
@kube.cluster_options
@click.pass_context
def rollback(ctx: click.Context, app: str, revision: int | None, timeout: float, detach: bool,
             as_json: bool, target: str | None, context: str | None, kubeconfig: str | None, **chosen) -> None:
    """Return APP to revision N (default: the last good revision before the current one).

    A rolling update like `up`: one replica at a time, the new one healthy
    before the old one is drained and stopped. The secret values that
    revision used are restored; if the vault no longer keeps one, nothing
    changes. The rollback is itself a new revision.

    With --target kubernetes, the revision's spec (as this host's daemon
    recorded it) is rendered and applied to the cluster as `flotilla apply`
    does, and the command waits for the Deployments' rollout.

    \b
    Example:
      flotilla rollback shop       # the previous good revision
      flotilla rollback shop 2
      flotilla rollback shop 2 --target kubernetes --context kind-kind
    """
    client = DaemonClient.connect(ctx.obj)
    if target == "kubernetes":
        number = revision or _previous_good(client, app)
        stored = client.request("GET", app_path(app, "history", str(number)))
        kube.apply_spec(ctx, spec_from_dict(stored["spec"]), context=context, kubeconfig=kubeconfig, dry_run=False,
                        detach=detach, timeout=timeout, as_json=as_json, **chosen)
        return
    since = last_event_id(client, app)
    result = client.request("POST", app_path(app, "rollback"), body={"revision": revision})
    _finish(client, app, result, since=since, timeout=timeout, detach=detach, as_json=as_json,
            done=f"{app} is back on revision {result['target']}'s spec as revision {result['revision']}")


@click.command()
@click.argument("app")
@click.argument("service", required=False)
@timeout_option
@detach_option
@json_option
@click.pass_context
def restart(ctx: click.Context, app: str, service: str | None, timeout: float, detach: bool,
            as_json: bool) -> None:
    """Restart every replica of APP (or of one SERVICE), one at a time, with no failed request.

    \b
    Example:
      flotilla restart shop catalog
    """
    client = DaemonClient.connect(ctx.obj)
    since = last_event_id(client, app)
    result = client.request("POST", app_path(app, "restart"), body={"service": service})
    _finish(client, app, result, since=since, timeout=timeout, detach=detach, as_json=as_json,
            done=f"{app}: restarted {', '.join(result['restarting'])}")


def _finish(client: DaemonClient, app: str, result: dict, *, since: int, timeout: float, detach: bool,
            as_json: bool, done: str) -> None:
    if not detach:
        wait_converged(client, app, timeout=timeout, since=since, say=(lambda _m: None) if as_json else _say,
                       revision=result.get("revision", 0))
    render.echo_json(result) if as_json else click.echo(done)


def _previous_good(client: DaemonClient, app: str) -> int:
    """The newest revision before the current one that rolled out."""
    data = client.request("GET", app_path(app, "history"))
    good = [r["revision"] for r in data["revisions"]
            if r["outcome"] == "rolled out" and r["revision"] < data["current"]]
    if not good:
        raise ConflictError(f"app {app} has no earlier revision that rolled out; `flotilla history {app}` lists them")
    return good[-1]


def history_table(data: dict) -> str:
    rows = [{"revision": f"{r['revision']}{' *' if r['revision'] == data['current'] else ''}",
             "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])),
             "command": r["command"], "outcome": r["outcome"], "reason": r["reason"]}
            for r in data["revisions"]]
    if not rows:
        return f"{data['app']} has no revisions yet"
    columns = [("REVISION", "revision"), ("CREATED", "created"), ("COMMAND", "command"),
               ("OUTCOME", "outcome"), ("REASON", "reason")]
    return render.table(rows, columns) + "\n* current"


def revision_text(data: dict) -> str:
    images = ", ".join(f"{image} {ident[:19]}" for image, ident in data["images"].items()) or "none"
    secrets = ", ".join(f"{name} v{v}" for name, v in data["secrets"].items()) or "none"
    lines = [f"revision {data['revision']} of {data['app']}{' (current)' if data['current'] else ''}",
             f"  command: {data['command']}",
             f"  created: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['created']))}",
             f"  outcome: {data['outcome']}" + (f" ({data['reason']})" if data["reason"] else ""),
             f"  images:  {images}", f"  secrets: {secrets}", ""]
    return "\n".join(lines) + (data["diff"] or "no change from the revision before")


def register(cli_group: click.Group) -> None:
    """Add ``history``, ``rollback`` and ``restart`` to the ``flotilla`` command group."""
    for command in (history, rollback, restart):
        cli_group.add_command(command)
