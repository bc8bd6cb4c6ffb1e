"""The single-host Docker Engine target (see engine.py)."""

from flotilla.engines.docker.engine import DockerEngine, EngineEvent

__all__ = ["DockerEngine", "EngineEvent"]
