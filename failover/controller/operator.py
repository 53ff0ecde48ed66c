"""An operator's verbs as engine actions, so that they run through the same step builder,
executor and journal as the fleet's own plans (and resume the same way after a crash)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from failover.controller.executor import PlanOutcome
from failover.coordination.base import ServiceRecord
from failover.engine import (
    Action,
    Decision,
    FenceRegion,
    PromoteSubscriber,
    RejoinRegion,
    RepointSubscribers,
    SetDnsWriter,
    UnfenceWriter,
)
from failover.errors import FailoverError, UserError
from failover.postgres.connection import ServiceDatabases
from failover.postgres.promote import find_old_primary, next_epoch
from failover.postgres.switchover import DEFAULT_TIMEOUT as DEFAULT_SWITCHOVER_TIMEOUT
from failover.topology import Topology

PLAN_VERBS = ("switchover", "promote", "fence", "unfence", "rejoin")
RECORD_VERBS = ("pause", "resume")


@dataclass(frozen=True)
class OperatorRequest:
    verb: str
    service: str
    region: str | None  # None for pause and resume
    by: str
    timeout: float
    allow_data_loss: bool

    def pauses(self, held: ServiceRecord | None) -> bool:
        """Fencing the writer is the operator's call: the fleet must neither lift it (it lifts
        self-fences) nor fail over meanwhile, until `failover resume`."""
        return (self.verb == "fence" and held is not None and held.writer == self.region
                and not held.paused)


def parse_request(topo: Topology, verb: str, args: dict[str, Any]) -> OperatorRequest:
    service = args.get("service")
    if not isinstance(service, str) or service not in topo.services:
        raise UserError(f"service: {service!r} is not a service of this fleet "
                        f"(known: {', '.join(topo.services)})")
    if verb not in PLAN_VERBS + RECORD_VERBS:
        raise UserError(f"unknown operator verb {verb!r}; use "
                        + ", ".join(RECORD_VERBS + PLAN_VERBS))
    region = args.get("region")
    if verb in PLAN_VERBS:
        members = [r.name for r in topo.service_regions(topo.services[service])]
        if not isinstance(region, str) or region not in members:
            raise UserError(f"region: {region!r} holds no copy of {service} "
                            f"(its regions: {', '.join(members)})")
    return OperatorRequest(verb, service, region if isinstance(region, str) else None,
                           str(args.get("by", "?")),
                           float(args.get("timeout") or DEFAULT_SWITCHOVER_TIMEOUT),
                           bool(args.get("allow_data_loss")))


def refusal(decision: Decision | None, coordination_problem: str | None) -> str | None:
    """Why this controller may not run an operator's plan now, or None. A controller cut off
    from the majority takes no command: its view of the fleet may be stale."""
    if decision is None:
        return "this controller has not decided yet (it started moments ago): try again"
    if not decision.has_quorum:
        return (f"{decision.me} hears {len(decision.heard)} controller(s), quorum "
                f"{decision.quorum}: a controller cut off from the majority takes no operator "
                "command; send it to one that hears the fleet")
    if coordination_problem is not None:
        return f"coordination: {coordination_problem}"
    return None


def operator_actions(request: OperatorRequest, db: ServiceDatabases
                     ) -> tuple[list[Action], dict[str, Any]]:
    """The actions of a verb and a summary for its answer; reads the databases (run it in a
    worker thread), changes nothing."""
    service, region = request.service, request.region
    assert region is not None  # parse_request gives every plan verb a region
    why = f"operator {request.verb} by {request.by}"
    if request.verb in ("fence", "unfence", "rejoin"):
        epoch = next_epoch(db) - 1  # the highest recorded: these verbs claim no new epoch
        if request.verb == "fence":
            return [FenceRegion(service, epoch, region, why, best_effort=False)], {}
        if request.verb == "unfence":
            return [UnfenceWriter(service, epoch, region, why)], {}
        return [RejoinRegion(service, epoch, region, why)], {}
    epoch = next_epoch(db)
    old = find_old_primary(db, region)
    if old is None:
        raise UserError(f"region: no primary of {service} is known to move away from")
    planned = request.verb == "switchover"
    others = tuple(r for r in db.regions if r not in (region, old))
    actions: list[Action] = [
        PromoteSubscriber(service, epoch, region, old, why,
                          switchover_timeout=request.timeout if planned else None,
                          allow_data_loss=request.allow_data_loss),
        SetDnsWriter(service, epoch, old, region, why),
    ]
    if others and not planned:  # a switchover re-points the others itself, from its drain point
        actions.append(RepointSubscribers(service, epoch, region, others, why))
    return actions, {"old_primary": old, "target": region}


def operator_answer(request: OperatorRequest, actions: list[Action], outcome: PlanOutcome,
                    summary: dict[str, Any]) -> dict[str, Any]:
    failed = [s for s in outcome.steps if s.outcome == "failed"]
    if failed or not outcome.ok:
        where = (f"stopped at {failed[0].name!r}: {failed[0].error}" if failed
                 else f"ended {outcome.outcome}")
        raise FailoverError(f"{request.verb} of {request.service} {where} (plan "
                            f"{outcome.plan_id}; `failover history` shows every step)")
    return {"service": request.service, "verb": request.verb, "region": request.region,
            "epoch": max(a.epoch for a in actions), "plan_id": outcome.plan_id,
            "outcome": outcome.outcome, **summary, "steps": [asdict(s) for s in outcome.steps]}
