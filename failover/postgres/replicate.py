"""Set up a service's replication: publication on the writer, a subscription everywhere else.

Run once when a service is created (and again to pick up new tables): the
writer gets the `failover_<service>` publication, each other region a
`failover_<service>` subscription reading from its own slot
`failover_<service>_<region>` on the writer, with a full initial copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from failover.errors import ConflictError
from failover.postgres.connection import ServiceDatabases, same_server
from failover.postgres.fence import set_database_read_only
from failover.postgres.lease import DEFAULT_LEASE_TTL, lease_text, renew_lease
from failover.postgres.names import slot_name, subscription_name
from failover.postgres.replication import (
    create_subscription_statement,
    ensure_publication,
    ensure_publication_sql,
    ensure_slot,
    ensure_slot_sql,
    publishable_tables,
    subscription_conninfo,
    upgrade_subscription,
)
from failover.postgres.state import record_role
from failover.postgres.steps import SqlStep


@dataclass(frozen=True)
class ReplicationSteps:
    service: str
    writer: str
    epoch: int
    steps: tuple[SqlStep, ...]


def recorded_writer(db: ServiceDatabases) -> str | None:
    """The reachable region that records itself as primary with the highest epoch."""
    best: tuple[int, str] | None = None
    for region in db.regions:
        conn = db.try_conn(region)
        if conn is None:
            continue
        row = conn.execute("SELECT role, epoch FROM failover.node_state WHERE service = %s",
                           [db.service.name]).fetchone()
        if row is not None and row[0] == "primary" and (best is None or int(row[1]) > best[0]):
            best = (int(row[1]), region)
    return None if best is None else best[1]


def _highest_epoch(db: ServiceDatabases) -> int:
    epochs = [0]
    for region in db.regions:
        row = db.conn(region).execute("SELECT epoch FROM failover.node_state WHERE service = %s",
                                      [db.service.name]).fetchone()
        epochs.append(int(row[0]) if row else 0)
    return max(epochs)


def replication_steps(db: ServiceDatabases, writer: str, *,
                      lease_ttl: float = DEFAULT_LEASE_TTL) -> ReplicationSteps:
    """`lease_ttl`: the writer's first lease, until its controller renews it."""
    service = db.service.name
    writer_endpoint = db.endpoint(writer, flag="--writer")
    current = recorded_writer(db)
    if current is not None and current != writer:
        raise ConflictError(f"region {current} is already the primary of {service!r}; "
                            f"use `failover switchover {service} {writer}` to move it")
    epoch = max(_highest_epoch(db), 1)
    dbname = writer_endpoint.dbname

    def take_writer() -> str:
        conn = db.conn(writer)
        record_role(conn, service, "primary", epoch)
        set_database_read_only(conn, dbname, False)
        published = ensure_publication(conn, service)
        return f"{published}; {lease_text(renew_lease(conn, service, writer, epoch, lease_ttl))}"

    steps = [SqlStep("publish from the writer", writer, (
        f"UPDATE failover.node_state SET role = 'primary', epoch = {epoch} "
        f"WHERE service = '{service}'",
        f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only',
        ensure_publication_sql(service),
        f"SELECT failover.renew_lease('{service}', '{writer}', {epoch}, {lease_ttl:g})"),
        take_writer)]
    for region in db.regions:
        if region != writer:
            steps.append(_subscribe_step(db, region, writer, epoch))
    return ReplicationSteps(service=service, writer=writer, epoch=epoch, steps=tuple(steps))


def _subscribe_step(db: ServiceDatabases, region: str, writer: str, epoch: int) -> SqlStep:
    service = db.service.name
    slot = slot_name(service, region)
    writer_endpoint = db.endpoint(writer)
    dbname = db.endpoint(region).dbname

    def run() -> str:
        conn = db.conn(region)
        record_role(conn, service, "subscriber", epoch)
        set_database_read_only(conn, dbname, True)
        current = subscription_conninfo(conn, service)
        if current is not None:
            if not same_server(current, writer_endpoint):
                source = db.region_of(current) or "another server"
                raise ConflictError(f"region {region} already subscribes to {source}; "
                                    "re-point it with `failover promote` or `failover rejoin`")
            upgraded = upgrade_subscription(conn, service, region, writer_endpoint,
                                            db.endpoint(region))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(
                sql.Identifier(subscription_name(service))))
            return f"already subscribed to {writer} ({upgraded}); refreshed the table list"
        for schema, table in publishable_tables(conn):
            if schema == "failover":
                continue
            if conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(
                    sql.Identifier(schema, table))).fetchone() is not None:
                raise ConflictError(
                    f"region {region}: table {schema}.{table} already has rows; an initial copy "
                    "into it would fail on duplicates: empty the tables first, or use "
                    "`failover rejoin` for a returning primary")
        conn.execute("TRUNCATE failover.heartbeat, failover.sequence_snapshot")
        ensure_slot(db.conn(writer), slot)
        conn.execute(create_subscription_statement(service, region, writer_endpoint,
                                                   db.endpoint(region), copy_data=True))
        return f"subscribed to {writer} through slot {slot}, copying"

    return SqlStep(f"subscribe {region} to {writer}", region, (
        f"UPDATE failover.node_state SET role = 'subscriber', epoch = {epoch} "
        f"WHERE service = '{service}'",
        f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on',
        f"-- on {writer}: {ensure_slot_sql(slot)}",
        create_subscription_statement(service, region, writer_endpoint, db.endpoint(region),
                                      copy_data=True, shown=True).as_string(),
        "-- or, when already subscribed: ALTER SUBSCRIPTION ... CONNECTION <the same, with "
        "its application_name and TLS settings> and SET (synchronous_commit = 'on') unless it "
        "has them, then "
        "ALTER SUBSCRIPTION ... REFRESH PUBLICATION",
    ), run)
