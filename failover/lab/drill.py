"""`failover lab drill`: break the writer region under a client workload and measure.

The client does what an application with the record's TTL does: it resolves
the writer record through the lab's DNS (caching the answer for the TTL),
keeps one session, reconnects after any error, and writes numbered rows at a
steady rate, remembering every write the server acknowledged. Each round
injects one fault into the writer region, waits for recovery, heals, and
checks what users care about:

- detection: fault to the fleet's DOWN verdict (from the controllers' journals);
- RTO: fault to the first acknowledged write on the new writer, and the DNS flip;
- RPO: acknowledged writes missing on the new writer;
- duplicate keys after promotion, and failovers in rounds that should have none.

Beside it, clients pinned to every region (`failover.lab.writers`) write until the
fleet has settled after the heal, and the checker (`failover.lab.checker`) judges
what a DNS-following client cannot see: split-brain writes, acknowledged writes lost
(and not set aside by the rejoin), indeterminate writes, and how many regions accept
a write at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import psycopg
from psycopg import errors as pgerrors
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from failover.controller.client import send_operator
from failover.errors import FailoverError, UserError
from failover.lab import state as lab
from failover.lab.audit import DnsAgreement, back_in_readers, journals, plans_run_twice
from failover.lab.build import service_view, wait_healthy
from failover.lab.checker import CheckReport, SafetyWatch
from failover.lab.faults import fault, heal
from failover.lab.writers import WRITE_TIMEOUT, NotSent, Session, describe, paced
from failover.postgres.inspect import NodeStatus
from failover.topology import load_topology

# crash-partition: the writer's database crashes and the link between the next two
# regions is cut, so that two controllers may each think they execute the failover.
FAILOVER_KINDS = ("crash", "hang", "isolate", "db-partition", "crash-partition")
# writer-partition: the writer is cut off from one other region only. A blip: the writer's
# database unreachable from the other regions (db-partition) for that long, then healed.
BLIPS = {"blip-300ms": 0.3, "blip-800ms": 0.8}
QUIET_KINDS = ("controller-crash", "dns-down", "pause-controller", "writer-partition", *BLIPS)
# A supervisor restarting the writer's server may or may not outlast detection.
EITHER_KINDS = ("restart",)
PLANNED_KINDS = ("switchover",)  # an operator's move of the writer, not a fault
MOVING_KINDS = FAILOVER_KINDS + PLANNED_KINDS
KINDS = FAILOVER_KINDS + QUIET_KINDS + EITHER_KINDS + PLANNED_KINDS
Fault = tuple[str, str, str | None]  # (region, lab fault kind, peer)
RATE = 50.0  # writes per second
BASELINE = 2.0  # seconds of writes before the fault
AFTER_RECOVERY = 1.5
QUIET_WATCH = 6.0  # how long a fault that must not fail over is watched
RECOVERY_DEADLINE = 40.0
# After the heal, how long the fleet has to settle before every region is asked
# whether it accepts a write: a returning old writer must be fenced by then.
SETTLE = 20.0

Progress = Callable[[str], None]


@dataclass
class Ack:
    seq: int
    at: float
    address: str


@dataclass
class WriteError:
    seq: int
    at: float
    address: str | None
    sqlstate: str | None
    message: str


@dataclass
class WriteLog:
    acks: list[Ack] = field(default_factory=list)
    errors: list[WriteError] = field(default_factory=list)


class Client:
    """One application session that follows the writer record."""

    def __init__(self, dns_address: str, dns_port: int, record: str, dbname: str, user: str,
                 *, ttl: float, tls: dict[str, Any] | None = None) -> None:
        self.dns_address, self.dns_port = dns_address, dns_port
        self.record, self.dbname, self.user, self.ttl = record, dbname, user, ttl
        self._answer: tuple[str, float] | None = None  # address, expires at
        self.session = Session(dbname, user, timeout=WRITE_TIMEOUT, application_name="drill",
                               tls=tls)

    async def resolve(self) -> str | None:
        now = time.monotonic()
        if self._answer is not None and self._answer[1] > now:
            return self._answer[0]
        query = dns.message.make_query(self.record, dns.rdatatype.A)
        try:
            response = await dns.asyncquery.udp(query, self.dns_address, port=self.dns_port,
                                                timeout=0.3)
        except (dns.exception.DNSException, OSError):
            return self._answer[0] if self._answer else None  # stale beats nothing
        for rrset in response.answer:
            for rdata in rrset:
                self._answer = (rdata.to_text(), now + self.ttl)
                return self._answer[0]
        return None

    async def write(self, seq: int, round_no: int, log: WriteLog) -> None:
        address = await self.resolve()
        if address is None:
            log.errors.append(WriteError(seq, time.time(), None, None, "cannot resolve"))
            return

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("INSERT INTO drill_writes (seq, round) VALUES (%s, %s)",
                               (seq, round_no))

        try:
            await self.session.run(address, insert)
        except (NotSent, TimeoutError, psycopg.Error) as exc:
            sqlstate, message = describe(exc)
            log.errors.append(WriteError(seq, time.time(), address, sqlstate, message))
            return
        log.acks.append(Ack(seq, time.time(), address))

    async def close(self) -> None:
        await self.session.close()


async def _workload(client: Client, round_no: int, first_seq: int, stop: asyncio.Event,
                    log: WriteLog) -> None:
    await paced(lambda seq: client.write(seq, round_no, log), first_seq, RATE, stop)


async def _watch_dns(client: Client, old: str, stop: asyncio.Event) -> float | None:
    """When the writer record first answers something other than `old`."""
    probe = Client(client.dns_address, client.dns_port, client.record, client.dbname,
                   client.user, ttl=0)
    while not stop.is_set():
        answer = await probe.resolve()
        if answer is not None and answer != old:
            return time.time()
        await asyncio.sleep(0.05)
    return None


def _switchover(state: lab.LabState, key: bytes, old_writer: str) -> None:
    """Ask the acting controller to move the writer to the best other region."""
    target = max((r.name for r in state.regions if r.name != old_writer),
                 key=lambda name: lab.PRIORITIES[name])
    send_operator(state.controllers(), lambda: key, "switchover",
                  {"service": state.service.name, "region": target, "by": "drill"}, timeout=60,
                  tls=state.api_tls())


def _detection(journals: dict[str, list[dict[str, Any]]], writer: str,
               since: float) -> float | None:
    """The earliest DOWN verdict on `writer` after `since`, in any reachable journal."""
    times = [e["ts"] for entries in journals.values() for e in entries
             if e.get("kind") == "verdict" and e.get("target") == writer
             and e.get("verdict") == "DOWN"]
    return min(times) - since if times else None


@dataclass
class RoundResult:
    kind: str
    round: int
    old_writer: str
    new_writer: str | None
    failed_over: bool
    detection_s: float | None
    rto_s: float | None
    dns_flip_s: float | None
    acknowledged: int
    lost: int
    split_brain_writes: int
    duplicate_keys: int
    false_failover: bool
    errors: int
    ttl_s: int
    write_pause_s: float | None = None  # the longest gap between acknowledged writes
    # The checker's (pinned writers, every database; split_brain_writes is its figure
    # too). None in reports from before it: not measured.
    lost_acknowledged: int | None = None
    indeterminate: int | None = None
    writable_regions_after: int | None = None
    checker: dict[str, Any] | None = None  # its whole report
    # From the fault's end to the last moment DNS answered other than the fleet record.
    dns_converged_s: float | None = None
    dns_agrees_at_end: bool | None = None
    plans_run_twice: list[str] | None = None  # plans or epochs more than one controller ran
    # After a failover in a lab whose service rejoins automatically: whether the fleet had
    # the old writer serving as a subscriber again in time (None: manual rejoin, or none due).
    rejoined_by_fleet: bool | None = None
    # From the heal to the old writer back in the reader record (a rejoin by the fleet).
    rejoin_s: float | None = None


def _longest_gap(log: WriteLog, since: float) -> float | None:
    """The longest time without an acknowledged write, from the last one before `since`."""
    times = sorted(a.at for a in log.acks)
    before = [t for t in times if t <= since]
    after = [t for t in times if t > since]
    if not before or not after:
        return None
    points = [before[-1], *after]
    return max(b - a for a, b in itertools.pairwise(points))


def _expected_on_writer(log: WriteLog, old: str, new: str, first_new: float | None) -> set[int]:
    """Acknowledged writes the writer after the round must hold: all of them without a
    failover; with one, those of the new writer and those of the old before the new took
    its first write (later ones on the old writer are split-brain writes, counted apart)."""
    if old == new:
        return {a.seq for a in log.acks}
    return {a.seq for a in log.acks
            if a.address == new or (a.address == old and (first_new is None or a.at <= first_new))}


def _present(address: str, dbname: str, round_no: int, tls: dict[str, Any]) -> set[int]:
    with psycopg.connect(host=address, port=lab.PG_PORT, dbname=dbname, user=lab.SUPERUSER,
                         connect_timeout=3, autocommit=True, **tls) as conn:
        rows = conn.execute("SELECT seq FROM drill_writes WHERE round = %s", [round_no])
        return {row[0] for row in rows.fetchall()}


def run_round(lab_dir: Path, kind: str, round_no: int, progress: Progress, *,
              settle: float = SETTLE) -> RoundResult:
    """One round; a failed-over old writer is rejoined before it returns."""
    state = lab.load(lab_dir)
    topo = load_topology(Path(state.topology))
    secret = topo.fleet_key()
    key = secret.get_secret_value().encode() if secret else b""
    before = service_view(state)
    old_writer, old_epoch = before["writer"], before["epoch"]
    # A second failover within the cooldown is refused by design: wait it out.
    cooldown = topo.services[state.service.name].cooldown
    wait = (before.get("last_failover_at") or 0) + cooldown + 0.5 - time.time()
    if wait > 0:
        progress(f"round {round_no}: waiting {wait:.1f} s for the failover cooldown")
        time.sleep(wait)
    old_address = state.region(old_writer).address
    injected = [] if kind in PLANNED_KINDS else _faults(kind, old_writer,
                                                          [r.name for r in state.regions])
    client = Client(state.dns.address, state.dns.port, state.service.writer_record.rstrip("."),
                    state.service.database, state.service.app_role, ttl=state.service.ttl,
                    tls=state.pg_tls())
    log = WriteLog()

    async def drive() -> tuple[float, float | None]:
        stop, dns_stop = asyncio.Event(), asyncio.Event()
        writer = asyncio.create_task(_workload(client, round_no, round_no * 1_000_000, stop, log))
        await asyncio.sleep(BASELINE)
        t0 = time.time()
        dns_task = asyncio.create_task(_watch_dns(client, old_address, dns_stop))
        if kind in PLANNED_KINDS:
            switch = asyncio.create_task(asyncio.to_thread(_switchover, state, key, old_writer))
        else:
            for region, lab_kind, peer in injected:
                await asyncio.to_thread(fault, lab_dir, region, lab_kind, peer=peer)
        if kind in BLIPS:
            await asyncio.sleep(BLIPS[kind])
            for region, lab_kind, peer in injected:
                await asyncio.to_thread(heal, lab_dir, region, lab_kind, peer=peer)
        progress(f"round {round_no}: {kind} of the writer {old_writer}")
        deadline = time.monotonic() + (RECOVERY_DEADLINE if kind in MOVING_KINDS
                                       else QUIET_WATCH)
        while time.monotonic() < deadline:
            if kind in MOVING_KINDS and any(a.address != old_address and a.at > t0
                                            for a in log.acks):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(AFTER_RECOVERY)
        stop.set()
        dns_stop.set()
        await writer
        await client.close()
        if kind in PLANNED_KINDS:
            await switch
        return t0, await dns_task

    # The pinned writers run from before the fault until the fleet has settled after
    # the heal: a returning old writer that takes writes is what they are there to see.
    with SafetyWatch(lab_dir, round_no) as watch:
        t0, dns_flip = asyncio.run(drive())
        for region, lab_kind, peer in ([] if kind in BLIPS else injected):
            progress(f"round {round_no}: healing {lab_kind} of {region}")
            heal(lab_dir, region, lab_kind, peer=peer)
        healed_at = time.time()
        agreement = DnsAgreement(state)
        agreement.start()
        progress(f"round {round_no}: {settle:g} s to settle, then a write to every region")
        watch.finish(settle)
        dns = agreement.stop()
    if dns.last_disagreement is not None:
        progress(f"round {round_no}: DNS last disagreed with the fleet record "
                 f"{dns.converged_s:.2f} s after the fault's end: {dns.last_disagreement}")
    after = service_view(lab.load(lab_dir))
    new_writer = after["writer"]
    failed_over = new_writer != old_writer
    new_address = state.region(new_writer).address
    first_new = min((a.at for a in log.acks if a.address == new_address and a.at > t0),
                    default=None)
    present = _present(new_address, state.service.database, round_no, state.pg_tls())
    lost = len(_expected_on_writer(log, old_address, new_address, first_new) - present)
    by_fleet = None
    if failed_over and kind not in PLANNED_KINDS:
        by_fleet = back_in_service(lab_dir, old_writer, new_writer, f"round-{round_no}", progress)
    check = watch.report()  # after the rejoin: it lists what the old writer set aside
    progress(f"round {round_no}: {_checked(check)}")
    journal = journals(state, key, t0 - BASELINE)
    twice = plans_run_twice(journal)
    for line in twice:
        progress(f"round {round_no}: run twice: {line}")
    return RoundResult(
        kind=kind, round=round_no, old_writer=old_writer,
        new_writer=new_writer if failed_over else None, failed_over=failed_over,
        detection_s=_detection(journal, old_writer, t0) if failed_over else None,
        rto_s=(first_new - t0) if first_new is not None and failed_over else None,
        dns_flip_s=(dns_flip - t0) if dns_flip is not None else None,
        acknowledged=len(log.acks), lost=lost, split_brain_writes=check.split_brain_writes,
        duplicate_keys=sum(1 for e in log.errors if e.sqlstate == pgerrors.UniqueViolation.sqlstate),
        false_failover=(failed_over and kind in QUIET_KINDS)
        or (kind not in PLANNED_KINDS and not failed_over and after["epoch"] != old_epoch),
        errors=len(log.errors), ttl_s=state.service.ttl,
        write_pause_s=_longest_gap(log, t0),
        lost_acknowledged=check.lost_acknowledged, indeterminate=check.indeterminate,
        writable_regions_after=check.writable_regions_after, checker=check.to_dict(),
        dns_converged_s=dns.converged_s, dns_agrees_at_end=dns.agrees_at_end,
        plans_run_twice=twice, rejoined_by_fleet=by_fleet,
        rejoin_s=back_in_readers(journal, old_writer, healed_at) if by_fleet else None,
    )


def _faults(kind: str, writer: str, regions: list[str]) -> list[Fault]:
    """The lab faults a drill kind injects, in order (heal undoes each)."""
    others = sorted(region for region in regions if region != writer)
    if kind == "crash-partition":
        return [(writer, "crash", None), (others[0], "partition", others[1])]
    if kind == "writer-partition":
        return [(writer, "partition", others[0])]
    if kind in BLIPS:
        return [(writer, "db-partition", None)]
    return [(writer, kind, None)]


def _checked(check: CheckReport) -> str:
    lost = "unknown (no writer's database read)" if check.lost_acknowledged is None \
        else str(check.lost_acknowledged)
    return (f"checker: {check.split_brain_writes} split-brain writes, lost {lost} "
            f"({check.reconciled} more set aside in reconciliation files), {check.indeterminate} "
            f"indeterminate, {check.duplicates} duplicates; writable at the end: "
            f"{', '.join(check.writable_regions) or 'none'}")


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p99": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p99": p99}


def _total(values: list[int | None]) -> int | None:
    """None when any round was not measured: a sum of the rest would read as a figure."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _range(values: list[int | None]) -> dict[str, int | None]:
    known = [v for v in values if v is not None]
    return {"min": min(known, default=None), "max": max(known, default=None)}


def summarise(results: list[RoundResult]) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in dict.fromkeys(r.kind for r in results):
        rounds = [r for r in results if r.kind == kind]
        kinds[kind] = {
            "rounds": len(rounds),
            "failovers": sum(r.failed_over for r in rounds),
            "detection_s": _stats([r.detection_s for r in rounds if r.detection_s is not None]),
            "rto_s": _stats([r.rto_s for r in rounds if r.rto_s is not None]),
            "dns_flip_s": _stats([r.dns_flip_s for r in rounds if r.dns_flip_s is not None]),
            "write_pause_s": _stats([r.write_pause_s for r in rounds
                                     if r.write_pause_s is not None]),
            "ttl_s": rounds[0].ttl_s,
            "acknowledged": sum(r.acknowledged for r in rounds),
            "lost": sum(r.lost for r in rounds),
            "split_brain_writes": sum(r.split_brain_writes for r in rounds),
            "duplicate_keys": sum(r.duplicate_keys for r in rounds),
            "false_failovers": sum(r.false_failover for r in rounds),
            "lost_acknowledged": _total([r.lost_acknowledged for r in rounds]),
            "indeterminate": _total([r.indeterminate for r in rounds]),
            "writable_regions_after": _range([r.writable_regions_after for r in rounds]),
            "dns_converged_s": _stats([r.dns_converged_s for r in rounds
                                       if r.dns_converged_s is not None]),
            "dns_disagreeing_at_end": sum(r.dns_agrees_at_end is False for r in rounds),
            "plans_run_twice": _total([None if r.plans_run_twice is None
                                       else len(r.plans_run_twice) for r in rounds]),
            "rejoined_by_fleet": sum(r.rejoined_by_fleet is True for r in rounds),
            "not_rejoined_by_fleet": sum(r.rejoined_by_fleet is False for r in rounds),
            "rejoin_s": _stats([r.rejoin_s for r in rounds if r.rejoin_s is not None]),
            "reconciled": _total([None if r.checker is None else r.checker["reconciled"]
                                  for r in rounds]),
            "reconciled_on_writer": _total([
                None if r.checker is None else r.checker.get("reconciled_on_writer")
                for r in rounds]),
        }
    return {"kinds": kinds, "rounds": [asdict(r) for r in results]}


def drill(lab_dir: Path, kinds: list[str], rounds: int, progress: Progress,
          after_round: Callable[[RoundResult], None] | None = None, *,
          settle: float = SETTLE) -> dict[str, Any]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UserError(f"--kind: {', '.join(unknown)}: use {', '.join(KINDS)}")
    if rounds < 1:
        raise UserError("--rounds: at least 1")
    if not settle > 0:  # NaN too
        raise UserError("--settle: a positive number of seconds (20 is the safety bar)")
    results = []
    number = int(time.time()) % 100_000 * 100  # distinct rounds across drills
    for kind in kinds:
        for _ in range(rounds):
            number += 1
            wait_healthy(lab.load(lab_dir), 90.0, progress)
            result = run_round(lab_dir, kind, number, progress, settle=settle)
            results.append(result)
            if after_round is not None:
                after_round(result)
    return summarise(results)


def rejoin(lab_dir: Path, region: str, writer: str, label: str, progress: Progress) -> None:
    """Make `region` (a failed-over old writer) a serving subscriber of `writer` again.

    What it had that the writer lacks goes to `reconciliation/<label>-<region>.json`.
    """
    from failover.postgres.connection import ServiceDatabases
    from failover.postgres.fence import unfence_steps
    from failover.postgres.rejoin import rejoin_steps
    from failover.postgres.steps import run_steps

    state = lab.load(lab_dir)
    topo = load_topology(Path(state.topology))
    progress(f"rejoining {region} as a subscriber of {writer}")
    lost_file = lab_dir / "reconciliation" / f"{label}-{region}.json"
    lost_file.parent.mkdir(parents=True, exist_ok=True)
    # A controller that was cut off may still fence its own region once more as it comes
    # back (ending sessions, ours too): the steps are idempotent, so run them again.
    for attempt in Retrying(stop=stop_after_attempt(4), wait=wait_fixed(1), reraise=True,
                            retry=retry_if_exception_type(FailoverError)):
        with attempt, ServiceDatabases.from_topology(topo, state.service.name).opened() as db:
            run_steps(rejoin_steps(db, region, lost_file=lost_file).steps)
            # The drill reconciles nothing by hand: the rejoined subscriber may serve again.
            run_steps(unfence_steps(db, region))


AUTO_REJOIN_DEADLINE = 60.0  # seconds after the settle for the fleet's own rejoin


def _subscribed(node: NodeStatus, writer_address: str) -> bool:
    """An unfenced subscriber of the writer."""
    return (node.role == "subscriber" and not node.fenced
            and (node.publisher or "").startswith(f"{writer_address}:"))


def serving_subscriber(lab_dir: Path, region: str, writer: str) -> bool:
    from failover.postgres.connection import ServiceDatabases
    from failover.postgres.inspect import inspect_node

    state = lab.load(lab_dir)
    topo = load_topology(Path(state.topology))
    try:
        with ServiceDatabases.from_topology(topo, state.service.name).opened() as db:
            node = inspect_node(db.conn(region), state.service.name)
    except (FailoverError, psycopg.Error):
        return False
    # Done with its initial copy: it applies the writer's heartbeat, so its lag is known.
    return _subscribed(node, state.region(writer).address) and node.lag_seconds is not None


def back_in_service(lab_dir: Path, region: str, writer: str, label: str,
                    progress: Progress) -> bool | None:
    """Have `region`, a failed-over old writer, serve as a subscriber of `writer` again.

    When the lab's service rejoins automatically, that is the fleet's job: wait for it
    (bounded) and say whether it happened; if not, rejoin as an operator would, so that the
    next round starts whole. Otherwise the operator's rejoin (None)."""
    if lab.load(lab_dir).service.rejoin != "auto":
        rejoin(lab_dir, region, writer, label, progress)
        return None
    deadline = time.monotonic() + AUTO_REJOIN_DEADLINE
    while time.monotonic() < deadline:
        if serving_subscriber(lab_dir, region, writer):
            return True
        time.sleep(0.5)
    progress(f"the fleet did not rejoin {region} within {AUTO_REJOIN_DEADLINE:g} s: "
             "rejoining it as an operator would")
    rejoin(lab_dir, region, writer, label, progress)
    return False


def rejoin_strays(lab_dir: Path, progress: Progress) -> list[str]:
    """Rejoin every region that is not a serving subscriber of the writer (an interrupted round)."""
    from failover.postgres.connection import ServiceDatabases
    from failover.postgres.inspect import inspect_node

    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    writer_address = state.region(writer).address
    topo = load_topology(Path(state.topology))
    strays = []
    with ServiceDatabases.from_topology(topo, state.service.name).opened() as db:
        for region in state.regions:
            if region.name == writer:
                continue
            node = inspect_node(db.conn(region.name), state.service.name)
            if not _subscribed(node, writer_address):
                strays.append(region.name)
    for region_name in strays:
        back_in_service(lab_dir, region_name, writer, f"stray-{int(time.time())}", progress)
    return strays
