"""One evaluation: observations + state + policy + now + me -> verdicts and a plan.

Pure and order-independent: every collection is sorted or keyed before use,
so every controller given the same inputs returns the same decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from failover.engine.actions import Action, FenceRegion, NoOp, Plan
from failover.engine.durability import DurabilityState
from failover.engine.model import AfterPlan, ClusterState, Health, Observation, Policy
from failover.engine.planner import (
    Context,
    Positions,
    ReplicationViews,
    fence_stale,
    plan_isolated,
    plan_service,
    writer_positions,
)
from failover.engine.quorum import (
    RegionVerdict,
    choose_executor,
    fresh_observers,
    isolated_for,
    latest_observations,
    region_verdicts,
    sees_quorum,
)


@dataclass(frozen=True, slots=True)
class Decision:
    now: float
    me: str
    quorum: int
    heard: tuple[str, ...]  # observers `me` hears, itself included
    has_quorum: bool
    isolated_for: float  # seconds without a quorum; 0 with one, inf if never had one
    # Who runs the plan. With a quorum every controller computes the same one;
    # without, a controller may only fence its own region, so it is `me`.
    executor: str | None
    executor_reason: str
    verdicts: tuple[RegionVerdict, ...]
    plan: Plan
    ignored: tuple[str, ...]  # input the engine did not use, and why
    # Fences of this controller's own region that it runs at once, with or without a
    # quorum and whoever executes the plan: it reaches its own database when nobody
    # else can, and fencing a primary the fleet does not record as writer is always safe.
    local: tuple[FenceRegion, ...] = ()
    # The newest position each writer was seen at: pass it to the next `decide`.
    positions: Positions = field(default_factory=dict)
    # Where each service stands on durability (planned services only: with a quorum).
    durability: dict[str, DurabilityState] = field(default_factory=dict)

    @property
    def executes(self) -> bool:
        """Whether the deciding controller is the one that must run the plan."""
        return self.executor == self.me


def decide(
    observations: Iterable[Observation], state: ClusterState, policy: Policy, now: float, me: str,
    *, known_positions: Positions | None = None, after_plans: Mapping[str, AfterPlan] | None = None,
) -> Decision:
    latest, ignored = latest_observations(observations, policy)
    verdicts = region_verdicts(latest, policy, now)
    fresh = fresh_observers(latest, policy, now)
    heard = fresh | ({me} & policy.observers)
    has_quorum = sees_quorum(fresh, policy, me)
    isolated = isolated_for(latest, policy, now, me)
    views = ReplicationViews(latest.values(), now - policy.observation_max_age)
    positions = writer_positions(latest.values(), ((s.writer, s.service) for s in state.services
                                                   if s.writer is not None), known_positions)
    cutoff = now - policy.observation_max_age
    mine = {target: seen for (observer, target), seen in latest.items()
            if observer == me and seen.observed_at >= cutoff}
    reached = frozenset(target for target, seen in mine.items()
                        if seen.health is Health.HEALTHY)
    ctx = Context.build(now, verdicts, views, policy, positions, reached=reached, mine=mine,
                        after_plans=after_plans or {})
    states = state.by_service()
    notes = list(ignored)
    notes += [f"state of service {name!r}: not a configured service"
              for name in sorted(states.keys() - policy.service.keys())]
    heard_text = f"{len(heard)} of {len(policy.priority)} observers (quorum {policy.quorum})"

    actions: list[Action] = []
    local: list[FenceRegion] = []
    for service_policy in policy.by_name:
        service_state = states.get(service_policy.name)
        if service_state is not None and me in service_policy.regions:
            own = fence_stale(service_state, me, ctx, epoch=service_state.epoch,
                              best_effort=False)
            if own is not None:
                local.append(own)
        if service_state is None:
            actions.append(NoOp(service_policy.name, 0, "no state recorded for this service; "
                                                        "nothing is known about its writer"))
        elif has_quorum:
            actions += plan_service(service_policy, service_state, ctx)
        else:
            actions.append(plan_isolated(service_state, me=me, isolated=isolated,
                                         self_fence_after=policy.self_fence_after,
                                         heard=heard_text, ctx=ctx))

    if has_quorum:
        executor = choose_executor(fresh, verdicts, policy)
        executor_reason = (
            "the highest-priority observer that is heard and not in a DOWN region"
            if executor is not None else "no observer is both heard and outside a DOWN region"
        )
    elif any(isinstance(action, FenceRegion) for action in actions):
        executor, executor_reason = me, f"{me} is cut off and fences its own region"
    else:
        executor, executor_reason = None, f"{me} hears {heard_text}: nobody acts on its view"

    return Decision(
        now=now, me=me, quorum=policy.quorum, heard=tuple(sorted(heard)), has_quorum=has_quorum,
        isolated_for=isolated, executor=executor, executor_reason=executor_reason,
        verdicts=tuple(verdicts[name] for name in sorted(verdicts)),
        plan=Plan(now, tuple(actions)), ignored=tuple(notes), local=tuple(local),
        positions=positions, durability=dict(sorted(ctx.durability.items())),
    )
