"""Autoscaling: how many replicas each autoscaled service needs, from its recent traffic.

The policy (``policy.py``) is pure: observations, the service's ``autoscale``
spec, the state of the previous decision and the time in, a replica count and
its reason out. The daemon samples the metrics, calls ``decide`` once a second
per service and applies the result; nothing here reads a clock or does I/O.
"""

from flotilla.autoscale.policy import (
    DRAIN_SECONDS,
    PANIC_FACTOR,
    PANIC_HOLD,
    SHORT_WINDOW,
    STABLE_WINDOW,
    TOLERANCE,
    Decision,
    Observation,
    PolicyState,
    decide,
    initial_state,
)

__all__ = [
    "DRAIN_SECONDS",
    "PANIC_FACTOR",
    "PANIC_HOLD",
    "SHORT_WINDOW",
    "STABLE_WINDOW",
    "TOLERANCE",
    "Decision",
    "Observation",
    "PolicyState",
    "decide",
    "initial_state",
]
