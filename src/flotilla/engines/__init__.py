"""Targets Flotilla deploys to: one I/O boundary per engine."""
