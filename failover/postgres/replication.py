"""Idempotent operations on a service's publication, slots and subscription.

Each function checks before it acts, so that calling it again after a crash
is harmless; the `*_sql` functions return the statements it says, for dry runs.
"""

from __future__ import annotations

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from failover.postgres.connection import Connection
from failover.postgres.names import (
    publication_name,
    slot_name,
    standby_name,
    subscription_name,
)
from failover.topology import PostgresEndpoint

# In dry-run output, where a connection string would show a password.
HIDDEN = "********"


def publishable_tables(conn: Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM failover.publishable_tables() t "
        "JOIN pg_class c ON c.oid = t JOIN pg_namespace n ON n.oid = c.relnamespace "
        "ORDER BY 1, 2").fetchall()
    return [(str(schema), str(name)) for schema, name in rows]


def _table_list(tables: list[tuple[str, str]]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in tables)


def ensure_publication(conn: Connection, service: str) -> str:
    """The service's publication holds exactly the publishable tables."""
    name = publication_name(service)
    tables = publishable_tables(conn)
    current = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
        "ORDER BY 1, 2", [name]).fetchall()
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone()
    if exists is None:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), _table_list(tables)))
        return f"created publication {name} ({len(tables)} tables)"
    if [tuple(row) for row in current] != tables:
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
            sql.Identifier(name), _table_list(tables)))
        return f"publication {name} now holds {len(tables)} tables"
    return f"publication {name} already holds all {len(tables)} tables"


def ensure_publication_sql(service: str) -> str:
    return (f"CREATE PUBLICATION {publication_name(service)} FOR TABLE "
            "<every table of failover.publishable_tables()>  -- or ALTER PUBLICATION ... SET TABLE")


def slot_exists(conn: Connection, slot: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                        [slot]).fetchone() is not None


def ensure_slot(conn: Connection, slot: str) -> str:
    if slot_exists(conn, slot):
        return f"slot {slot} exists"
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
    return f"created slot {slot}"


def ensure_slot_sql(slot: str) -> str:
    return f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')  -- unless it exists"


def subscription_conninfo(conn: Connection, service: str) -> str | None:
    row = conn.execute(
        "SELECT subconninfo FROM pg_subscription WHERE subname = %s AND subdbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        [subscription_name(service)]).fetchone()
    return None if row is None else str(row[0])


def drop_subscription_statements(service: str) -> list[sql.Composed]:
    """Detach first, so that DROP works even when the publisher is gone (its slot stays there)."""
    name = sql.Identifier(subscription_name(service))
    return [sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name),
            sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name),
            sql.SQL("DROP SUBSCRIPTION {}").format(name)]


def drop_subscription(conn: Connection, service: str) -> str:
    if subscription_conninfo(conn, service) is None:
        return "no subscription"
    for statement in drop_subscription_statements(service):
        conn.execute(statement)
    return f"dropped subscription {subscription_name(service)}"


# What `db replicate` brings an existing subscription's connection string to: the settings the
# topology decides besides the publisher's address (same server, so the origin stays valid).
# The password is left as it is (docs/operator-guide.md).
_MAINTAINED = ("application_name", "sslmode", "sslrootcert", "sslcert", "sslkey")


def publisher_conninfo(service: str, region: str, publisher: PostgresEndpoint,
                       subscriber: PostgresEndpoint, *, shown: bool = False) -> str:
    """How `region`'s server connects to `publisher` for its subscription: the publisher's
    address, role and sslmode, the subscriber's own TLS files (paths on its server's host),
    and `standby_name(service, region)` as the application_name, the name the writer's
    synchronous_standby_names lists. `shown`: without the password (`--dry-run`)."""
    return publisher.conninfo_for_subscriber(subscriber,
                                             application_name=standby_name(service, region),
                                             **({"password": HIDDEN} if shown else {}))


def create_subscription_statement(service: str, region: str, publisher: PostgresEndpoint,
                                  subscriber: PostgresEndpoint, *, copy_data: bool,
                                  shown: bool = False) -> sql.Composed:
    """Subscribe `region` (whose endpoint is `subscriber`) to `publisher` through the slot
    made for it there, over `publisher_conninfo`.

    synchronous_commit = on: the apply worker flushes each commit it applies and reports the
    flushed position at once, not when the WAL writer next gets to it, so a commit waiting for
    it on a sync writer waits no longer.
    `shown`: the statement as printed (`--dry-run`), without the password.
    """
    conninfo = publisher_conninfo(service, region, publisher, subscriber, shown=shown)
    return sql.SQL(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH "
        "(slot_name = {}, create_slot = false, copy_data = {}, synchronous_commit = 'on')").format(
            sql.Identifier(subscription_name(service)), sql.Literal(conninfo),
            sql.Identifier(publication_name(service)), sql.Literal(slot_name(service, region)),
            sql.SQL("true" if copy_data else "false"))


def upgrade_subscription(conn: Connection, service: str, region: str,
                         publisher: PostgresEndpoint, subscriber: PostgresEndpoint) -> str:
    """Give a subscription what `create_subscription_statement` gives a new one: the
    application_name (a sync writer names it) and TLS settings of `publisher_conninfo`, and
    synchronous_commit = on. Same publisher, so its replication origin, and what it applied,
    stay valid."""
    name = sql.Identifier(subscription_name(service))
    row = conn.execute(
        "SELECT subconninfo, subsynccommit FROM pg_subscription WHERE subname = %s AND subdbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        [subscription_name(service)]).fetchone()
    if row is None:
        return "no subscription"
    wanted = publisher_conninfo(service, region, publisher, subscriber)
    have, want = conninfo_to_dict(str(row[0])), conninfo_to_dict(wanted)
    changed = [f"{key} {want[key]}" if key in want else f"no {key}" for key in _MAINTAINED
               if have.get(key) != want.get(key)]
    if changed:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(
            name, sql.Literal(wanted)))
    if row[1] != "on":
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (synchronous_commit = 'on')").format(name))
        changed.append("synchronous_commit = on")
    return f"now with {' and '.join(changed)}" if changed else "up to date"


def truncate_published(conn: Connection) -> str:
    """Empty every published table before a full copy (copying into rows loops on duplicates).

    The node holds no lease here (a subscriber, a fenced old primary), so the TRUNCATE
    passes the lease guard the way the apply worker's writes do: as a replica session.
    """
    tables = publishable_tables(conn)
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql.SQL("TRUNCATE {}").format(_table_list(tables)))
    return f"truncated {len(tables)} tables"


def drop_logical_slots(conn: Connection, *, keep: frozenset[str] = frozenset()) -> list[str]:
    """Drop every logical slot of this database except `keep` (their WAL is retained forever).

    Table-sync slots of interrupted copies are included. A slot still in use
    by a walsender is released first by terminating that walsender.
    """
    rows = conn.execute(
        "SELECT slot_name, active_pid FROM pg_replication_slots WHERE slot_type = 'logical' "
        "AND database = current_database() AND NOT temporary ORDER BY 1").fetchall()
    dropped = []
    for slot, active_pid in rows:
        if slot in keep:
            continue
        if active_pid is not None:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", [active_pid])
        conn.execute("SELECT pg_drop_replication_slot(%s) FROM pg_replication_slots "
                     "WHERE slot_name = %s", [slot, slot])
        dropped.append(str(slot))
    return dropped


def drop_publication(conn: Connection, service: str) -> str:
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
        sql.Identifier(publication_name(service))))
    return f"no publication {publication_name(service)}"
