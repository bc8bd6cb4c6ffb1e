"""`flotilla certs set|ls|rm`: the TLS certificates of an app's HTTPS routes, kept in the vault.

A certificate chain and its private key are read from files and sent to the
daemon over its socket, which checks the pair (the key is the certificate's,
it has not expired, it covers every route that names it) before it stores
anything, and loads it into the running gateway without a reload. Nothing
here ever prints a key: `ls` shows hosts, issuer, expiry, source and the last
error of an ACME certificate (docs/https.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import click

from flotilla.cli import render
from flotilla.daemon.client import DaemonClient, app_path

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
CERT_COLUMNS = (("NAME", "name"), ("HOSTS", "hosts_text"), ("ISSUER", "issuer"), ("NOT AFTER", "not_after_text"),
                ("SOURCE", "source"), ("ERROR", "error"))


def register(cli_group: click.Group) -> None:
    cli_group.add_command(certs)


def _client(ctx: click.Context) -> DaemonClient:
    return DaemonClient.connect(ctx.obj)


@click.group()
def certs() -> None:
    """Keep the TLS certificates of HTTPS routes in Flotilla's encrypted vault.

    A route names one in the spec; the gateway serves it on gateway.https_port:

    \b
      gateway: {listen: "0.0.0.0:80", https_port: 443}
      services:
        web:
          routes:
            - host: shop.example
              tls: {certificate: shop}      # flotilla certs set shop shop --cert ... --key ...
            - host: api.example
              tls: {acme: true}             # issued and renewed through ACME
    """


@certs.command("set")
@click.argument("app")
@click.argument("name")
@click.option("--cert", "cert_file", required=True, type=click.File("rb"),
              help="The certificate chain in PEM, leaf first.")
@click.option("--key", "key_file", required=True, type=click.File("rb"),
              help="Its private key in PEM, unencrypted (the vault encrypts it).")
@json_option
@click.pass_context
def certs_set(ctx: click.Context, app: str, name: str, cert_file, key_file, as_json: bool) -> None:
    """Store (or replace) certificate NAME of APP; the gateway serves it at once, without a reload.

    Refused, with nothing changed, when the key is not the certificate's, the
    certificate has expired, or it does not cover a route that names it.

    \b
    Example:
      flotilla certs set shop shop --cert fullchain.pem --key privkey.pem
    """
    body = {"cert": cert_file.read().decode("ascii", "replace"), "key": key_file.read().decode("ascii", "replace")}
    result = _client(ctx).request("PUT", app_path(app, "certs", name), body=body)
    if as_json:
        render.echo_json(result)
        return
    click.echo(f"{app}: certificate {name} for {', '.join(result['hosts'])}, valid until "
               f"{_when(result['not_after'])}")


@certs.command("ls")
@click.argument("app")
@json_option
@click.pass_context
def certs_ls(ctx: click.Context, app: str, as_json: bool) -> None:
    """List APP's certificates: hosts, issuer, expiry, source (vault or acme) and the last error.

    \b
    Example:
      flotilla certs ls shop --json
    """
    rows = _client(ctx).request("GET", app_path(app, "certs"))["certificates"]
    if as_json:
        render.echo_json(rows)
    else:
        click.echo(certs_table(rows) if rows else f"{app} has no certificates")


@certs.command("rm")
@click.argument("app")
@click.argument("name")
@click.pass_context
def certs_rm(ctx: click.Context, app: str, name: str) -> None:
    """Remove certificate NAME of APP (refused while a route of APP uses it).

    \b
    Example:
      flotilla certs rm shop old-shop
    """
    _client(ctx).request("DELETE", app_path(app, "certs", name))
    click.echo(f"{app}: certificate {name} removed")


def certs_table(rows: Sequence[dict]) -> str:
    shown = [{**r, "hosts_text": ",".join(r["hosts"]) or None, "not_after_text": _when(r["not_after"])}
             for r in rows]
    return render.table(shown, CERT_COLUMNS)


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))
