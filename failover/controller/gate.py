"""Whether this controller acts on a decision now, and why not: pure.

The engine says what the fleet should do and who executes it; the gate adds
what only this controller knows: whether it is stopping, whether its
coordination store works, whether it has been up long enough to tell a
fleet it has not heard yet from a fleet that cut it off, and what its journal
and DNS retries hold. Every early return of the controller's tick is a `Move`
with its reason, so the rule is tested on its own rather than only by chaos runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from failover.engine import Decision


class MoveKind(StrEnum):
    FENCE_LOCAL = "fence-local"  # fence this region's own stale primary, at once
    ACT = "act"  # execute the decision's plan
    RESUME = "resume"  # finish plans a crash interrupted, before anything new
    RETRY_DNS = "retry-dns"  # move a writer record that a plan could not move
    WAIT = "wait"  # something must change first (the reason says what)
    NOTHING = "nothing"  # nothing to do


@dataclass(frozen=True, slots=True)
class Move:
    kind: MoveKind
    reason: str

    @property
    def acts(self) -> bool:
        return self.kind is MoveKind.FENCE_LOCAL or self.needs_leadership

    @property
    def needs_leadership(self) -> bool:
        return self.kind in (MoveKind.ACT, MoveKind.RESUME, MoveKind.RETRY_DNS)


@dataclass(frozen=True, slots=True)
class LocalFacts:
    """What the controller knows of itself when it decides."""

    stopping: bool
    coordination_problem: str | None  # why the store cannot be trusted now, or None
    unfinished_plans: int  # plans its journal started and never ended
    # A DNS record (writer or readers) differs from the fleet and its retry is due.
    dns_pending: bool
    up_for: float  # seconds since the controller started
    startup_grace: float  # how long after a start silence does not count as isolation


def next_move(decision: Decision, facts: LocalFacts) -> Move:
    if facts.stopping:
        return Move(MoveKind.NOTHING, "stopping: the step in flight finishes, nothing new starts")
    if decision.local:
        # Needs no store, no quorum, no leadership: a primary the fleet does not record
        # as writer is fenced whatever else holds, and first.
        return Move(MoveKind.FENCE_LOCAL, "; ".join(a.reason for a in decision.local))
    if decision.has_quorum and facts.coordination_problem is not None:
        # Self-fencing does not need the store; everything else must wait for it.
        return Move(MoveKind.WAIT, f"coordination: {facts.coordination_problem}")
    if not decision.has_quorum and facts.up_for < facts.startup_grace:
        return Move(MoveKind.WAIT, f"started {facts.up_for:.1f}s ago and has not heard a quorum "
                                   f"yet; silence counts as isolation after "
                                   f"{facts.startup_grace:g}s")
    if decision.has_quorum and decision.executes and facts.unfinished_plans:
        return Move(MoveKind.RESUME, f"{facts.unfinished_plans} unfinished plan(s) in the journal")
    if decision.has_quorum and facts.dns_pending:
        return Move(MoveKind.RETRY_DNS, "a DNS record differs from the fleet's and a retry is due")
    if decision.executes and decision.plan.changes():
        return Move(MoveKind.ACT, decision.executor_reason)
    if decision.plan.changes():
        return Move(MoveKind.NOTHING, f"{decision.executor or 'nobody'} executes: "
                                      f"{decision.executor_reason}")
    return Move(MoveKind.NOTHING, "the plan changes nothing")
