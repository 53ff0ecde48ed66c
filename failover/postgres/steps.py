"""An action as a list of named, idempotent steps that an executor can journal and retry.

Each step knows the region it acts on and the SQL it would say (for
`--dry-run`); `run()` does it and returns a one-line account of what it found
or changed. Running a step twice ends in the same state as running it once,
so a plan interrupted anywhere is finished by running the list again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from failover.errors import FailoverError


@dataclass(frozen=True)
class SqlStep:
    name: str
    region: str
    sql: tuple[str, ...]
    run: Callable[[], str] = field(compare=False)


@dataclass(frozen=True)
class WriterChange:
    """Steps that move a service's writer, split where the target becomes writable: the
    controller claims the epoch before them, waits for the old writer's lease to end just
    before the target becomes writable, and records the writer and moves DNS right after."""

    prepare: tuple[SqlStep, ...]
    become_writable: SqlStep
    after: tuple[SqlStep, ...]

    @property
    def steps(self) -> tuple[SqlStep, ...]:
        return (*self.prepare, self.become_writable, *self.after)


@dataclass(frozen=True)
class StepResult:
    name: str
    region: str
    detail: str
    seconds: float


StepListener = Callable[[SqlStep, StepResult | None], None]


def run_steps(steps: Sequence[SqlStep], *, on_event: StepListener | None = None,
              before: Callable[[SqlStep], None] | None = None) -> list[StepResult]:
    """Run `steps` in order; `on_event(step, None)` before and `(step, result)` after each.

    `before` runs ahead of each step and may raise to stop the list there:
    tests use it to interrupt an action between two steps.
    """
    done: list[StepResult] = []
    for step in steps:
        if before is not None:
            before(step)
        if on_event is not None:
            on_event(step, None)
        started = time.monotonic()
        try:
            detail = step.run()
        except psycopg.Error as exc:
            # Server errors become failures that name the step; our own errors
            # (refusals, unreachable regions) already say what happened.
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FailoverError(f"step {step.name!r} on {step.region}: {message}") from exc
        result = StepResult(step.name, step.region, detail, time.monotonic() - started)
        done.append(result)
        if on_event is not None:
            on_event(step, result)
    return done
