"""The Kubernetes target: the same spec rendered as manifests (pure) and applied to a cluster.

``render`` (render.py) turns an ``AppSpec`` into Kubernetes objects without
any I/O; ``apply`` (apply.py) is the only module that imports the
``kubernetes`` client, and is imported lazily so rendering needs no cluster
library at all.
"""

from flotilla.engines.kubernetes.options import GatewayRef, RenderOptions
from flotilla.engines.kubernetes.render import render

__all__ = ["GatewayRef", "RenderOptions", "render"]
