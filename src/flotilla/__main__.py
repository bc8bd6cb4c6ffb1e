"""`python -m flotilla` runs the CLI (the daemon is spawned this way)."""

from flotilla.cli.main import main

main()
