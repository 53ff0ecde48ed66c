"""Engine values as plain JSON-able data, and back: the one serialization of actions,
plans and decisions that `failover plan --json`, the controller's status API, the
journal and the hooks all use.

Actions are `{"type": <class name>, **fields}` and verdicts upper-case.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, get_args

from pydantic import TypeAdapter

from failover.engine.actions import Action
from failover.engine.decision import Decision
from failover.engine.quorum import RegionVerdict

# Every kind of action, from the union itself: a new action type cannot be left out.
_ACTION_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in get_args(Action)}


def action_as_dict(action: Action) -> dict[str, Any]:
    return {"type": type(action).__name__, **asdict(action)}


def action_from_dict(data: dict[str, Any]) -> Action:
    """The inverse of `action_as_dict`; a wrong shape raises pydantic's ValidationError."""
    fields = dict(data)
    kind = _ACTION_TYPES[fields.pop("type")]
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    result: Action = adapter.validate_python(fields)
    return result


def plan_as_dict(actions: Sequence[Action], decided_at: float) -> dict[str, Any]:
    """A plan's actions as the journal keeps them and the hooks read them."""
    return {"decided_at": decided_at, "actions": [action_as_dict(a) for a in actions]}


def stable_plan_id(service: str, actions: Sequence[Action]) -> str:
    """The same plan gets the same id on every controller: a hash of what it does."""
    digest = hashlib.sha256(json.dumps([action_as_dict(a) for a in actions],
                                       sort_keys=True).encode()).hexdigest()[:12]
    epoch = max((a.epoch for a in actions), default=0)
    return f"{service}-e{epoch}-{digest}"


def verdict_as_dict(verdict: RegionVerdict) -> dict[str, Any]:
    return {"region": verdict.region, "verdict": verdict.verdict.name,
            "healthy": verdict.healthy, "unhealthy": verdict.unhealthy,
            "quorum": verdict.quorum, "reason": verdict.reason,
            "votes": [asdict(vote) for vote in verdict.votes]}


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
        "verdicts": [verdict_as_dict(v) for v in decision.verdicts],
        "plan": [action_as_dict(action) for action in decision.plan.actions],
        "local": [action_as_dict(action) for action in decision.local],
        "ignored": list(decision.ignored),
    }
