"""Flotilla: deploy, run and manage microservices from one declarative file."""

__version__ = "0.1.0"
