"""A service's hooks around a promotion: `pre_promote` (it may refuse) and `post_failover`
(best effort), each a command that reads the plan as JSON on stdin."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from failover.engine import Action, PromoteSubscriber
from failover.engine.serialize import plan_as_dict
from failover.errors import SafetyRefusal

HOOK_TIMEOUT = 30.0


def hook_input(actions: Sequence[Action], decided_at: float) -> str:
    """A plan as its hooks read it on stdin (JSON)."""
    return json.dumps(plan_as_dict(actions, decided_at))


@dataclass(frozen=True)
class HookStep:
    """A service's hook command: the plan on stdin as JSON, the essentials in the environment.

    A pre_promote hook that exits non-zero (or overruns) refuses the promotion: it is
    the first step, so nothing has changed yet. post_failover runs as a best-effort last step.
    """

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    plan_json: str

    def run(self) -> str:
        try:
            done = subprocess.run(list(self.argv), input=self.plan_json, capture_output=True,
                                  text=True, timeout=HOOK_TIMEOUT, check=False,
                                  env={**os.environ, **self.env})
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SafetyRefusal(f"{self.name}: {' '.join(self.argv)} could not run: {exc}") from exc
        output = (done.stdout + done.stderr).strip().splitlines()
        last = output[-1] if output else ""
        if done.returncode != 0:
            raise SafetyRefusal(f"{self.name}: {' '.join(self.argv)} exited {done.returncode}"
                                + (f": {last}" if last else ""))
        return f"exit 0{': ' + last if last else ''}"


def hook_env(action: PromoteSubscriber) -> dict[str, str]:
    return {"FAILOVER_SERVICE": action.service, "FAILOVER_TARGET": action.region,
            "FAILOVER_OLD_WRITER": action.previous_writer, "FAILOVER_EPOCH": str(action.epoch)}
