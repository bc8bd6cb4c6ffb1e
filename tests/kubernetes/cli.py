"""The Kubernetes commands in a `flotilla`-like group, for tests that run them as a user would.

cli/main.py registers them in the real `flotilla` command, which tests that
check exit codes run; this group, with the same `--home` handling, lets unit
tests invoke them in-process with click's CliRunner, without the rest of the CLI.
"""

from pathlib import Path

import click

from flotilla.cli.kube import register
from flotilla.daemon.paths import Home, default_home


@click.group()
@click.option("--home", envvar="FLOTILLA_HOME", type=click.Path(file_okay=False))
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    ctx.obj = Home(Path(home).resolve()) if home else default_home()


register(cli)

if __name__ == "__main__":
    cli()
