"""The executor: journaled steps, retries that stop on refusals, resume after a crash, never twice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from failover.controller.executor import CRASH_AFTER_STEP_ENV, Executor, PlanRun
from failover.controller.journal import Journal
from failover.errors import SafetyRefusal


@dataclass
class AppendStep:
    """A real, idempotent step: ensure a line is in a file. Fails `failures` times first."""

    name: str
    target: Path
    failures: int = 0
    error: Exception = field(default_factory=lambda: OSError("connection refused"))
    calls: int = 0

    def run(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        lines = self.target.read_text().splitlines() if self.target.exists() else []
        if self.name not in lines:
            with self.target.open("a") as handle:
                handle.write(self.name + "\n")
            return "added"
        return "already there"


def make(tmp_path: Path, steps: list[AppendStep]) -> tuple[Executor, PlanRun, Journal]:
    journal = Journal(tmp_path / "journal.db", source="us-east-1")
    executor = Executor(journal, attempts=4, max_backoff=0.01)
    return executor, PlanRun("plan-1", 7, "app", steps), journal


def test_runs_steps_in_order_and_journals_each(tmp_path: Path) -> None:
    out = tmp_path / "world"
    executor, run, journal = make(tmp_path, [AppendStep("a", out), AppendStep("b", out)])
    result = executor.execute(run)
    assert result.ok and [s.outcome for s in result.steps] == ["ok", "ok"]
    assert out.read_text() == "a\nb\n"
    events = [(e["kind"], e.get("event"), e.get("step")) for e in journal.entries()]
    assert events == [("plan", "start", None), ("step", "start", "a"), ("step", "end", "a"),
                      ("step", "start", "b"), ("step", "end", "b"), ("plan", "end", None)]
    assert all(e["plan_id"] == "plan-1" and e["epoch"] == 7 for e in journal.entries())


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    out = tmp_path / "world"
    flaky = AppendStep("a", out, failures=2)
    executor, run, journal = make(tmp_path, [flaky])
    result = executor.execute(run)
    assert result.ok and result.steps[0].attempts == 3
    errors = [e for e in journal.entries() if e.get("outcome") == "error"]
    assert len(errors) == 2 and "connection refused" in errors[0]["error"]


def test_a_refusal_stops_the_plan_without_retry(tmp_path: Path) -> None:
    out = tmp_path / "world"
    refused = AppendStep("a", out, failures=9, error=SafetyRefusal("lag 3 MB over max_lag 1 MB"))
    after = AppendStep("b", out)
    executor, run, journal = make(tmp_path, [refused, after])
    result = executor.execute(run)
    assert not result.ok and refused.calls == 1 and after.calls == 0
    end = next(e for e in journal.entries() if e["kind"] == "plan" and e["event"] == "end")
    assert end["outcome"] == "failed" and "lag 3 MB" in end["error"]


def test_gives_up_after_the_attempt_limit(tmp_path: Path) -> None:
    step = AppendStep("a", tmp_path / "world", failures=99)
    executor, run, _ = make(tmp_path, [step])
    result = executor.execute(run)
    assert result.outcome == "failed" and step.calls == 4


def test_a_finished_plan_is_never_executed_twice(tmp_path: Path) -> None:
    out = tmp_path / "world"
    executor, run, _ = make(tmp_path, [AppendStep("a", out)])
    assert executor.execute(run).outcome == "ok"
    again = AppendStep("a", out)
    executor2, run2, _ = make(tmp_path, [again])
    assert executor2.execute(run2).outcome == "already-done"
    assert again.calls == 0


CRASHING_PLAN = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from unit.test_executor import AppendStep
    from failover.controller.executor import Executor, PlanRun
    from failover.controller.journal import Journal
    out = Path({out!r})
    steps = [AppendStep(name, out) for name in ("fence", "promote", "dns")]
    journal = Journal(Path({journal!r}), source="us-east-1")
    print(Executor(journal).execute(PlanRun("plan-9", 3, "app", steps)).outcome)
""")


def test_killed_between_steps_resumes_and_finishes_once(tmp_path: Path) -> None:
    out, journal_path = tmp_path / "world", tmp_path / "journal.db"
    script = CRASHING_PLAN.format(tests=str(Path(__file__).parents[1]), out=str(out),
                                  journal=str(journal_path))
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={**_env(), CRASH_AFTER_STEP_ENV: "promote"}, check=False)
    assert crashed.returncode == 137, crashed.stderr
    assert out.read_text() == "fence\npromote\n"
    journal = Journal(journal_path, source="us-east-1")
    [unfinished] = journal.unfinished_plans()
    assert unfinished.steps_done == {0, 1}

    resumed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=_env(), check=False)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "ok", resumed.stderr
    assert out.read_text() == "fence\npromote\ndns\n"
    starts = [e["step"] for e in journal.entries() if e["kind"] == "step" and e["event"] == "start"]
    assert starts == ["fence", "promote", "dns"]  # nothing ran twice
    assert journal.unfinished_plans() == []


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != CRASH_AFTER_STEP_ENV}


def test_a_deposed_leader_stops_between_steps(tmp_path: Path) -> None:
    out = tmp_path / "world"
    first, second = AppendStep("a", out), AppendStep("b", out)
    journal = Journal(tmp_path / "journal.db", source="us-east-1")
    leading = iter([True, False])
    result = Executor(journal, still_leading=lambda: next(leading)).execute(
        PlanRun("plan-2", 4, "app", [first, second]))
    assert result.outcome == "deposed" and (first.calls, second.calls) == (1, 0)
    assert journal.unfinished_plans() == []


def test_a_stop_request_leaves_the_plan_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "world"
    journal = Journal(tmp_path / "journal.db", source="us-east-1")
    executor = Executor(journal)

    class StopAfterRun(AppendStep):
        def run(self) -> str:
            executor.request_stop()
            return super().run()

    steps = [StopAfterRun("a", out), AppendStep("b", out)]
    result = executor.execute(PlanRun("plan-3", 5, "app", steps))
    assert result.outcome == "interrupted" and out.read_text() == "a\n"
    [unfinished] = journal.unfinished_plans()
    assert unfinished.steps_done == {0}
    assert Executor(journal).execute(PlanRun("plan-3", 5, "app", steps)).outcome == "ok"
    assert out.read_text() == "a\nb\n"
