"""Runs a plan step by step: journaled before and after, retried, resumable, never twice.

A step is idempotent by contract, so running it again after a crash between
its start and its end is safe; the journal tells which steps already ended.
A step that raises a `FailoverError` other than a plain failure (a refusal, a
conflict, bad input) stops the plan at once: retrying cannot change the answer.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from failover.controller.journal import PLAN, STEP, Journal
from failover.errors import ConflictError, FailoverError, SafetyRefusal, UserError

# Test hook: the chaos and controller tests kill the executing process right
# after the named step ended, to prove a plan resumes and runs once.
CRASH_AFTER_STEP_ENV = "FAILOVER_TEST_CRASH_AFTER_STEP"


class Step(Protocol):
    """One idempotent change to the world; `run` may return a line on what it found or did."""

    @property
    def name(self) -> str: ...

    def run(self) -> str | None: ...


@dataclass(frozen=True)
class PlanRun:
    plan_id: str
    epoch: int
    service: str
    steps: Sequence[Step]
    summary: dict[str, Any] | None = None  # the engine's plan, journaled for history


@dataclass(frozen=True)
class StepOutcome:
    index: int
    name: str
    outcome: str  # ok | skipped (already done) | failed
    attempts: int
    duration: float
    error: str | None = None


@dataclass(frozen=True)
class PlanOutcome:
    plan_id: str
    outcome: str  # ok | failed | deposed | interrupted | already-done
    steps: tuple[StepOutcome, ...]

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "already-done")


def _worth_retrying(exc: BaseException) -> bool:
    return not isinstance(exc, SafetyRefusal | ConflictError | UserError)


Progress = Callable[[str, int, str, dict[str, Any]], None]  # event, index, step name, fields


class Executor:
    def __init__(self, journal: Journal, *, attempts: int = 5, step_deadline: float = 60.0,
                 max_backoff: float = 2.0, on_progress: Progress | None = None,
                 still_leading: Callable[[], bool] | None = None) -> None:
        self.journal = journal
        # Asked before every step: a controller that lost the right to act
        # (deposed leader, lost quorum) stops between steps, never mid-step.
        self.still_leading = still_leading
        self.attempts = attempts
        self.step_deadline = step_deadline
        self.max_backoff = max_backoff
        self.on_progress = on_progress
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Stop after the step in flight (SIGTERM); the plan stays unfinished and resumes later."""
        self._stop.set()

    def _notify(self, event: str, index: int, name: str, **fields: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(event, index, name, fields)

    def execute(self, run: PlanRun) -> PlanOutcome:
        progress = self.journal.plan_progress(run.plan_id)
        if progress.ended:
            return PlanOutcome(run.plan_id, "already-done", ())
        common = {"plan_id": run.plan_id, "epoch": run.epoch, "service": run.service}
        if not progress.started:
            self.journal.append(PLAN, event="start", steps=[s.name for s in run.steps],
                                plan=run.summary, **common)
        outcomes: list[StepOutcome] = []
        for index, step in enumerate(run.steps):
            if index in progress.steps_done:
                outcomes.append(StepOutcome(index, step.name, "skipped", 0, 0.0))
                self._notify("skipped", index, step.name)
                continue
            if self._stop.is_set():
                return PlanOutcome(run.plan_id, "interrupted", tuple(outcomes))
            if self.still_leading is not None and not self.still_leading():
                self.journal.append(PLAN, event="end", outcome="deposed", failed_step=step.name,
                                    error="this controller lost the right to act", **common)
                return PlanOutcome(run.plan_id, "deposed", tuple(outcomes))
            outcome = self._run_step(run, index, step, common,
                                     first_attempt=progress.attempts.get(index, 0) + 1)
            outcomes.append(outcome)
            if outcome.outcome != "ok":
                self.journal.append(PLAN, event="end", outcome="failed", failed_step=step.name,
                                    error=outcome.error, **common)
                return PlanOutcome(run.plan_id, "failed", tuple(outcomes))
            if os.environ.get(CRASH_AFTER_STEP_ENV) == step.name:
                os._exit(137)
        self.journal.append(PLAN, event="end", outcome="ok", **common)
        return PlanOutcome(run.plan_id, "ok", tuple(outcomes))

    def _run_step(self, run: PlanRun, index: int, step: Step, common: dict[str, Any],
                  *, first_attempt: int) -> StepOutcome:
        started = time.monotonic()
        attempt = first_attempt - 1

        def attempt_once() -> None:
            nonlocal attempt
            attempt += 1
            self.journal.append(STEP, event="start", index=index, step=step.name,
                                attempt=attempt, **common)
            self._notify("start", index, step.name, attempt=attempt)
            t0 = time.monotonic()
            try:
                detail = step.run()
            except Exception as exc:
                self.journal.append(STEP, event="end", index=index, step=step.name,
                                    attempt=attempt, outcome="error",
                                    duration=time.monotonic() - t0, error=_describe(exc), **common)
                self._notify("error", index, step.name, attempt=attempt, error=_describe(exc))
                raise
            self.journal.append(STEP, event="end", index=index, step=step.name, attempt=attempt,
                                outcome="ok", duration=time.monotonic() - t0, detail=detail,
                                **common)
            self._notify("ok", index, step.name, attempt=attempt,
                         duration=time.monotonic() - t0)

        retrying = Retrying(
            retry=retry_if_exception(_worth_retrying),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.step_deadline),
            wait=wait_random_exponential(multiplier=0.05, max=self.max_backoff),
            reraise=True,
        )
        try:
            retrying(attempt_once)
        except Exception as exc:
            return StepOutcome(index, step.name, "failed", attempt - first_attempt + 1,
                               time.monotonic() - started, _describe(exc))
        return StepOutcome(index, step.name, "ok", attempt - first_attempt + 1,
                           time.monotonic() - started)


def _describe(exc: BaseException) -> str:
    kind = "" if isinstance(exc, FailoverError) else f"{type(exc).__name__}: "
    return f"{kind}{exc}".strip()
