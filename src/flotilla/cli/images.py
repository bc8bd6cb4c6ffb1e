"""The image commands: `flotilla build`, `flotilla registry login|ls|logout`, `flotilla images prune`.

And how pull and build progress is printed while `up` runs: one line per
step of each image and layer, in the style of `docker compose pull`, on
standard error. A registry password is read from standard input only (never
an argument, which `ps` would show) and is never printed back.
"""

from __future__ import annotations

import base64
import getpass
import sys
from collections.abc import Callable

import click

from flotilla.cli import render
from flotilla.daemon.client import DaemonClient
from flotilla.spec import load_spec, spec_to_dict

BAR_WIDTH = 20


def register(cli_group: click.Group) -> None:
    cli_group.add_command(build)
    cli_group.add_command(registry)
    cli_group.add_command(images)


def progress_printer(*, quiet: bool) -> Callable[[dict], None]:
    """What `up` and `build` do with each progress line of the daemon."""
    if quiet:
        return lambda _step: None
    return lambda step: click.echo(progress_line(step), err=True)


def progress_line(step: dict) -> str:
    """``web:1 Pulling``, ``  3f4a1b2c5d6e Downloading [=====>   ] 1.2MB/3.4MB``, ``shop/web Step 2/7 : ...``."""
    if not step.get("layer"):
        return f"{step['image']} {step['status']}"
    line = f"  {step['layer']} {step['status']}"
    current, total = step.get("current"), step.get("total")
    if current is not None and total:
        done = min(BAR_WIDTH, int(BAR_WIDTH * current / total))
        line += f" [{'=' * done}>{' ' * (BAR_WIDTH - done)}] {_size(current)}/{_size(total)}"
    return line


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.1f}{unit}" if unit != "B" else f"{count}B"
        count /= 1000
    return f"{count}B"


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient.connect(ctx.obj)


@click.command()
@click.option("-f", "--file", "spec_file", default="flotilla.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="The app spec.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def build(ctx: click.Context, spec_file: str, as_json: bool) -> None:
    """Build the image of every service with build:, deploying nothing.

    Each image is tagged REPOSITORY:src-HASH, the hash of its inputs (the
    context's files less .dockerignore, the Dockerfile, args, target and base
    images), so an unchanged source builds nothing. Output streams as it comes;
    a failed build tags nothing and shows the failing step's output.

    \b
    Example:
      flotilla build -f examples/shop/flotilla.build.yaml
    """
    spec = load_spec(spec_file)
    result = _client(ctx).with_progress("POST", "/v1/build", body={"spec": spec_to_dict(spec)},
                                        on_progress=progress_printer(quiet=as_json))
    if as_json:
        render.echo_json(result)
        return
    for service, tag in sorted(result["built"].items()):
        click.echo(f"{result['app']}/{service}: {tag}")


@click.group()
def registry() -> None:
    """Log in to container registries; logins live in Flotilla's encrypted vault.

    A login is used for pulls from that registry (Docker receives it with each
    pull, never in ~/.docker/config.json) and, on Kubernetes, as an image pull
    Secret. Passwords are never shown.
    """


@registry.command("login")
@click.argument("host")
@click.option("-u", "--username", required=True, help="The registry user name.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def registry_login(ctx: click.Context, host: str, username: str, as_json: bool) -> None:
    """Keep a login for registry HOST (HOST[:PORT]); the password or token is read from standard input.

    The registry checks it first: a wrong password is refused with its answer
    and nothing is kept.

    \b
    Example:
      printf %s "$TOKEN" | flotilla registry login registry.example.com -u ci
    """
    password = _read_password(host)
    body = {"username": username, "password_b64": base64.b64encode(password).decode()}
    result = _client(ctx).request("PUT", f"/v1/registries/{host}", body=body)
    render.echo_json(result) if as_json else click.echo(f"logged in to {result['registry']} as {username}")


def _read_password(host: str) -> bytes:
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        return getpass.getpass(f"password or token for {host} (not echoed): ").encode()
    return sys.stdin.buffer.read().rstrip(b"\r\n")


@registry.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def registry_ls(ctx: click.Context, as_json: bool) -> None:
    """List the registry logins: host, user name and since when; never a password."""
    rows = _client(ctx).request("GET", "/v1/registries")["registries"]
    if as_json:
        render.echo_json(rows)
    elif not rows:
        click.echo("no registry logins; `flotilla registry login HOST -u USER` adds one")
    else:
        click.echo(render.table(rows, (("REGISTRY", "registry"), ("USER", "username"))))


@registry.command("logout")
@click.argument("host")
@click.pass_context
def registry_logout(ctx: click.Context, host: str) -> None:
    """Forget the login for registry HOST."""
    result = _client(ctx).request("DELETE", f"/v1/registries/{host}")
    click.echo(f"logged out of {result['registry']}")


@click.group()
def images() -> None:
    """The images Flotilla pulled or built on this host."""


@images.command("prune")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def images_prune(ctx: click.Context, as_json: bool) -> None:
    """Remove images Flotilla pulled or built that no app's deploy uses; nothing else.

    Images Flotilla did not pull or build (yours, the base images) are never
    touched, and neither is an image a container still runs.
    """
    result = _client(ctx).request("POST", "/v1/images/prune")
    if as_json:
        render.echo_json(result)
        return
    for image in result["removed"]:
        click.echo(f"removed {image['image']} ({image['kind']}, {image['id'][:19]})")
    click.echo(f"{len(result['removed'])} image(s) removed, {len(result['kept'])} in use kept")
