"""The long-running daemon: its parts (see server.py build) reconcile, probe, route, scale and answer the API."""
