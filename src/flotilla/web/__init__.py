"""The live dashboard: a browser view of every app, served by the daemon (docs/architecture.md, "The dashboard").

Above the daemon in the layers: it reads the daemon's parts (status views,
event log, the gateway's metrics window) and acts through its operations; the
daemon only mounts the ASGI app it is handed (``daemon/api.py``) and never
imports this package.
"""

from flotilla.web.app import Dashboard

__all__ = ["Dashboard"]
