"""Poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable

from failover.errors import FailoverError


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str,
             interval: float = 0.02) -> None:
    """Return once `predicate()` is true; FailoverError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise FailoverError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
