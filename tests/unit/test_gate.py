"""The controller's gate: whether it acts on a decision now, and why not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from failover.controller.gate import LocalFacts, Move, MoveKind, next_move
from failover.engine import Decision, FenceRegion, NoOp, Plan, PromoteSubscriber

FENCE = FenceRegion("orders", 3, "east", "self-fence", best_effort=False)
PROMOTE = PromoteSubscriber("orders", 4, "west", "east", "east is DOWN")
IDLE = NoOp("orders", 3, "no change")


STALE = FenceRegion("orders", 4, "west", "west is not the recorded writer", best_effort=False)


def decision(*, has_quorum: bool = True, executor: str | None = "west",
             actions: tuple[FenceRegion | PromoteSubscriber | NoOp, ...] = (IDLE,),
             local: tuple[FenceRegion, ...] = ()) -> Decision:
    return Decision(now=100.0, me="west", quorum=2, heard=("south", "west"),
                    has_quorum=has_quorum, isolated_for=0.0 if has_quorum else 30.0,
                    executor=executor, executor_reason="the reason the engine gave",
                    verdicts=(), plan=Plan(100.0, actions), ignored=(), local=local)


def facts(**changes: object) -> LocalFacts:
    base: dict[str, object] = dict(stopping=False, coordination_problem=None, unfinished_plans=0,
                                   dns_pending=False, up_for=60.0, startup_grace=10.0)
    base.update(changes)
    return LocalFacts(**base)  # type: ignore[arg-type]


def test_the_executor_acts_on_a_plan_that_changes_something() -> None:
    move = next_move(decision(actions=(PROMOTE,)), facts())
    assert move == Move(MoveKind.ACT, "the reason the engine gave")
    assert move.needs_leadership


def test_another_executor_means_nothing_to_do_here_and_says_who() -> None:
    move = next_move(decision(executor="south", actions=(PROMOTE,)), facts())
    assert move.kind is MoveKind.NOTHING
    assert "south executes" in move.reason
    assert not move.needs_leadership


def test_a_plan_of_no_ops_is_nothing() -> None:
    assert next_move(decision(), facts()).kind is MoveKind.NOTHING


def test_a_broken_store_holds_every_fleet_action() -> None:
    move = next_move(decision(actions=(PROMOTE,)), facts(coordination_problem="etcd: no quorum",
                                                         unfinished_plans=1, dns_pending=True))
    assert move == Move(MoveKind.WAIT, "coordination: etcd: no quorum")


def test_a_cut_off_controller_still_fences_itself_when_the_store_is_broken() -> None:
    cut_off = decision(has_quorum=False, executor="west", actions=(FENCE,))
    assert next_move(cut_off, facts(coordination_problem="etcd: no quorum")).kind is MoveKind.ACT


def test_silence_right_after_a_start_is_not_isolation() -> None:
    cut_off = decision(has_quorum=False, executor="west", actions=(FENCE,))
    move = next_move(cut_off, facts(up_for=2.0, startup_grace=10.0))
    assert move.kind is MoveKind.WAIT
    assert "started 2.0s ago" in move.reason
    assert next_move(cut_off, facts(up_for=10.0, startup_grace=10.0)).kind is MoveKind.ACT


def test_unfinished_plans_come_before_a_new_plan() -> None:
    move = next_move(decision(actions=(PROMOTE,)), facts(unfinished_plans=2, dns_pending=True))
    assert move.kind is MoveKind.RESUME


def test_a_pending_writer_record_is_retried_with_a_quorum_even_with_nothing_planned() -> None:
    assert next_move(decision(), facts(dns_pending=True)).kind is MoveKind.RETRY_DNS
    cut_off = decision(has_quorum=False, executor=None)
    assert next_move(cut_off, facts(dns_pending=True)).kind is MoveKind.NOTHING


def test_stopping_starts_nothing() -> None:
    move = next_move(decision(actions=(PROMOTE,)), facts(stopping=True, unfinished_plans=1))
    assert move.kind is MoveKind.NOTHING


def test_a_stale_local_primary_is_fenced_first_whatever_else_holds() -> None:
    for d in (decision(local=(STALE,), actions=(PROMOTE,)),
              decision(local=(STALE,), has_quorum=False, executor=None)):
        move = next_move(d, facts(coordination_problem="store down", unfinished_plans=1,
                                  up_for=0.0, dns_pending=True))
        assert move == Move(MoveKind.FENCE_LOCAL, "west is not the recorded writer")
        assert move.acts and not move.needs_leadership
    assert next_move(decision(local=(STALE,)), facts(stopping=True)).kind is MoveKind.NOTHING


ACTIONS = st.lists(st.sampled_from([FENCE, PROMOTE, IDLE]), max_size=3).map(tuple)


@given(has_quorum=st.booleans(), executor=st.sampled_from(["west", "south", None]),
       actions=ACTIONS, local=st.sampled_from([(), (STALE,)]), stopping=st.booleans(),
       problem=st.sampled_from([None, "store down"]), unfinished=st.integers(0, 3),
       dns_pending=st.booleans(), up_for=st.floats(0, 100), grace=st.floats(0, 50))
def test_invariants(has_quorum: bool, executor: str | None,
                    actions: tuple[FenceRegion | PromoteSubscriber | NoOp, ...],
                    local: tuple[FenceRegion, ...], stopping: bool,
                    problem: str | None, unfinished: int, dns_pending: bool, up_for: float,
                    grace: float) -> None:
    d = decision(has_quorum=has_quorum, executor=executor, actions=actions, local=local)
    f = facts(stopping=stopping, coordination_problem=problem, unfinished_plans=unfinished,
              dns_pending=dns_pending, up_for=up_for, startup_grace=grace)
    move = next_move(d, f)
    assert move.reason
    if stopping:
        assert move.kind is MoveKind.NOTHING
    elif local:
        assert move.kind is MoveKind.FENCE_LOCAL
    if move.kind in (MoveKind.RESUME, MoveKind.RETRY_DNS):
        # Only a controller that hears a quorum finishes or repairs the fleet's work.
        assert has_quorum and problem is None
    if move.kind is MoveKind.RESUME:
        assert executor == "west" and unfinished > 0
    if move.kind is MoveKind.ACT:
        assert executor == "west" and any(not isinstance(a, NoOp) for a in actions)
        assert not (has_quorum and problem is not None)
        assert has_quorum or up_for >= grace
    if (has_quorum and problem is None and not stopping and not local and executor == "west"
            and unfinished):
        assert move.kind is MoveKind.RESUME

