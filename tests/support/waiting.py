"""Waiting on a condition instead of sleeping: the one poll loop the tests share.

Why it exists: a fixed ``time.sleep`` before an assertion is either too short
on a loaded machine (a flaky test) or longer than needed everywhere (a slow
one). A test polls the very condition it means instead, with a deadline that
says what it was waiting for when it passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
