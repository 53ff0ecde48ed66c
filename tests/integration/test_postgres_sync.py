"""Durability "sync" on real servers: the writer's commits wait for its subscribers, each
subscription reports its own name, and a promotion proves it keeps every acknowledged commit.

synchronous_standby_names is server-wide and the servers are shared by the session's
tests, so every test here leaves it empty again before its database is dropped (a DROP
DATABASE on a writer that waits for standbys no longer there would wait for ever).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from failover.engine import SyncStandbys
from failover.errors import SafetyRefusal
from failover.postgres.inspect import inspect_node
from failover.postgres.lease import renew_lease
from failover.postgres.names import standby_name
from failover.postgres.promote import promotion_steps
from failover.postgres.replicate import replication_steps
from failover.postgres.replication import subscription_conninfo
from failover.postgres.state import recorded_epoch
from failover.postgres.steps import SqlStep, run_steps
from failover.postgres.sync import read_sync_standbys, sync_standbys_step
from tests.support.pg import (
    SERVICE,
    ServiceDb,
    probe,
    replicate_from_alpha,
    wait_until,
    write_rows,
)

pytestmark = pytest.mark.integration

BOTH = SyncStandbys(tuple(sorted(standby_name(SERVICE, r) for r in ("bravo", "charlie"))), 1)
PROOF_STEP = "check that the target holds every acknowledged commit"


@pytest.fixture
def sync_db(service_db: ServiceDb) -> Iterator[ServiceDb]:
    """alpha publishing to bravo and charlie; synchronous_standby_names emptied afterwards
    on every server (restarted first if the test killed it)."""
    try:
        replicate_from_alpha(service_db)
        yield service_db
    finally:
        service_db.cluster.restart_dead()
        for server in service_db.cluster.servers.values():
            with server.connect() as conn:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                conn.execute("SELECT pg_reload_conf()")


def wait_for_standbys(sdb: ServiceDb, standbys: SyncStandbys) -> None:
    run_steps([sync_standbys_step(sdb.db, "alpha", recorded_epoch(sdb.db.conn("alpha"), SERVICE),
                                  standbys)])


def stop_applying(sdb: ServiceDb, region: str) -> None:
    """Disable `region`'s subscription and wait until its walsender on alpha is gone."""
    with sdb.admin(region) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SUBSCRIPTION failover_shop DISABLE")
    name = standby_name(SERVICE, region)

    def gone() -> bool:
        with sdb.admin("alpha") as conn:
            return conn.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = %s",
                                [name]).fetchone() is None
    wait_until(gone, what=f"{region}'s walsender on alpha to exit")


def timed_insert(sdb: ServiceDb, note: str) -> float:
    with psycopg.connect(sdb.app_conninfo("alpha"), autocommit=True) as conn:
        started = time.monotonic()
        conn.execute("INSERT INTO items (note) VALUES (%s)", [note])
        return time.monotonic() - started


def notes_on(sdb: ServiceDb, region: str) -> set[str]:
    return {str(row[-1]) for row in sdb.rows(region, "items")}


def test_each_subscription_reports_its_own_name_to_the_writer(sync_db: ServiceDb) -> None:
    with sync_db.admin("alpha") as conn:
        names = conn.execute("SELECT application_name FROM pg_stat_replication "
                             "ORDER BY 1").fetchall()
    assert [str(row[0]) for row in names] == ["failover_shop_bravo", "failover_shop_charlie"]
    with sync_db.admin("bravo") as conn:
        row = conn.execute("SELECT subsynccommit FROM pg_subscription").fetchone()
    assert row == ("on",)


def test_an_existing_subscription_gets_its_name_from_db_replicate(sync_db: ServiceDb) -> None:
    """Made before names (the subscription's own name reported) and with the default
    synchronous_commit: `db replicate` gives it both and it keeps applying."""
    with sync_db.admin("charlie") as conn:
        conn.execute("SET default_transaction_read_only = off")
        current = subscription_conninfo(conn, SERVICE)
        assert current is not None
        conn.execute(sql.SQL("ALTER SUBSCRIPTION failover_shop CONNECTION {}").format(
            sql.Literal(current.replace("application_name=failover_shop_charlie", ""))))
        conn.execute("ALTER SUBSCRIPTION failover_shop SET (synchronous_commit = 'off')")
    results = run_steps(replication_steps(sync_db.db, "alpha").steps)
    assert "now with application_name failover_shop_charlie and synchronous_commit = on" in \
        results[-1].detail

    def reported() -> bool:
        with sync_db.admin("alpha") as conn:
            return conn.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = "
                                "'failover_shop_charlie'").fetchone() is not None
    wait_until(reported, what="charlie's walsender to report its name")
    write_rows(sync_db, "alpha", 2, "upgraded")
    sync_db.wait_same("alpha", "charlie")


def test_a_sync_writer_commits_while_one_standby_confirms_and_waits_without_one(
        sync_db: ServiceDb) -> None:
    sync_db.stop_background_writes("alpha")
    wait_for_standbys(sync_db, BOTH)
    with sync_db.admin("alpha") as conn:
        assert read_sync_standbys(conn) == BOTH
        states = conn.execute("SELECT application_name, sync_state FROM pg_stat_replication "
                              "ORDER BY 1").fetchall()
    assert [tuple(map(str, row)) for row in states] == [
        ("failover_shop_bravo", "quorum"), ("failover_shop_charlie", "quorum")]
    assert timed_insert(sync_db, "both") < 5
    stop_applying(sync_db, "bravo")
    assert timed_insert(sync_db, "charlie confirms") < 5
    stop_applying(sync_db, "charlie")

    # No named standby applies: the commit waits (statement_timeout does not end that wait:
    # PostgreSQL stops the statement timer before it commits).
    warnings: list[str] = []
    blocked = psycopg.connect(sync_db.app_conninfo("alpha"), autocommit=True,
                              options="-c statement_timeout=1000")
    blocked.add_notice_handler(lambda notice: warnings.append(str(notice.message_primary)))
    done = threading.Event()
    writer = threading.Thread(target=lambda: (blocked.execute(
        "INSERT INTO items (note) VALUES ('unconfirmed')"), done.set()), daemon=True)
    writer.start()
    try:
        assert not done.wait(3.0), "the commit did not wait for a standby"
        with sync_db.admin("alpha") as conn:
            row = conn.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                               [blocked.info.backend_pid]).fetchone()
        assert row == ("SyncRep",)
        # Failover's own commits (here a lease renewal) never wait for the standbys.
        started = time.monotonic()
        conn = sync_db.db.conn("alpha")
        renew_lease(conn, SERVICE, "alpha", recorded_epoch(conn, SERVICE), 300)
        assert time.monotonic() - started < 5
        # A client that gives up leaves the write indeterminate: committed here, on no
        # standby; the server says so.
        blocked.cancel_safe()
        assert done.wait(10.0)
    finally:
        writer.join(timeout=10)
        blocked.close()
    assert any("canceling wait for synchronous replication" in w for w in warnings), warnings
    assert "unconfirmed" in notes_on(sync_db, "alpha")
    assert "unconfirmed" not in notes_on(sync_db, "bravo") | notes_on(sync_db, "charlie")

    # Waiting for no standby, the writer commits alone again.
    wait_for_standbys(sync_db, SyncStandbys())
    assert timed_insert(sync_db, "async") < 5


def _proof_step(sdb: ServiceDb, target: str, *, allow_data_loss: bool = False) -> SqlStep:
    plan = promotion_steps(sdb.db, target, sync_standbys=BOTH, allow_data_loss=allow_data_loss)
    [step] = [step for step in plan.prepare if step.name == PROOF_STEP]
    return step


def test_a_sync_promotion_refuses_a_lagging_target_and_takes_the_most_advanced(
        sync_db: ServiceDb) -> None:
    """alpha waits for any one of bravo and charlie; charlie stops applying, so only bravo
    confirms the last commits (heartbeats included); alpha dies. Only bravo is proven to
    hold them all."""
    wait_for_standbys(sync_db, BOTH)
    stop_applying(sync_db, "charlie")
    write_rows(sync_db, "alpha", 3, "bravo only")
    probe(sync_db, "bravo", "charlie")
    sync_db.server("alpha").kill()

    with pytest.raises(SafetyRefusal, match=r"charlie applied [0-9A-F/]+, less than bravo "):
        run_steps([_proof_step(sync_db, "charlie")])
    [accepted] = run_steps([_proof_step(sync_db, "bravo")])
    assert "bravo holds every acknowledged commit" in accepted.detail
    assert "2 of 2 standbys read, 2 needed" in accepted.detail
    [forced] = run_steps([_proof_step(sync_db, "charlie", allow_data_loss=True)])
    assert "accepted with --allow-data-loss" in forced.detail

    # Without bravo, charlie alone cannot prove anything: n - k + 1 = 2 positions needed.
    sync_db.server("bravo").kill()
    sync_db.db.close()
    with pytest.raises(SafetyRefusal, match=r"read 1 of the 2 synchronous standbys \(charlie\), "
                                            r"2 needed"):
        run_steps([_proof_step(sync_db, "charlie")])

    sync_db.server("bravo").start()
    sync_db.db.close()
    run_steps(promotion_steps(sync_db.db, "bravo", sync_standbys=BOTH).steps)
    assert {"bravo only0", "bravo only1", "bravo only2"} <= notes_on(sync_db, "bravo")


def test_the_old_writers_own_setting_wins_when_it_answers(sync_db: ServiceDb) -> None:
    """The fleet's memory says ANY 1 of both; alpha, alive, says charlie alone: promoting
    bravo must prove against what alpha really waited for."""
    sync_db.stop_background_writes("alpha")

    def caught_up() -> bool:
        with sync_db.admin("bravo") as bravo, sync_db.admin("charlie") as charlie:
            return inspect_node(bravo, SERVICE).remote_lsn == inspect_node(
                charlie, SERVICE).remote_lsn
    wait_until(caught_up, what="bravo and charlie to apply the same")
    only_charlie = SyncStandbys((standby_name(SERVICE, "charlie"),), 1)
    wait_for_standbys(sync_db, only_charlie)
    [checked] = run_steps([_proof_step(sync_db, "bravo")])
    assert "ANY 1 (failover_shop_charlie) (alpha says)" in checked.detail
    wait_for_standbys(sync_db, SyncStandbys())
    [checked] = run_steps([_proof_step(sync_db, "bravo")])
    assert checked.detail == "the old writer's commits waited for no standby: nothing to prove"
