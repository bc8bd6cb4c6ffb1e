"""The `flotilla` command line (see main.py)."""
