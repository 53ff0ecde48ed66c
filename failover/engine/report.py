"""A decision as plain JSON-able data: what `failover plan --json` prints.

Actions are `{"type": <class name>, **fields}` and verdicts upper-case, the
same shapes the controller's status API uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from failover.engine.actions import Action
from failover.engine.decision import Decision


def action_as_dict(action: Action) -> dict[str, Any]:
    return {"type": type(action).__name__, **asdict(action)}


def decision_as_dict(decision: Decision) -> dict[str, Any]:
    return {
        "now": decision.now,
        "me": decision.me,
        "quorum": decision.quorum,
        "heard": list(decision.heard),
        "has_quorum": decision.has_quorum,
        # JSON has no infinity: null means "never heard a quorum".
        "isolated_for": None if math.isinf(decision.isolated_for) else decision.isolated_for,
        "executor": decision.executor,
        "executor_reason": decision.executor_reason,
        "executes": decision.executes,
        "verdicts": [
            {"region": v.region, "verdict": v.verdict.name, "healthy": v.healthy,
             "unhealthy": v.unhealthy, "quorum": v.quorum, "reason": v.reason,
             "votes": [asdict(vote) for vote in v.votes]}
            for v in decision.verdicts
        ],
        "plan": [action_as_dict(action) for action in decision.plan.actions],
        "ignored": list(decision.ignored),
    }
