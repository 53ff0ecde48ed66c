"""Bring a returning old primary P back as a subscriber of the current primary S.

P may hold transactions it committed after S stopped receiving from it. They
are still in P's orphaned slot for S: decoding a copy of that slot and keeping
the transactions whose commit comes after the position S recorded at its
promotion gives the exact list, written to a file for reconciliation before
anything is dropped. Then P's slots go (they would retain WAL forever), and P
is emptied and re-copied from S. P stays fenced throughout; unfence it once
the copy has finished.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from failover.engine.lsn import format_lsn, parse_lsn
from failover.errors import UserError
from failover.postgres.connection import Connection, ServiceDatabases
from failover.postgres.fence import fence_steps
from failover.postgres.inspect import inspect_node
from failover.postgres.names import publication_name, slot_name
from failover.postgres.replicate import recorded_writer
from failover.postgres.replication import (
    create_subscription_statement,
    drop_logical_slots,
    drop_publication,
    drop_subscription,
    ensure_slot,
    ensure_slot_sql,
    slot_exists,
    subscription_conninfo,
    truncate_published,
)
from failover.postgres.state import record_role
from failover.postgres.steps import SqlStep
from failover.postgres.sync import CLEAR_SERVICE_STANDBYS_SQL, clear_service_standbys

# Decoding a long-orphaned slot reads all the WAL it kept.
DECODE_TIMEOUT_SECONDS = 300
_CHANGE = re.compile(r"^table (?P<table>[^:]+): (?P<operation>[A-Z]+): (?P<rest>.*)$")
_COLUMN = re.compile(r"(?P<name>[^\s\[]+)\[(?P<type>[^\]]+)\]:(?P<value>'(?:[^']|'')*'|\S+)")
_COMMIT = re.compile(r"^COMMIT (?P<xid>\d+)(?: \(at (?P<at>[^)]+)\))?")


@dataclass
class LostChange:
    table: str
    operation: str
    columns: dict[str, str | None]
    text: str


@dataclass
class LostTransaction:
    xid: str
    commit_lsn: str
    committed_at: str | None
    changes: list[LostChange] = field(default_factory=list)


@dataclass(frozen=True)
class RejoinSteps:
    service: str
    old_primary: str
    primary: str
    epoch: int
    lost_file: Path
    steps: tuple[SqlStep, ...]


def _columns(text: str) -> dict[str, str | None]:
    new_tuple = text.split("new-tuple: ", 1)[-1]  # UPDATE with an old key: keep the new row
    columns: dict[str, str | None] = {}
    for match in _COLUMN.finditer(new_tuple):
        value = match.group("value")
        if value == "null":
            columns[match.group("name")] = None
        elif value.startswith("'"):
            columns[match.group("name")] = value[1:-1].replace("''", "'")
        else:
            columns[match.group("name")] = value
    return columns


def decode_lost(rows: list[tuple[str, str, str]], after: int | None) -> list[LostTransaction]:
    """Transactions from test_decoding output committed after `after` (all if None),
    minus failover's own bookkeeping (heartbeats, sequence snapshots)."""
    lost: list[LostTransaction] = []
    changes: list[LostChange] = []
    for lsn, xid, data in rows:
        if data.startswith("BEGIN"):
            changes = []
        elif (change := _CHANGE.match(data)) is not None:
            if not change.group("table").startswith("failover."):
                changes.append(LostChange(change.group("table"), change.group("operation"),
                                          _columns(change.group("rest")), data))
        elif (commit := _COMMIT.match(data)) is not None:
            commit_lsn = parse_lsn(lsn)
            if changes and (after is None or (commit_lsn is not None and commit_lsn > after)):
                lost.append(LostTransaction(xid, lsn, commit.group("at"), changes))
            changes = []
    return lost


def _peek_orphaned_slot(conn: Connection, slot: str) -> list[tuple[str, str, str]]:
    copy = f"failover_forensic_{conn.info.backend_pid}"
    conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s, true, 'test_decoding')",
                 [slot, copy])
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{DECODE_TIMEOUT_SECONDS}s"])
            rows = conn.execute(
                "SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
                "%s, NULL, NULL, 'include-xids', '1', 'include-timestamp', '1')",
                [copy]).fetchall()
    finally:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [copy])
    return [(str(lsn), str(xid), str(data)) for lsn, xid, data in rows]


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def _lost_transactions_step(db: ServiceDatabases, old: str, primary: str,
                            lost_file: Path) -> SqlStep:
    service = db.service.name
    orphan = slot_name(service, primary)

    def run() -> str:
        conn = db.conn(old)
        if not slot_exists(conn, orphan):
            if lost_file.exists():
                return f"kept {lost_file} from an earlier run (the slot is gone)"
            document: dict[str, Any] = {"complete": False, "transactions": [],
                                        "note": f"no slot {orphan} on {old}: nothing to decode"}
        else:
            status = inspect_node(db.conn(primary), service)
            cutoff = status.handover_lsn if status.handover_from == old else None
            lost = decode_lost(_peek_orphaned_slot(conn, orphan), cutoff)
            document = {
                "complete": cutoff is not None,
                "cutoff_lsn": format_lsn(cutoff),
                "note": ("transactions committed on the old primary after the new primary's "
                         "recorded position" if cutoff is not None else
                         f"{primary} recorded no position taken from {old}: every transaction "
                         "the slot still holds is listed, some may exist on the primary"),
                "transactions": [asdict(t) for t in lost],
            }
        document.update(service=service, old_primary=old, primary=primary)
        _write_atomically(lost_file, document)
        return f"{len(document['transactions'])} lost transactions written to {lost_file}"

    return SqlStep("list the transactions the primary never received", old, (
        f"SELECT pg_copy_logical_replication_slot('{orphan}', 'failover_forensic_<pid>', true, "
        "'test_decoding')",
        "SELECT lsn, xid, data FROM pg_logical_slot_peek_changes('failover_forensic_<pid>', "
        "NULL, NULL, 'include-xids', '1', 'include-timestamp', '1')",
        f"-- keep transactions committed after {primary}'s recorded handover_lsn; write {lost_file}",
    ), run)


def _drop_stale_step(db: ServiceDatabases, old: str) -> SqlStep:
    def run() -> str:
        conn = db.conn(old)
        dropped = drop_logical_slots(conn)
        drop_publication(conn, db.service.name)
        return f"dropped slots: {', '.join(dropped) or 'none'}; no publication"

    return SqlStep("drop stale slots and the publication", old, (
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_type = 'logical' AND database = current_database()",
        f"DROP PUBLICATION IF EXISTS {publication_name(db.service.name)}"), run)


def _resync_step(db: ServiceDatabases, old: str, primary: str, epoch: int) -> SqlStep:
    service = db.service.name
    slot = slot_name(service, old)
    primary_endpoint = db.endpoint(primary)

    def run() -> str:
        conn = db.conn(old)
        if db.region_of(subscription_conninfo(conn, service)) == primary:
            record_role(conn, service, "subscriber", epoch)
            return f"already subscribed to {primary}"
        cleared = clear_service_standbys(conn, service, db.regions, timeout=db.statement_timeout)
        ensure_slot(db.conn(primary), slot)
        drop_subscription(conn, service)
        truncated = truncate_published(conn)
        conn.execute(create_subscription_statement(service, old, primary_endpoint,
                                                   db.endpoint(old), copy_data=True))
        record_role(conn, service, "subscriber", epoch)
        return f"{cleared}; {truncated}; subscribed to {primary}, copying (still fenced)"

    return SqlStep(f"resync {old} from {primary}", old, (
        CLEAR_SERVICE_STANDBYS_SQL,
        f"-- on {primary}: {ensure_slot_sql(slot)}",
        "TRUNCATE <every table of failover.publishable_tables()>",
        create_subscription_statement(service, old, primary_endpoint, db.endpoint(old),
                                      copy_data=True, shown=True).as_string(),
        f"UPDATE failover.node_state SET role = 'subscriber', epoch = {epoch} "
        f"WHERE service = '{service}'",
    ), run)


def rejoin_steps(db: ServiceDatabases, old: str, *, lost_file: Path) -> RejoinSteps:
    db.endpoint(old, flag="REGION")
    others = ServiceDatabases(service=db.service, statement_timeout=db.statement_timeout,
                              endpoints={r: e for r, e in db.endpoints.items() if r != old})
    try:
        primary = recorded_writer(others)
    finally:
        others.close()
    if primary is None:
        raise UserError(f"REGION: no other reachable region is the primary of "
                        f"{db.service.name!r}; promote one before rejoining {old}")
    epoch = inspect_node(db.conn(primary), db.service.name).epoch
    steps = [
        # Refused below P's epoch; raises it to the primary's, so that nothing
        # unfences P at the epoch it held as the writer.
        *fence_steps(db, old, epoch=epoch),
        _lost_transactions_step(db, old, primary, lost_file),
        _drop_stale_step(db, old),
        _resync_step(db, old, primary, epoch),
    ]
    return RejoinSteps(service=db.service.name, old_primary=old, primary=primary, epoch=epoch,
                      lost_file=lost_file, steps=tuple(steps))
