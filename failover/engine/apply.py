"""The state a plan leaves behind, so the controller knows what to expect after it."""

from __future__ import annotations

from dataclasses import replace

from failover.engine.actions import (
    AddReader,
    ConfirmWriter,
    NoOp,
    Plan,
    PromoteSubscriber,
    RemoveReader,
    SetDnsWriter,
)
from failover.engine.model import ClusterState


class StaleEpoch(ValueError):
    """An action carries an epoch older than the one recorded: a fencing token was reused."""


def apply_plan(state: ClusterState, plan: Plan) -> ClusterState:
    """Apply every action of `plan` to `state`; fencing and re-pointing change no recorded state."""
    services = state.by_service()
    for action in plan.actions:
        if isinstance(action, NoOp):
            continue
        current = services[action.service]
        if action.epoch < current.epoch:
            raise StaleEpoch(f"{type(action).__name__} for {action.service} carries epoch "
                             f"{action.epoch} < recorded {current.epoch}")
        if isinstance(action, PromoteSubscriber | ConfirmWriter) and action.epoch == current.epoch:
            raise StaleEpoch(f"{type(action).__name__} of {action.region} for {action.service} "
                             f"reuses epoch {action.epoch}")
        if isinstance(action, PromoteSubscriber):
            current = replace(current, writer=action.region, epoch=action.epoch,
                              last_failover_at=plan.decided_at)
        elif isinstance(action, ConfirmWriter):
            current = replace(current, epoch=action.epoch)
        elif isinstance(action, SetDnsWriter):
            current = replace(current, writer=action.to_region)
        elif isinstance(action, AddReader):
            current = replace(current, readers=current.readers | {action.region})
        elif isinstance(action, RemoveReader):
            current = replace(current, readers=current.readers - {action.region})
        services[action.service] = current
    return ClusterState(tuple(services[name] for name in sorted(services)))
