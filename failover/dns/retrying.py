"""The one retry policy of DNS calls: exponential backoff with full jitter, bounded
both in attempts and in time, and only for errors the caller says are transient."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("dns: %s failed (attempt %d): %s; retrying", what, state.attempt_number, error)
    return before_sleep


def transient_retries(what: str, *, worth_retrying: Callable[[BaseException], bool],
                      attempts: int = 5, within: float = 30.0,
                      first_wait: float = 0.05, max_wait: float = 2.0) -> Retrying:
    """A tenacity `Retrying` for `what`: the last error is re-raised as is when it gives up."""
    return Retrying(
        retry=retry_if_exception(worth_retrying),
        wait=wait_random_exponential(multiplier=first_wait, max=max_wait),
        stop=stop_after_attempt(attempts) | stop_after_delay(within),
        before_sleep=_log_retry(what),
        reraise=True,
    )
