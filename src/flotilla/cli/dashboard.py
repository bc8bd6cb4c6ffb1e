"""`flotilla dashboard`: a login link for the live dashboard the daemon serves on loopback.

Why a command of its own: the dashboard needs no password, because only the
owner of the daemon's socket can ask for a link; the link works once, within
a minute, and the browser keeps a session cookie instead.
"""

from __future__ import annotations

import webbrowser

import click

from flotilla.cli import render
from flotilla.daemon.client import DaemonClient
from flotilla.daemon.paths import Home


@click.command()
@click.option("--open", "open_browser", is_flag=True, help="Also open the link in the default browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the link as JSON ({\"url\": ..., \"path\": ...}).")
@click.pass_context
def dashboard(ctx: click.Context, open_browser: bool, as_json: bool) -> None:
    """Print a one-time login link to the live dashboard (and with --open, open it).

    The daemon serves the dashboard on 127.0.0.1 (a free port, or `flotilla
    daemon --dashboard-listen HOST:PORT`): apps, replicas and their health,
    traffic and replica charts, the autoscaler's decisions, caches, routes and
    events, pushed live; and buttons to scale a service or restart a replica.
    The link logs one browser in within 60 seconds and then stops working; the
    session lasts 12 hours. Run the command again for another browser.

    \b
    Example:
      $ flotilla dashboard --open
      http://127.0.0.1:41237/dashboard/login?token=Xq3v...
    """
    home: Home = ctx.obj
    link = DaemonClient.connect(home).request("POST", "/v1/dashboard/login")
    if as_json:
        render.echo_json(link)
    else:
        click.echo(link["url"])
    if open_browser and not webbrowser.open(link["url"]):
        click.echo("no browser could be opened here; paste the link into one (within 60 seconds)", err=True)


def register(cli_group: click.Group) -> None:
    """Add ``dashboard`` to the ``flotilla`` command group."""
    cli_group.add_command(dashboard)
