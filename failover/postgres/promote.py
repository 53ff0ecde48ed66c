"""Unplanned promotion: make subscriber S the service's primary, then re-point the others.

The step order is what makes it safe: the applied position is recorded
before the subscription (and the origin holding it) is dropped; sequences move
past anything the dead primary could have handed out; the publication and
one slot per other subscriber exist before S's first write, so re-pointed
subscribers miss nothing; the old primary's lease is revoked at the new epoch;
S claims the epoch (once: a second claimant at the same epoch is refused) and
gets its first lease as it becomes writable.
Every step checks before it acts, so rerunning the list after a crash
anywhere ends in the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import LiteralString

from psycopg import sql

from failover.engine.durability import needed_reads
from failover.engine.lsn import format_lsn
from failover.engine.model import SyncStandbys
from failover.errors import FailoverError, SafetyRefusal
from failover.postgres.catchup import marker_wait_shown, wait_for_marker, write_marker
from failover.postgres.connection import ServiceDatabases, same_server
from failover.postgres.fence import (
    CLIENT_SESSIONS,
    fence_steps,
    set_app_logins,
    set_database_read_only,
    terminate_sessions,
    terminate_sql,
)
from failover.postgres.inspect import NodeStatus, inspect_node
from failover.postgres.lease import DEFAULT_LEASE_TTL, lease_text, renew_lease
from failover.postgres.names import slot_name, standby_name, subscription_name
from failover.postgres.replication import (
    create_subscription_statement,
    drop_subscription,
    drop_subscription_statements,
    ensure_publication,
    ensure_publication_sql,
    ensure_slot,
    ensure_slot_sql,
    slot_exists,
    subscription_conninfo,
    truncate_published,
)
from failover.postgres.state import check_claim, check_epoch, record_handover, record_role
from failover.postgres.steps import SqlStep, WriterChange
from failover.postgres.sync import read_sync_standbys
from failover.postgres.waiting import wait_for

DEFAULT_SEQUENCE_GAP = 1000

_ORPHAN_PREPARED = ("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pg\\_gid\\_%' "
                    "AND database = current_database()")
_STALE_SESSIONS = (
    f"{CLIENT_SESSIONS} AND backend_start < "
    "(SELECT writable_since FROM failover.node_state WHERE service = %s)")
_STOP_APPLY_WORKERS = (
    "SELECT pg_terminate_backend(w.pid) FROM pg_stat_subscription w "
    "JOIN pg_subscription s ON s.oid = w.subid WHERE s.subname = %s AND w.pid IS NOT NULL "
    "AND NOT s.subenabled")


@dataclass(frozen=True)
class PromotionSteps(WriterChange):
    service: str
    target: str
    old_primary: str | None
    subscribers: tuple[str, ...]  # re-pointed to the target
    epoch: int


def next_epoch(db: ServiceDatabases) -> int:
    """One above the highest epoch any reachable region recorded."""
    highest = 0
    for region in db.regions:
        conn = db.try_conn(region)
        if conn is not None:
            row = conn.execute("SELECT coalesce(max(epoch), 0) FROM failover.node_state "
                               "WHERE service = %s", [db.service.name]).fetchone()
            highest = max(highest, int(row[0]) if row else 0)
    return highest + 1


def find_old_primary(db: ServiceDatabases, target: str) -> str | None:
    """The region S replicated from: its subscription's publisher, or what it recorded."""
    conn = db.conn(target)
    region = db.region_of(subscription_conninfo(conn, db.service.name))
    if region is not None:
        return region
    status = inspect_node(conn, db.service.name)
    if status.handover_from is not None:
        return status.handover_from
    for other in db.regions:
        other_conn = db.try_conn(other) if other != target else None
        if other_conn is not None and inspect_node(other_conn, db.service.name).role == "primary":
            return other
    return None


# ------------------------------------------------------------ steps shared with switchover


def claim_check_step(db: ServiceDatabases, target: str, epoch: int) -> SqlStep:
    """Refuse early, before anything changed, an epoch that `target` may not claim."""
    service = db.service.name

    def run() -> str:
        recorded = check_claim(db.conn(target), service, epoch, target, region=target)
        return f"{target} may claim epoch {epoch} (recorded {recorded})"

    return SqlStep("check the epoch", target,
                (f"SELECT failover.check_claim('{service}', {epoch}, '{target}')",), run)


def freeze_subscription(db: ServiceDatabases, region: str, old_primary: str | None,
                        epoch: int) -> int | None:
    """Stop applying and record the applied position (once per epoch); returns it.

    The position is read only after the apply worker has exited, so that it is
    final: a worker still applying would leave the record behind the data.
    """
    conn = db.conn(region)
    service = db.service.name
    status = inspect_node(conn, service)
    if status.handover_epoch == epoch:
        return status.handover_lsn
    if status.subscription_present:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(
            sql.Identifier(subscription_name(service))))
        # A disabled worker notices only at its next wake-up (up to 1 s on 15);
        # ending it now is safe: a transaction it had not committed is not applied.
        conn.execute(_STOP_APPLY_WORKERS, [subscription_name(service)])
        wait_for(lambda: not inspect_node(conn, service).worker_running,
                 timeout=db.statement_timeout, what=f"the apply worker on {region} to stop")
        status = inspect_node(conn, service)
    record_handover(conn, service, lsn=format_lsn(status.remote_lsn), source=old_primary,
                    epoch=epoch)
    return status.remote_lsn


def detach_step(db: ServiceDatabases, target: str, old_primary: str | None, epoch: int) -> SqlStep:
    def run() -> str:
        applied = freeze_subscription(db, target, old_primary, epoch)
        dropped = drop_subscription(db.conn(target), db.service.name)
        return f"applied up to {format_lsn(applied)}; {dropped}"

    disable, *drop = (s.as_string() for s in drop_subscription_statements(db.service.name))
    return SqlStep("record the applied position and drop the subscription", target, (
        disable,
        f"{_STOP_APPLY_WORKERS % repr(subscription_name(db.service.name))}  -- wait till it ends",
        f"UPDATE failover.node_state SET handover_lsn = <remote_lsn>, handover_epoch = {epoch} "
        f"WHERE service = '{db.service.name}'", *drop), run)


def rollback_prepared_step(db: ServiceDatabases, target: str) -> SqlStep:
    def run() -> str:
        conn = db.conn(target)
        gids = [str(row[0]) for row in conn.execute(_ORPHAN_PREPARED).fetchall()]
        for gid in gids:
            conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        return f"rolled back {len(gids)} orphan prepared transactions"

    return SqlStep("roll back orphan prepared transactions", target,
                (_ORPHAN_PREPARED, "ROLLBACK PREPARED '<each gid>'"), run)


def publication_step(db: ServiceDatabases, target: str) -> SqlStep:
    return SqlStep("create the publication", target, (ensure_publication_sql(db.service.name),),
                lambda: ensure_publication(db.conn(target), db.service.name))


def slots_step(db: ServiceDatabases, target: str, subscribers: tuple[str, ...]) -> SqlStep:
    slots = [slot_name(db.service.name, region) for region in subscribers]

    def run() -> str:
        conn = db.conn(target)
        return "; ".join(ensure_slot(conn, slot) for slot in slots) or "no other subscriber"

    return SqlStep("create one slot per other subscriber", target,
                tuple(ensure_slot_sql(slot) for slot in slots), run)


def take_writer_role_step(db: ServiceDatabases, target: str, epoch: int, *,
                          lease_ttl: float = DEFAULT_LEASE_TTL,
                          lease_until: Callable[[], float] | None = None) -> SqlStep:
    """Claim `epoch` for `target` (refused if another claimant took it there), make it the
    primary and grant it its first lease, so that it takes writes before the controller's
    next renewal."""
    service = db.service.name
    dbname = db.endpoint(target).dbname
    bookkeeping: tuple[LiteralString, ...] = (
        # A rerun keeps the first writable_since, so that it does not terminate
        # sessions that were opened writable after the first run.
        "UPDATE failover.node_state SET role = 'primary', epoch = %(epoch)s, "
        "claimed_epoch = %(epoch)s, claimed_by = %(region)s, "
        "fenced = false, writable_since = CASE WHEN role = 'primary' AND epoch = %(epoch)s "
        "AND NOT fenced THEN writable_since ELSE clock_timestamp() END, "
        "updated_at = clock_timestamp() WHERE service = %(service)s",
        "INSERT INTO failover.heartbeat (service, region, epoch, beat_at) "
        "VALUES (%(service)s, %(region)s, %(epoch)s, clock_timestamp()) ON CONFLICT (service) "
        "DO UPDATE SET region = excluded.region, epoch = excluded.epoch, beat_at = excluded.beat_at",
    )
    params = {"service": service, "region": target, "epoch": epoch}

    def run() -> str:
        conn = db.conn(target)
        # One transaction: the claim, the role, writability and the lease change together.
        with conn.transaction():
            check_claim(conn, service, epoch, target, region=target)
            for statement in bookkeeping:
                conn.execute(statement, params)
            set_app_logins(conn, db.service.app_roles, True)
            set_database_read_only(conn, dbname, False)
            # Last: it bounds the rest of the transaction by the lease call's timeout.
            lease = renew_lease(conn, service, target, epoch, lease_ttl,
                                not_after=lease_until() if lease_until is not None else None)
        return f"primary at epoch {epoch}, writable; {lease_text(lease)}"

    shown = {k: repr(v) for k, v in params.items()}
    return SqlStep(f"bump the epoch to {epoch} and make the database writable", target,
                (f"SELECT failover.check_claim('{service}', {epoch}, '{target}')",
                 *(s % shown for s in bookkeeping),
                 *(f'ALTER ROLE "{role}" LOGIN' for role in db.service.app_roles),
                 f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only',
                 f"SELECT failover.renew_lease('{service}', '{target}', {epoch}, {lease_ttl:g})"),
                run)


def terminate_stale_step(db: ServiceDatabases, target: str) -> SqlStep:
    def run() -> str:
        count = terminate_sessions(db.conn(target), _STALE_SESSIONS, [db.service.name])
        return f"terminated {count} read-only sessions"

    return SqlStep("terminate sessions opened while read-only", target,
                (terminate_sql(_STALE_SESSIONS % f"'{db.service.name}'"),), run)


def repoint_step(db: ServiceDatabases, region: str, target: str, old_primary: str | None,
                 epoch: int) -> SqlStep:
    """Subscribe `region` to the new primary: clean hand-over if it applied exactly what the
    target applied, else a full resync (TRUNCATE + copy), never a silent gap."""
    service = db.service.name
    slot = slot_name(service, region)
    target_endpoint = db.endpoint(target)

    def run() -> str:
        conn = db.try_conn(region)
        if conn is None:
            return (f"unreachable: skipped; rerun this action with --epoch {epoch} "
                    "when it is back")
        check_epoch(conn, service, epoch, region=region)
        current = subscription_conninfo(conn, service)
        if current is not None and same_server(current, target_endpoint):
            record_role(conn, service, "subscriber", epoch)
            return f"already subscribed to {target}"
        if inspect_node(conn, service).role == "primary":
            return f"was a primary: left fenced for `failover rejoin {region}`"
        applied = freeze_subscription(db, region, old_primary, epoch)
        target_conn = db.conn(target)
        target_applied = inspect_node(target_conn, service).handover_lsn
        clean = (applied is not None and applied == target_applied
                 and slot_exists(target_conn, slot))
        drop_subscription(conn, service)
        if not clean:
            ensure_slot(target_conn, slot)
            truncate_published(conn)
        conn.execute(create_subscription_statement(service, region, target_endpoint,
                                                   db.endpoint(region), copy_data=not clean))
        record_role(conn, service, "subscriber", epoch)
        if clean:
            return f"clean hand-over at {format_lsn(applied)}"
        return (f"full resync: applied {format_lsn(applied)} here, "
                f"{format_lsn(target_applied)} on {target}")

    return SqlStep(f"re-point {region} to {target}", region, (
        f"SELECT failover.check_epoch('{service}', {epoch})",
        *(s.as_string() for s in drop_subscription_statements(service)),
        f"-- if {region} applied exactly what {target} applied and slot {slot} exists:",
        create_subscription_statement(service, region, target_endpoint, db.endpoint(region),
                                      copy_data=False, shown=True).as_string(),
        "-- else: create the slot on the target if missing, then",
        "TRUNCATE <every table of failover.publishable_tables()>",
        create_subscription_statement(service, region, target_endpoint, db.endpoint(region),
                                      copy_data=True, shown=True).as_string(),
    ), run)


# ------------------------------------------------------------ promotion


def _lag_gate_step(db: ServiceDatabases, target: str, old_primary: str | None, epoch: int,
                   allow_data_loss: bool) -> SqlStep:
    service = db.service

    def refusal(status: NodeStatus, lag_bytes: int | None) -> str | None:
        seconds, size = status.lag_seconds, lag_bytes
        problems = []
        if seconds is None or seconds > service.max_lag_seconds:
            problems.append(f"{'unknown' if seconds is None else f'{seconds:.1f}'} s behind "
                            f"(max_lag_seconds {service.max_lag_seconds:g})")
        if size is None or size > service.max_lag_bytes:
            problems.append(f"{'unknown' if size is None else size} bytes behind "
                            f"(max_lag_bytes {service.max_lag_bytes})")
        return "; ".join(problems) or None

    def run() -> str:
        conn = db.conn(target)
        status = inspect_node(conn, service.name)
        if status.handover_epoch == epoch:
            return "already detached by this promotion"
        if not status.subscription_present:
            raise SafetyRefusal(f"region {target} has no subscription for service "
                                f"{service.name!r}: it holds no replicated copy to promote")
        lag_bytes = status.lag_bytes
        publisher = db.try_conn(old_primary) if old_primary is not None else None
        if publisher is not None and status.remote_lsn is not None:
            # The publisher lives: its WAL end is exact where our memory is not.
            row = publisher.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                                    [format_lsn(status.remote_lsn)]).fetchone()
            lag_bytes = max(0, int(row[0])) if row else lag_bytes
        problem = refusal(status, lag_bytes)
        if problem is not None and not allow_data_loss:
            raise SafetyRefusal(
                f"region {target} is {problem} for service {service.name!r}: promoting it would "
                "lose the transactions it has not applied; pick a less lagging region, wait, or "
                "pass --allow-data-loss")
        figures = f"{status.lag_seconds} s, {lag_bytes} bytes behind"
        accepted = f" (accepted with --allow-data-loss: {problem})" if problem else ""
        return f"applied up to {format_lsn(status.remote_lsn)}, {figures}{accepted}"

    return SqlStep("check the lag", target, (
        f"SELECT * FROM failover.node_status('{service.name}', '{subscription_name(service.name)}')"
        f"  -- refuse above {service.max_lag_seconds:g} s or {service.max_lag_bytes} bytes",), run)


def _waited_for(db: ServiceDatabases, old_primary: str | None,
                known: SyncStandbys | None) -> tuple[SyncStandbys, str] | None:
    """What the old writer's commits waited for, and who says so: its own setting when it
    answers (unless set by hand, for standbys that are not the service's subscriptions);
    else what the fleet last saw (`known`); else, for a sync service, every other region at
    sync_count, which needs at least as many positions as any subset of them."""
    names = {region: standby_name(db.service.name, region) for region in db.regions}
    old = db.try_conn(old_primary) if old_primary is not None else None
    live = read_sync_standbys(old) if old is not None else None
    if live is not None and set(live.names) <= set(names.values()):
        return live, f"{old_primary} says"
    if known is not None:
        return known, "as the fleet last saw"
    if db.service.durability == "sync":
        others = sorted(name for region, name in names.items() if region != old_primary)
        return SyncStandbys(tuple(others), db.service.sync_count), "assumed: every other region"
    return None


def _acknowledged_gate_step(db: ServiceDatabases, target: str, old_primary: str | None,
                            epoch: int, *, known: SyncStandbys | None,
                            allow_data_loss: bool) -> SqlStep:
    """Refuse to promote `target` unless it holds every commit the old writer acknowledged:
    with `ANY k` of n named standbys, the applied positions of n - k + 1 of them include one
    that had each such commit, so `target` must have applied at least as far as every
    reachable subscriber, and at least n - k + 1 named ones must have been read."""
    service = db.service.name

    def run() -> str:
        if inspect_node(db.conn(target), service).handover_epoch == epoch:
            return "already detached by this promotion"
        found = _waited_for(db, old_primary, known)
        if found is None or not found[0].waits:
            return "the old writer's commits waited for no standby: nothing to prove"
        waited, source = found
        applied: dict[str, int] = {}
        for region in db.regions:
            conn = db.try_conn(region) if region != old_primary else None
            position = inspect_node(conn, service).remote_lsn if conn is not None else None
            if position is not None:
                applied[region] = position
        named = sorted(r for r in applied if standby_name(service, r) in waited.names)
        needed = needed_reads(waited)
        highest = max(applied.values(), default=None)
        problems = []
        if len(named) < needed:
            problems.append(f"read {len(named)} of the {len(waited.names)} synchronous standbys "
                            f"({', '.join(named) or 'none'}), {needed} needed")
        if applied.get(target) is None or (highest is not None and applied[target] < highest):
            ahead = ", ".join(f"{r} {format_lsn(lsn)}" for r, lsn in sorted(applied.items())
                              if lsn == highest)
            own = format_lsn(applied[target]) if target in applied else "an unknown position"
            problems.append(f"{target} applied {own}, less than {ahead}")
        figures = (f"commits waited for {waited.describe()} ({source}); applied: "
                   + ", ".join(f"{r} {format_lsn(lsn)}" for r, lsn in sorted(applied.items())))
        if problems and not allow_data_loss:
            raise SafetyRefusal(
                f"region {target} is not proven to hold every commit the old writer "
                f"acknowledged for service {service!r}: {'; '.join(problems)} ({figures}); "
                "wait until the missing standbys answer, promote the most advanced one, or "
                "pass --allow-data-loss")
        if problems:
            return f"{figures}; accepted with --allow-data-loss: {'; '.join(problems)}"
        return (f"{target} holds every acknowledged commit: {figures}; {len(named)} of "
                f"{len(waited.names)} standbys read, {needed} needed")

    return SqlStep("check that the target holds every acknowledged commit", target, (
        "SELECT current_setting('synchronous_standby_names')  -- on the old writer, if it answers",
        f"SELECT remote_lsn FROM failover.node_status('{service}', "
        f"'{subscription_name(service)}')  -- on every reachable subscriber; refuse unless "
        f"{target} has the highest and n - k + 1 named standbys answered",), run)


def _fence_old_primary_step(db: ServiceDatabases, old_primary: str, epoch: int) -> SqlStep:
    steps = fence_steps(db, old_primary, epoch=epoch)

    def run() -> str:
        if db.try_conn(old_primary) is None:
            return "unreachable: nothing to fence"
        return "; ".join(step.run() for step in steps)

    return SqlStep("fence the old primary if reachable", old_primary,
                tuple(s for step in steps for s in step.sql), run)


def _catch_up_step(db: ServiceDatabases, target: str, old_primary: str, epoch: int) -> SqlStep:
    """A fenced old writer that still answers acknowledged everything it has: let the target
    apply it (bounded by `catch_up_timeout`) rather than lose up to the lag limits."""
    service = db.service
    timeout = service.catch_up_timeout

    def run() -> str:
        status = inspect_node(db.conn(target), service.name)
        if status.handover_epoch == epoch:
            return "already detached by this promotion"
        old = db.try_conn(old_primary)
        if old is None:
            return f"{old_primary} is unreachable: {target} keeps what it applied"
        if timeout == 0:
            return "catch_up_timeout is 0: no wait"
        if status.subscription_enabled is False:
            return f"{target}'s subscription is disabled: nothing to wait for"
        marker = write_marker(old, service.name)
        if target in wait_for_marker(db, old_primary, marker, (target,), confirmed=target,
                                     timeout=timeout, grace=0.0):
            return f"{target} applied everything {old_primary} wrote, up to {marker.lsn_text}"
        return (f"{target} did not apply {old_primary}'s last writes (up to {marker.lsn_text}) "
                f"within catch_up_timeout {timeout:g} s: promoted with what it has")

    return SqlStep(f"let {target} catch up with {old_primary} if it answers", old_primary,
                   marker_wait_shown(service.name, target, f"catch_up_timeout {timeout:g} s",
                                     "; then promote it either way"), run)


def _sync_sequences_step(db: ServiceDatabases, target: str, gap: int) -> SqlStep:
    query = f"SELECT * FROM failover.sync_sequences({int(gap)})"

    def run() -> str:
        moved = db.conn(target).execute(query.encode()).fetchall()
        return f"moved {len(moved)} sequences past max(column) + {gap}"

    return SqlStep("sync sequences", target, (query,), run)


def promotion_steps(db: ServiceDatabases, target: str, *, epoch: int | None = None,
                   allow_data_loss: bool = False, sequence_gap: int = DEFAULT_SEQUENCE_GAP,
                   repoint: bool = True, after_writable: bool = True,
                   lease_ttl: float = DEFAULT_LEASE_TTL,
                   lease_until: Callable[[], float] | None = None,
                   sync_standbys: SyncStandbys | None = None) -> PromotionSteps:
    """The steps that promote `target`; reads the current state, changes nothing.

    `repoint=False` and `after_writable=False` leave out re-pointing the other
    subscribers and ending the sessions opened while read-only: the controller
    runs those after moving DNS, so that clients do not wait for them.
    `lease_ttl`: the target's first lease, until the controller renews it, and never past
    `lease_until()` (what the quorum vouches for, asked when the step runs).
    `sync_standbys`: what the old writer's commits waited for as the fleet last saw it,
    for the check that the target holds every acknowledged commit (its own setting wins
    when it answers).
    """
    db.endpoint(target, flag="REGION")
    old_primary = find_old_primary(db, target)
    if old_primary == target:
        raise FailoverError(f"region {target} is already the primary of {db.service.name!r}")
    epoch = next_epoch(db) if epoch is None else epoch
    subscribers = tuple(r for r in db.regions if r not in (target, old_primary))
    prepare = (
        claim_check_step(db, target, epoch),
        _lag_gate_step(db, target, old_primary, epoch, allow_data_loss),
        *([_fence_old_primary_step(db, old_primary, epoch),
           _catch_up_step(db, target, old_primary, epoch)] if old_primary else []),
        # After the fence: an old writer that still answers commits nothing more meanwhile.
        _acknowledged_gate_step(db, target, old_primary, epoch, known=sync_standbys,
                                allow_data_loss=allow_data_loss),
        detach_step(db, target, old_primary, epoch),
        rollback_prepared_step(db, target),
        _sync_sequences_step(db, target, sequence_gap),
        publication_step(db, target),
        slots_step(db, target, subscribers),
    )
    after = (
        *([terminate_stale_step(db, target)] if after_writable else []),
        *(repoint_step(db, region, target, old_primary, epoch)
          for region in (subscribers if repoint else ())),
    )
    return PromotionSteps(prepare=prepare,
                          become_writable=take_writer_role_step(db, target, epoch,
                                                                lease_ttl=lease_ttl,
                                                                lease_until=lease_until),
                          after=after, service=db.service.name, target=target,
                          old_primary=old_primary, subscribers=subscribers, epoch=epoch)
