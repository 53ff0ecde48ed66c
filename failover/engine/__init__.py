"""The pure decision engine: observations -> verdicts -> plan.

No I/O, no clock, no randomness: callers pass `now` and everything else.
"""

from failover.engine.actions import (
    Action,
    AddReader,
    ConfirmWriter,
    FenceRegion,
    NoOp,
    Plan,
    PromoteSubscriber,
    RejoinRegion,
    RemoveReader,
    RepointSubscribers,
    SetDnsWriter,
    SetSyncStandbys,
    UnfenceWriter,
    WriterClaim,
    changed_databases,
)
from failover.engine.apply import StaleEpoch, apply_plan
from failover.engine.decision import Decision, decide
from failover.engine.durability import Durability, DurabilityState, isolation_loss_bound
from failover.engine.model import (
    AfterPlan,
    ClusterState,
    Health,
    Observation,
    Policy,
    RegionPolicy,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    SyncStandbys,
    majority,
)
from failover.engine.quorum import RegionVerdict, Verdict, Vote, choose_executor

__all__ = [
    "Action",
    "AddReader",
    "AfterPlan",
    "ClusterState",
    "ConfirmWriter",
    "Decision",
    "Durability",
    "DurabilityState",
    "FenceRegion",
    "Health",
    "NoOp",
    "Observation",
    "Plan",
    "Policy",
    "PromoteSubscriber",
    "RegionPolicy",
    "RegionVerdict",
    "RejoinRegion",
    "RemoveReader",
    "Replication",
    "RepointSubscribers",
    "Role",
    "ServicePolicy",
    "ServiceState",
    "SetDnsWriter",
    "SetSyncStandbys",
    "StaleEpoch",
    "SyncStandbys",
    "UnfenceWriter",
    "Verdict",
    "Vote",
    "WriterClaim",
    "apply_plan",
    "changed_databases",
    "choose_executor",
    "decide",
    "isolation_loss_bound",
    "majority",
]
