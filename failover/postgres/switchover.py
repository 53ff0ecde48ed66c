"""Planned switchover: move the primary from P to subscriber S with zero loss.

P is fenced (its walsenders keep draining), a marker is written on P, and S
takes over only once it has applied that marker: everything P acknowledged
is then on S. Sequence values are copied exactly. If S does not get there
within the timeout, P is unfenced and nothing else has changed. After S is
promoted, the other subscribers hand over cleanly (they applied the marker
too) and P subscribes to S from a slot made before S's first write, without
a re-copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from failover.errors import FailoverError, UserError
from failover.postgres.catchup import marker_wait_shown, wait_for_marker, write_marker
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import (
    epoch_step,
    fence_steps,
    revoke_step,
    set_app_logins,
    unfence_steps,
)
from failover.postgres.inspect import inspect_node
from failover.postgres.lease import DEFAULT_LEASE_TTL
from failover.postgres.names import publication_name
from failover.postgres.promote import (
    claim_check_step,
    detach_step,
    next_epoch,
    publication_step,
    repoint_step,
    rollback_prepared_step,
    slots_step,
    take_writer_role_step,
    terminate_stale_step,
)
from failover.postgres.replication import (
    create_subscription_statement,
    drop_logical_slots,
    drop_publication,
    subscription_conninfo,
)
from failover.postgres.state import record_fenced, record_role, recorded_epoch
from failover.postgres.steps import SqlStep, WriterChange, run_steps
from failover.postgres.sync import CLEAR_SERVICE_STANDBYS_SQL, clear_service_standbys

DEFAULT_TIMEOUT = 30.0
# Writes are paused while we wait: once the target has the marker, another
# subscriber gets this long to catch up too, else it is resynced later.
_STRAGGLER_GRACE = 1.0

_SEQUENCE_VALUES = (
    "SELECT o.sequence_name, q.last_value FROM failover.owned_sequences() o "
    "JOIN pg_sequences q ON format('%I.%I', q.schemaname, q.sequencename)::regclass "
    "= o.sequence_name::regclass WHERE q.last_value IS NOT NULL")


@dataclass(frozen=True)
class SwitchoverSteps(WriterChange):
    service: str
    old_primary: str
    target: str
    subscribers: tuple[str, ...]
    epoch: int


class SwitchoverTimeout(FailoverError):
    """The target did not catch up in time; the old primary was unfenced again."""


def _drain_step(db: ServiceDatabases, old: str, target: str, subscribers: tuple[str, ...], *,
                epoch: int, old_epoch: int, timeout: float, lease_ttl: float) -> SqlStep:
    """On timeout the old primary is unfenced at `old_epoch`, the epoch it recorded when the
    plan was made: refused if another plan has raised it since."""
    service = db.service.name

    def run() -> str:
        target_status = inspect_node(db.conn(target), service)
        if target_status.handover_epoch == epoch:
            return f"{target} already detached by this switchover"
        marker = write_marker(db.conn(old), service)
        waiting_for = (target, *subscribers)
        done = wait_for_marker(db, old, marker, waiting_for, confirmed=target, timeout=timeout,
                               grace=_STRAGGLER_GRACE)
        if target not in done:
            run_steps(unfence_steps(db, old, epoch=old_epoch, lease_ttl=lease_ttl))
            raise SwitchoverTimeout(
                f"{target} did not apply the marker from {old} within {timeout:g} s; {old} is "
                "unfenced and still the primary, nothing else changed (raise --timeout, or check "
                f"{target}'s subscription)")
        behind = sorted(set(waiting_for) - done)
        later = f"; {', '.join(behind)} will be resynced" if behind else ""
        return f"{target} applied the marker at {marker.lsn_text}{later}"

    return SqlStep(f"write a marker on {old} and wait until {target} applied it", old,
                   marker_wait_shown(service, target, f"{timeout:g} s",
                                     f"; on timeout unfence {old}"), run)


def _copy_sequences_step(db: ServiceDatabases, old: str, target: str) -> SqlStep:
    def run() -> str:
        values = db.conn(old).execute(_SEQUENCE_VALUES).fetchall()
        conn = db.conn(target)
        for name, value in values:
            conn.execute(
                "SELECT setval(%(seq)s::regclass, %(value)s, true) FROM pg_sequences q "
                "WHERE format('%%I.%%I', q.schemaname, q.sequencename)::regclass = "
                "%(seq)s::regclass AND coalesce(q.last_value, 0) < %(value)s",
                {"seq": name, "value": value})
        return f"copied {len(values)} sequence values"

    return SqlStep(f"copy exact sequence values from {old}", target, (
        f"-- on {old}: {_SEQUENCE_VALUES}",
        "SELECT setval('<sequence>', <last_value on the old primary>, true)  -- when lower"), run)


def _subscribe_old_primary_step(db: ServiceDatabases, old: str, target: str,
                                epoch: int) -> SqlStep:
    service = db.service.name
    target_endpoint = db.endpoint(target)

    def run() -> str:
        conn = db.conn(old)
        cleared = clear_service_standbys(conn, service, db.regions, timeout=db.statement_timeout)
        if db.region_of(subscription_conninfo(conn, service)) == target:
            detail = f"{cleared}; already subscribed to {target}"
        else:
            dropped = drop_logical_slots(conn)
            drop_publication(conn, service)
            conn.execute(create_subscription_statement(service, old, target_endpoint,
                                                       db.endpoint(old), copy_data=False))
            detail = (f"{cleared}; dropped slots {', '.join(dropped) or 'none'}; subscribed to "
                      f"{target}")
        record_role(conn, service, "subscriber", epoch)
        set_app_logins(conn, db.service.app_roles, True)  # readers may come back
        record_fenced(conn, service, False)
        return detail

    return SqlStep(f"subscribe {old} to {target}", old, (
        CLEAR_SERVICE_STANDBYS_SQL,
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_type = 'logical' AND database = current_database()",
        sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
            sql.Identifier(publication_name(service))).as_string(),
        create_subscription_statement(service, old, target_endpoint, db.endpoint(old),
                                      copy_data=False, shown=True).as_string(),
        f"UPDATE failover.node_state SET role = 'subscriber', epoch = {epoch}, fenced = false "
        f"WHERE service = '{service}'  -- the database stays read-only",
    ), run)


def switchover_steps(db: ServiceDatabases, target: str, *, epoch: int | None = None,
                     timeout: float = DEFAULT_TIMEOUT,
                     lease_ttl: float = DEFAULT_LEASE_TTL,
                     lease_until: Callable[[], float] | None = None) -> SwitchoverSteps:
    """The steps that move the primary to `target`; reads the current state, changes nothing.

    `lease_ttl`: the target's first lease (or the old primary's again, if the target
    does not catch up in time), until the controller renews it; the target's never past
    `lease_until()` (what the quorum vouches for, asked when the step runs).
    """
    db.endpoint(target, flag="REGION")
    target_status = inspect_node(db.conn(target), db.service.name)
    old = (db.region_of(subscription_conninfo(db.conn(target), db.service.name))
           or target_status.handover_from)
    if old is None or old == target:
        raise UserError(f"REGION: {target} does not subscribe to the primary of "
                        f"{db.service.name!r}; a switchover needs a subscriber that is streaming")
    epoch = next_epoch(db) if epoch is None else epoch
    old_epoch = recorded_epoch(db.conn(old), db.service.name)
    subscribers = tuple(r for r in db.regions if r not in (target, old))
    prepare = (
        epoch_step(db, old, epoch),
        claim_check_step(db, target, epoch),
        # At the old primary's own epoch: should the target not catch up, the old
        # primary is unfenced at that epoch and nothing else has changed.
        *fence_steps(db, old),
        _drain_step(db, old, target, subscribers, epoch=epoch, old_epoch=old_epoch,
                    timeout=timeout, lease_ttl=lease_ttl),
        # From here the writes are the target's: nothing may unfence the old primary
        # at its former epoch any more.
        revoke_step(db, old, epoch),
        _copy_sequences_step(db, old, target),
        detach_step(db, target, old, epoch),
        rollback_prepared_step(db, target),
        publication_step(db, target),
        slots_step(db, target, (*subscribers, old)),
    )
    after = (
        terminate_stale_step(db, target),
        *(repoint_step(db, region, target, old, epoch) for region in subscribers),
        _subscribe_old_primary_step(db, old, target, epoch),
    )
    return SwitchoverSteps(prepare=prepare,
                           become_writable=take_writer_role_step(db, target, epoch,
                                                                 lease_ttl=lease_ttl,
                                                                 lease_until=lease_until),
                           after=after, service=db.service.name, old_primary=old,
                           target=target, subscribers=subscribers, epoch=epoch)
