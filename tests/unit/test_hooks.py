"""Service hooks: real commands get the plan on stdin and the essentials in the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from failover.controller.executor import Executor, PlanRun
from failover.controller.hooks import HookStep, hook_env
from failover.controller.journal import Journal
from failover.engine import PromoteSubscriber
from failover.errors import SafetyRefusal

ACTION = PromoteSubscriber("app", 4, "us-west-2", "us-east-1", "us-east-1 is DOWN")
PLAN = json.dumps({"decided_at": 1.0, "actions": [{"type": "PromoteSubscriber", "epoch": 4}]})


def test_a_hook_sees_the_plan_and_the_environment(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = f'cat > {seen}.json; echo "$FAILOVER_SERVICE $FAILOVER_TARGET $FAILOVER_OLD_WRITER ' \
             f'$FAILOVER_EPOCH" > {seen}.env; echo paged the on-call'
    detail = HookStep("post_failover hook", ("sh", "-c", script), hook_env(ACTION), PLAN).run()
    assert detail == "exit 0: paged the on-call"
    assert json.loads(Path(f"{seen}.json").read_text())["actions"][0]["epoch"] == 4
    assert Path(f"{seen}.env").read_text().split() == ["app", "us-west-2", "us-east-1", "4"]


def test_a_failing_pre_promote_hook_refuses_and_stops_the_plan(tmp_path: Path) -> None:
    hook = HookStep("pre_promote hook", ("sh", "-c", "echo replica not verified >&2; exit 3"),
                    hook_env(ACTION), PLAN)
    with pytest.raises(SafetyRefusal, match="exited 3: replica not verified"):
        hook.run()
    touched = tmp_path / "promoted"

    class Promote:
        name = "promote"

        def run(self) -> str:
            touched.write_text("yes")
            return "promoted"

    journal = Journal(tmp_path / "journal.db", source="us-west-2")
    outcome = Executor(journal).execute(PlanRun("p", 4, "app", [hook, Promote()]))
    assert outcome.outcome == "failed" and not touched.exists()
    [attempt] = [e for e in journal.entries() if e["kind"] == "step" and e["event"] == "start"]
    assert attempt["step"] == "pre_promote hook"  # a refusal is not retried


def test_a_missing_hook_command_refuses(tmp_path: Path) -> None:
    with pytest.raises(SafetyRefusal, match="could not run"):
        HookStep("pre_promote hook", (str(tmp_path / "nope"),), {}, PLAN).run()
