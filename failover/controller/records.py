"""The fleet's record of each service, from what the fleet holds and what the databases say: pure.

Which region writes is state, not configuration: a service the fleet has no
record of yet gets one from the databases (the unfenced primary with the highest
epoch), and a database that holds a higher epoch than the record wins, because
the epoch is the fencing token (an operator promoted with `--direct`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from failover.coordination.base import ServiceRecord, cluster_state
from failover.engine import (
    AddReader,
    ClusterState,
    ConfirmWriter,
    Observation,
    Plan,
    RemoveReader,
    Role,
    SetDnsWriter,
    WriterClaim,
    apply_plan,
)


def planning_state(records: Mapping[str, ServiceRecord], claimed: Mapping[str, int]
                   ) -> ClusterState:
    """The state the engine plans from: each record, its epoch raised to the highest epoch
    known to be claimed, so that a promotion after a claimant stalled (it holds its epoch
    for good) claims the next one instead of being refused for ever."""
    return ClusterState(tuple(
        replace(state, epoch=max(state.epoch, claimed.get(state.service, 0)))
        for state in cluster_state(records.values()).services))


def discover_writer(observations: Iterable[Observation], service: str,
                    regions: Iterable[str]) -> ServiceRecord | None:
    """The unfenced primary with the highest epoch that any observer saw, if any."""
    best: tuple[int, str] | None = None
    for observation in observations:
        replication = observation.by_service.get(service)
        if (replication is not None and replication.role is Role.PRIMARY
                and not replication.fenced and replication.epoch is not None):
            candidate = (replication.epoch, observation.target)
            if best is None or candidate > best:
                best = candidate
    if best is None:
        return None
    return ServiceRecord(service, best[1], best[0], readers=tuple(sorted(regions)))


def adopt(held: ServiceRecord | None, discovered: ServiceRecord | None) -> ServiceRecord | None:
    """The record to adopt from the databases instead of `held`, or None to keep `held`.

    What the operator set on the record (pause, readers, last failover) survives adoption.
    """
    if discovered is None or (held is not None and discovered.epoch <= held.epoch):
        return None
    if held is None:
        return discovered
    return replace(discovered, paused=held.paused, readers=held.readers,
                   last_failover_at=held.last_failover_at)


def with_discovered(held: Mapping[str, ServiceRecord], observations: list[Observation],
                    members: Mapping[str, Iterable[str]]) -> tuple[dict[str, ServiceRecord],
                                                                   list[ServiceRecord]]:
    """Every service's record after adoption, and the adopted ones (to share with the fleet)."""
    records = dict(held)
    adopted = []
    for service, regions in members.items():
        record = adopt(held.get(service), discover_writer(observations, service, regions))
        if record is not None:
            records[service] = record
            adopted.append(record)
    return records, adopted


def to_store(held: ServiceRecord | None, wanted: ServiceRecord) -> ServiceRecord | None:
    """`wanted` with the version to store it under, or None when the fleet holds it or newer."""
    if held is not None and replace(held, version=0) == replace(wanted, version=0):
        return None
    if held is not None and held.epoch > wanted.epoch:
        return None  # someone moved on past this plan
    version = held.version + 1 if held is not None and held.epoch == wanted.epoch else 0
    return replace(wanted, version=version)


def after_plan(record: ServiceRecord, done: Plan) -> ServiceRecord:
    """The record a plan that ended ok leaves behind."""
    state = apply_plan(cluster_state([record]), done).services[0]
    return ServiceRecord.from_state(state, 0)


def writer_record_repair(record: ServiceRecord, seen: frozenset[str] | None,
                         addresses: Mapping[str, str]) -> SetDnsWriter | None:
    """The move that makes the writer record say what the fleet records, or None when it does.
    Level-triggered: whatever left DNS behind (an executor killed between recording the
    writer and moving DNS, a hand edit), the leader puts it right."""
    if record.writer is None or seen == frozenset({addresses[record.writer]}):
        return None
    pointed = sorted(region for region, address in addresses.items() if address in (seen or ()))
    shown = ", ".join(sorted(seen)) if seen else "nothing"
    return SetDnsWriter(record.service, record.epoch, pointed[0] if pointed else record.writer,
                        record.writer, f"the writer record points at {shown} but the fleet "
                        f"records {record.writer} at epoch {record.epoch}: repair it")


def reader_record_repairs(record: ServiceRecord, held: frozenset[str],
                          addresses: Mapping[str, str]) -> list[AddReader | RemoveReader]:
    """The moves that make the reader record hold exactly the addresses of the regions the
    fleet records as readers (none when it does). An address of no region is left alone:
    there is no region to name, and it is not failover's to remove."""
    shown = ", ".join(sorted(held)) or "nothing"
    why = (f"the reader record holds {shown} but the fleet records readers "
           f"{', '.join(sorted(record.readers)) or 'none'}: repair it")
    moves: list[AddReader | RemoveReader] = [
        AddReader(record.service, record.epoch, region, why)
        for region in sorted(record.readers) if addresses[region] not in held]
    moves += [RemoveReader(record.service, record.epoch, region, why)
              for region, address in sorted(addresses.items())
              if address in held and region not in record.readers]
    return moves


def promoted(held: ServiceRecord | None, action: WriterClaim,
             decided_at: float) -> ServiceRecord | None:
    """The record once `action`'s region is writable at its epoch: recorded at once, before
    DNS moves. None for a confirmation of a writer the fleet no longer records (a promotion
    finished meanwhile): the confirmation must not undo it."""
    if isinstance(action, ConfirmWriter):
        if held is None or held.writer != action.region:
            return None
        return replace(held, epoch=action.epoch)
    return ServiceRecord(action.service, action.region, action.epoch, decided_at,
                         held.paused if held is not None else False,
                         held.readers if held is not None else ())
