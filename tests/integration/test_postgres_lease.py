"""The writer's lease on real servers (15 and 18): the data plane refuses application
writes unless this server holds a valid lease, and the application role cannot lift it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from failover.errors import FailoverError, SafetyRefusal, UserError
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.lease import (
    WRITE_REFUSED,
    lease_state,
    lift_fence,
    renew_lease,
    revoke_lease,
)
from failover.postgres.promote import promotion_steps, take_writer_role_step
from failover.postgres.schema import install, installed_version, schema_versions
from failover.postgres.state import check_claim, record_role
from failover.postgres.steps import run_steps
from tests.support.pg import (
    APP_ROLE,
    SERVICE,
    ServiceDb,
    probe,
    wait_until,
    write_rows,
    write_topology,
)

pytestmark = pytest.mark.integration

READ_ONLY = "25006"
PERMISSION_DENIED = "42501"
LONG = 600.0  # a lease that outlives the test


App = psycopg.Connection[tuple[object, ...]]


def app(sdb: ServiceDb, region: str = "alpha",
        isolation: psycopg.IsolationLevel | None = None) -> App:
    """An application session: autocommit, or with `isolation` explicit transactions."""
    conn = psycopg.connect(sdb.app_conninfo(region), autocommit=isolation is None,
                           connect_timeout=5)
    conn.isolation_level = isolation
    return conn


def superuser(sdb: ServiceDb, region: str = "alpha") -> App:
    """A superuser session that is not a replica session: the guard binds it too."""
    return sdb.server(region).connect(sdb.dbname)


def make_primary(sdb: ServiceDb, region: str = "alpha", epoch: int = 1) -> None:
    with sdb.admin(region) as conn:
        record_role(conn, SERVICE, "primary", epoch)


def refused(conn: App, statement: str, sqlstate: str = WRITE_REFUSED) -> str:
    """The error message `statement` fails with, asserting its SQLSTATE."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement.encode())
    assert caught.value.sqlstate == sqlstate, caught.value
    return str(caught.value.diag.message_primary)


WRITES = (
    "INSERT INTO items (note) VALUES ('app')",
    "UPDATE items SET note = 'changed'",
    "DELETE FROM items",
    "TRUNCATE items",
)


def test_application_writes_need_a_valid_lease(service_db: ServiceDb) -> None:
    make_primary(service_db)
    with service_db.admin("alpha") as conn:
        conn.execute(f"GRANT TRUNCATE ON items TO {APP_ROLE}")
        conn.execute("INSERT INTO items (note) VALUES ('seed')")  # a replica session may
    controller = service_db.db.conn("alpha")
    with app(service_db) as conn:
        for statement in WRITES:
            message = refused(conn, statement)
            assert message == ("writes to service shop refused on region alpha: "
                               "not the recorded writer (no lease was granted)")

        granted = renew_lease(controller, SERVICE, "alpha", 1, LONG)
        assert granted.writer and granted.refused is None and granted.epoch == 1
        assert LONG - 5 < granted.seconds_left <= LONG
        for statement in WRITES:
            conn.execute(statement.encode())

        short = renew_lease(controller, SERVICE, "alpha", 1, 0.3)  # a renewal may shorten it
        assert short.writer
        wait_until(lambda: not lease_state(controller, SERVICE).writer, timeout=10,
                   what="the lease to run out")
        state = lease_state(controller, SERVICE)
        assert state.seconds_left == 0 and state.refused is not None
        assert state.refused.startswith("lease expired at ")
        for statement in WRITES:
            assert "lease expired at" in refused(conn, statement)
    with superuser(service_db) as conn:  # the guard is not for the application role only
        refused(conn, "INSERT INTO items (note) VALUES ('superuser')")


def test_a_subscriber_gets_no_lease(service_db: ServiceDb) -> None:
    with service_db.admin("bravo") as conn:
        record_role(conn, SERVICE, "subscriber", 1)
    state = renew_lease(service_db.db.conn("bravo"), SERVICE, "bravo", 1, LONG)
    assert not state.writer and state.refused == "not the recorded writer (role subscriber)"
    with pytest.raises(SafetyRefusal, match="holds region bravo's copy of service shop, not"):
        renew_lease(service_db.db.conn("bravo"), SERVICE, "alpha", 1, LONG)


@pytest.mark.parametrize("lift", [
    ("SET default_transaction_read_only = off",),
    ("BEGIN READ WRITE",),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",),
])
def test_the_application_role_cannot_lift_the_guard(service_db: ServiceDb,
                                                    lift: tuple[str]) -> None:
    make_primary(service_db)
    run_steps(fence_steps(service_db.db, "alpha")[:2])  # revoke the lease; database read-only
    with app(service_db) as conn:
        refused(conn, "INSERT INTO items (note) VALUES ('plain')", READ_ONLY)
        for statement in lift:
            conn.execute(statement.encode())
        # Read-only is lifted; the guard still refuses.
        assert "fenced at epoch 1" in refused(conn, "INSERT INTO items (note) VALUES ('lifted')")


def test_altering_its_own_role_does_not_lift_the_guard(service_db: ServiceDb) -> None:
    make_primary(service_db)
    run_steps(fence_steps(service_db.db, "alpha")[:2])
    try:
        with app(service_db) as conn:
            conn.execute("SET default_transaction_read_only = off")  # ALTER ROLE is a write
            conn.execute(f"ALTER ROLE {APP_ROLE} SET default_transaction_read_only = off")
        with app(service_db) as conn:  # a new session takes the role's setting
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
            assert row == ("off",)
            refused(conn, "INSERT INTO items (note) VALUES ('lifted')")
    finally:
        with service_db.admin("alpha") as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f"ALTER ROLE {APP_ROLE} RESET default_transaction_read_only")


def test_the_application_role_cannot_become_a_replica_session(service_db: ServiceDb) -> None:
    make_primary(service_db)
    with app(service_db) as conn:
        for door in ("SET session_replication_role = replica",
                     "SELECT set_config('session_replication_role', 'replica', false)",
                     f"ALTER ROLE {APP_ROLE} SET session_replication_role = replica"):
            refused(conn, door, PERMISSION_DENIED)
        refused(conn, "INSERT INTO items (note) VALUES ('still refused')")
        # Nor can it reach the lease: schema failover is not its to use.
        refused(conn, f"SELECT failover.renew_lease('{SERVICE}', 'alpha', 1, 60)",
                PERMISSION_DENIED)
        refused(conn, "ALTER TABLE items DISABLE TRIGGER failover_lease_guard",
                PERMISSION_DENIED)  # not the owner


def test_a_restarted_server_boots_fenced(service_db: ServiceDb) -> None:
    make_primary(service_db)
    renew_lease(service_db.db.conn("alpha"), SERVICE, "alpha", 1, LONG)
    with app(service_db) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('before the restart')")
    server = service_db.server("alpha")
    server.stop()  # what a supervisor does: pg_ctl stop, then start
    server.start()
    service_db.db.forget("alpha")
    controller = service_db.db.conn("alpha")
    state = lease_state(controller, SERVICE)
    assert not state.writer and state.refused is not None
    assert state.refused.startswith("server restarted since the lease was granted")
    with app(service_db) as conn:
        assert "server restarted" in refused(conn, "INSERT INTO items (note) VALUES ('after')")
        assert renew_lease(controller, SERVICE, "alpha", 1, LONG).writer
        conn.execute("INSERT INTO items (note) VALUES ('renewed')")


def rows_noted(sdb: ServiceDb, note: str) -> int:
    with sdb.admin("alpha") as conn:
        row = conn.execute("SELECT count(*) FROM items WHERE note = %s", [note]).fetchone()
    assert row is not None
    return int(str(row[0]))


@pytest.mark.parametrize("isolation", [psycopg.IsolationLevel.REPEATABLE_READ,
                                       psycopg.IsolationLevel.SERIALIZABLE])
def test_a_transaction_longer_than_the_lease_writes_while_it_is_renewed(
        service_db: ServiceDb, isolation: psycopg.IsolationLevel) -> None:
    """Its snapshot holds the lease row as it first saw it; the guard reads the end as it
    is now."""
    make_primary(service_db)
    controller = service_db.db.conn("alpha")
    renew_lease(controller, SERVICE, "alpha", 1, 0.5)
    with app(service_db, isolation=isolation) as conn:
        conn.execute("SELECT count(*) FROM items")  # the snapshot is taken here
        for _ in range(6):  # 1.2 s: the lease first seen has ended, renewed ones have not
            time.sleep(0.2)
            renew_lease(controller, SERVICE, "alpha", 1, 0.5)
        conn.execute("INSERT INTO items (note) VALUES ('long transaction')")
        conn.commit()
    assert rows_noted(service_db, "long transaction") == 1


FENCED_OR_ENDED = "(fenced at epoch 1|lease expired at )"  # as each isolation level sees it


@pytest.mark.parametrize("isolation", [psycopg.IsolationLevel.READ_COMMITTED,
                                       psycopg.IsolationLevel.REPEATABLE_READ])
def test_a_transaction_that_wrote_under_the_lease_cannot_commit_after_a_fence(
        service_db: ServiceDb, isolation: psycopg.IsolationLevel) -> None:
    make_primary(service_db)
    controller = service_db.db.conn("alpha")
    renew_lease(controller, SERVICE, "alpha", 1, LONG)
    with app(service_db, isolation=isolation) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('before the fence')")
        revoke_lease(controller, SERVICE, None)
        # A REPEATABLE READ snapshot still shows the lease and no fence, but the lease's end
        # is read as it is now.
        assert re.search(FENCED_OR_ENDED, refused(conn, "INSERT INTO items (note) VALUES ('after')"))
    with app(service_db, isolation=isolation) as conn:
        lift_fence(controller, SERVICE, 1, LONG)
        conn.execute("INSERT INTO items (note) VALUES ('before the fence')")
        revoke_lease(controller, SERVICE, None)
        with pytest.raises(psycopg.Error) as caught:
            conn.commit()
        assert caught.value.sqlstate == WRITE_REFUSED
        assert re.fullmatch("commit refused: writes to service shop ended on region alpha "
                            f"before this transaction committed: {FENCED_OR_ENDED}.*",
                            str(caught.value.diag.message_primary))
    assert rows_noted(service_db, "before the fence") == 0


def test_a_transaction_cannot_commit_after_its_lease_ran_out_unrenewed(
        service_db: ServiceDb) -> None:
    """An isolated writer whose controller is gone: nobody fences it, the lease runs out."""
    make_primary(service_db)
    controller = service_db.db.conn("alpha")
    renew_lease(controller, SERVICE, "alpha", 1, 0.5)
    with app(service_db, isolation=psycopg.IsolationLevel.READ_COMMITTED) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('outlived its lease')")
        time.sleep(0.7)
        with pytest.raises(psycopg.Error) as caught:
            conn.commit()
        assert caught.value.sqlstate == WRITE_REFUSED
        assert "lease expired at" in str(caught.value.diag.message_primary)
    assert rows_noted(service_db, "outlived its lease") == 0


def test_tables_created_later_are_guarded_even_from_their_owner(service_db: ServiceDb) -> None:
    make_primary(service_db)
    with superuser(service_db) as conn:
        conn.execute("CREATE TABLE later (id int PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE parts (id int, note text) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (100)")
        conn.execute(f"GRANT INSERT ON later, parts, parts_low TO {APP_ROLE}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {APP_ROLE}")
        guarded = {str(row[0]) for row in conn.execute(
            "SELECT tgrelid::regclass FROM pg_trigger WHERE tgname = 'failover_lease_guard' "
            "AND tgenabled = 'O'").fetchall()}
    assert {"later", "parts", "parts_low", "items", "events", "orders"} <= guarded
    assert not guarded & {"failover.heartbeat", "failover.lease", "failover.node_state"}
    with app(service_db) as conn:
        for statement in ("INSERT INTO later VALUES (1, 'x')",
                          "INSERT INTO parts VALUES (1, 'x')",
                          "INSERT INTO parts_low VALUES (2, 'a partition, written directly')"):
            refused(conn, statement)
        conn.execute("CREATE TABLE mine (id int)")  # the application owns this one
        refused(conn, "INSERT INTO mine VALUES (1)")
        for disable in ("ALTER TABLE mine DISABLE TRIGGER failover_lease_guard",
                        "ALTER TABLE mine DISABLE TRIGGER ALL",
                        "ALTER TABLE mine ENABLE ALWAYS TRIGGER failover_lease_guard",
                        "ALTER TABLE mine ENABLE REPLICA TRIGGER failover_lease_guard"):
            assert "must stay enabled" in refused(conn, disable, PERMISSION_DENIED)
        conn.execute("DROP TRIGGER failover_lease_guard ON mine")  # it comes back at once
        refused(conn, "INSERT INTO mine VALUES (1)")

        renew_lease(service_db.db.conn("alpha"), SERVICE, "alpha", 1, LONG)
        conn.execute("INSERT INTO mine VALUES (1)")
        conn.execute("INSERT INTO parts_low VALUES (3, 'with the lease')")


def test_a_subscriber_refuses_application_writes_while_replication_applies(
        replicated: ServiceDb) -> None:
    with replicated.admin("alpha") as conn:
        conn.execute(f"GRANT TRUNCATE ON items TO {APP_ROLE}")
    with app(replicated, "bravo") as conn:
        conn.execute("SET default_transaction_read_only = off")
        message = refused(conn, "INSERT INTO items (note) VALUES ('on a subscriber')")
        assert message == ("writes to service shop refused on region bravo: "
                           "not the recorded writer (role subscriber)")
    write_rows(replicated, "alpha", 3, "replicated")  # as the application, on the writer
    with app(replicated, "alpha") as conn:
        conn.execute("UPDATE items SET note = note || '!' WHERE note = 'replicated0'")
        conn.execute("DELETE FROM events WHERE note = 'replicated1'")
    for region in ("bravo", "charlie"):
        replicated.wait_same("alpha", region)
    assert [row[1] for row in replicated.rows("bravo", "items")] == [
        "replicated0!", "replicated1", "replicated2"]
    with app(replicated, "alpha") as conn:
        conn.execute("TRUNCATE items")
    replicated.wait_same("alpha", "bravo", tables=("items",))
    assert replicated.rows("bravo", "items") == []


def test_revoke_raises_the_epoch_and_stale_renewals_and_unfences_are_refused(
        service_db: ServiceDb) -> None:
    make_primary(service_db)
    controller = service_db.db.conn("alpha")
    renew_lease(controller, SERVICE, "alpha", 1, LONG)

    fenced = revoke_lease(controller, SERVICE, 3)
    assert (fenced.epoch, fenced.writer, fenced.refused) == (3, False, "fenced at epoch 3")
    with app(service_db) as conn:
        refused(conn, "INSERT INTO items (note) VALUES ('fenced')")
    with pytest.raises(SafetyRefusal, match=r"stale epoch 1 .* already recorded epoch 3"):
        renew_lease(controller, SERVICE, "alpha", 1, LONG)
    with pytest.raises(SafetyRefusal, match="stale epoch 1"):
        lift_fence(controller, SERVICE, 1, LONG)
    with pytest.raises(SafetyRefusal, match="stale epoch 1"):
        run_steps(unfence_steps(service_db.db, "alpha", epoch=1))
    with pytest.raises(SafetyRefusal, match="stale epoch 2"):
        revoke_lease(controller, SERVICE, 2)
    with pytest.raises(SafetyRefusal, match="epoch 4 of service shop is not recorded"):
        renew_lease(controller, SERVICE, "alpha", 4, LONG)
    with pytest.raises(SafetyRefusal, match="unfence at epoch 4 refused"):
        lift_fence(controller, SERVICE, 4, LONG)
    assert renew_lease(controller, SERVICE, "alpha", 3, LONG).refused == "fenced at epoch 3"
    with app(service_db) as conn:  # nothing above changed anything
        refused(conn, "INSERT INTO items (note) VALUES ('still fenced')")

    run_steps(unfence_steps(service_db.db, "alpha", lease_ttl=LONG))  # at the recorded epoch: 3
    state = lease_state(controller, SERVICE)
    assert (state.epoch, state.writer) == (3, True)
    with app(service_db) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('unfenced at 3')")

    run_steps(fence_steps(service_db.db, "alpha", epoch=5))
    with pytest.raises(psycopg.OperationalError):  # refused logins, as before
        app(service_db)
    with pytest.raises(SafetyRefusal, match="stale epoch 3"):
        run_steps(unfence_steps(service_db.db, "alpha", epoch=3))
    run_steps(unfence_steps(service_db.db, "alpha", epoch=5, lease_ttl=LONG))
    with app(service_db) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('unfenced at 5')")


def test_an_epoch_is_claimed_once_but_a_rerun_by_its_claimant_passes(
        service_db: ServiceDb) -> None:
    for region in ("bravo", "charlie"):
        with service_db.admin(region) as conn:
            record_role(conn, SERVICE, "subscriber", 1)
    bravo = service_db.db.conn("bravo")
    assert check_claim(bravo, SERVICE, 2, "bravo", region="bravo") == 1
    step = take_writer_role_step(service_db.db, "bravo", 2, lease_ttl=LONG)
    step.run()
    step.run()  # a rerun after a crash: the same claimant at the same epoch
    assert check_claim(bravo, SERVICE, 2, "bravo", region="bravo") == 2
    assert lease_state(bravo, SERVICE).writer
    with pytest.raises(SafetyRefusal, match="epoch 2 of service shop is already taken on this "
                                            "node \\(claimed by bravo\\): charlie cannot claim"):
        check_claim(bravo, SERVICE, 2, "charlie", region="bravo")
    with pytest.raises(SafetyRefusal, match="stale epoch 1"):
        check_claim(bravo, SERVICE, 1, "bravo", region="bravo")

    # An epoch a fence raised is taken too: only a higher one may be claimed.
    charlie = service_db.db.conn("charlie")
    revoke_lease(charlie, SERVICE, 3)
    with pytest.raises(SafetyRefusal, match="recorded by a fence or a re-point"):
        take_writer_role_step(service_db.db, "charlie", 3).run()
    assert check_claim(charlie, SERVICE, 4, "charlie", region="charlie") == 3


def test_a_second_promotion_at_the_same_epoch_is_refused(replicated: ServiceDb) -> None:
    for thread in replicated.heartbeats:
        thread.stop()
    write_rows(replicated, "alpha", 2, "before")
    for region in ("bravo", "charlie"):
        replicated.wait_same("alpha", region)
    probe(replicated, "bravo", "charlie")
    replicated.server("alpha").kill()
    plan = promotion_steps(replicated.db, "bravo")
    run_steps(plan.steps)
    # charlie follows bravo at that epoch; a plan that picked the same epoch for it is refused
    rival = promotion_steps(replicated.db, "charlie", epoch=plan.epoch)
    with pytest.raises(SafetyRefusal, match=f"epoch {plan.epoch} of service shop is already taken"):
        run_steps(rival.steps)
    with replicated.admin("bravo") as conn:
        assert lease_state(conn, SERVICE).writer  # nothing was fenced
    write_rows(replicated, "bravo", 1, "after")


@contextmanager
def version_1_database(sdb: ServiceDb, owner: str = "postgres") -> Iterator[str]:
    """A new database on alpha with only version 1 of the schema, as an older release left it:
    alpha the primary at epoch 4, one row written."""
    dbname = f"v1_{uuid.uuid4().hex[:8]}"
    server = sdb.server("alpha")
    with server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{owner}"')
    try:
        with psycopg.connect(server.conninfo(dbname, user=owner), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, note text NOT NULL)")
            conn.execute(f"GRANT SELECT, INSERT ON items TO {APP_ROLE}")
            conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
            with conn.transaction():
                conn.execute("CREATE SCHEMA failover")
                conn.execute("CREATE TABLE failover.schema_version (version integer PRIMARY KEY, "
                             "name text NOT NULL, installed_at timestamptz NOT NULL DEFAULT "
                             "clock_timestamp())")
                first = schema_versions()[0]
                conn.execute(first.text.encode())
                conn.execute("INSERT INTO failover.schema_version (version, name) VALUES (1, %s)",
                             [first.name])
                conn.execute("INSERT INTO failover.node_state (service, region, role, epoch) "
                             "VALUES (%s, 'alpha', 'primary', 4)", [SERVICE])
            conn.execute("INSERT INTO items (note) VALUES ('written under version 1')")
        yield dbname
    finally:
        with server.connect() as conn:
            conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')


def test_install_upgrades_a_version_1_database_and_is_idempotent(service_db: ServiceDb) -> None:
    server = service_db.server("alpha")
    with version_1_database(service_db) as dbname, server.connect(dbname) as conn:
        assert installed_version(conn) == 1
        assert install(conn, SERVICE, "alpha") == [v.name for v in schema_versions()[1:]]
        assert install(conn, SERVICE, "alpha") == []
        assert installed_version(conn) == schema_versions()[-1].version
        with pytest.raises(FailoverError, match="a database holds one service"):
            install(conn, "another", "alpha")
        state = lease_state(conn, SERVICE)
        assert (state.epoch, state.writer) == (4, False)  # kept, and fenced until renewed
        with psycopg.connect(server.conninfo(dbname, user=APP_ROLE), autocommit=True) as writer:
            refused(writer, "INSERT INTO items (note) VALUES ('no lease yet')")
            renew_lease(conn, SERVICE, "alpha", 4, LONG)
            writer.execute("INSERT INTO items (note) VALUES ('with the lease')")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (2,)
        published = {str(row[0]) for row in conn.execute(
            "SELECT failover.publishable_tables()::text").fetchall()}
        assert published == {"items", "failover.heartbeat", "failover.sequence_snapshot"}

        # A table made where event triggers do not fire is guarded by the next install.
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("CREATE TABLE unguarded (id int)")
        assert install(conn, SERVICE, "alpha") == []
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'unguarded'::regclass "
                            "AND tgname = 'failover_lease_guard'").fetchone() == (1,)


def test_install_says_it_needs_a_superuser(service_db: ServiceDb) -> None:
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    server = service_db.server("alpha")
    with server.connect() as conn:
        conn.execute(f'CREATE ROLE "{owner}" LOGIN')
    try:
        with version_1_database(service_db, owner) as dbname, psycopg.connect(
                server.conninfo(dbname, user=owner), autocommit=True) as conn:
            with pytest.raises(UserError, match="installs as a superuser"):
                install(conn, SERVICE, "alpha")
            assert installed_version(conn) == 1  # nothing of version 2 stayed
    finally:
        with server.connect() as conn:
            conn.execute(f'DROP ROLE "{owner}"')


def test_db_lease_shows_which_region_takes_writes(replicated: ServiceDb, tmp_path: Path) -> None:
    topology = write_topology(replicated, tmp_path / "topology")
    shown = subprocess.run([sys.executable, "-m", "failover", "db", "lease", SERVICE, "-t",
                            str(topology), "--json"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert shown.returncode == 0, shown.stderr
    regions = json.loads(shown.stdout)["regions"]
    assert regions["alpha"]["writer"] and regions["alpha"]["seconds_left"] > 0
    for region in ("bravo", "charlie"):
        assert regions[region]["refused"] == "not the recorded writer (role subscriber)"
