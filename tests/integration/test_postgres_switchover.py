"""Planned switchover and fencing on real servers, under a concurrent writer."""

from __future__ import annotations

import threading

import psycopg
import pytest

from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.inspect import inspect_node
from failover.postgres.steps import SqlStep, run_steps
from failover.postgres.switchover import SwitchoverTimeout, switchover_steps
from tests.support.pg import SERVICE, ServiceDb, wait_until, write_rows

pytestmark = pytest.mark.integration

READ_ONLY = "25006"


class Writer(threading.Thread):
    """An application writing as fast as it can, moving to the other region on any error."""

    def __init__(self, sdb: ServiceDb, regions: tuple[str, str]) -> None:
        super().__init__(daemon=True)
        self.sdb, self.regions = sdb, regions
        self.acknowledged: list[tuple[str, str]] = []  # (region, note)
        self.stopping = threading.Event()

    def run(self) -> None:
        counter, current = 0, 0
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self.stopping.is_set():
            region = self.regions[current]
            try:
                if conn is None:
                    conn = psycopg.connect(self.sdb.app_conninfo(region), autocommit=True,
                                           connect_timeout=2)
                note = f"w{counter}"
                counter += 1
                conn.execute("INSERT INTO items (note) VALUES (%s)", [note])
                self.acknowledged.append((region, note))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn, current = None, 1 - current
                self.stopping.wait(0.01)
        if conn is not None:
            conn.close()


def app_write_fails(sdb: ServiceDb, region: str) -> bool:
    """True if the application cannot write on `region`, even after turning read-only off."""
    try:
        with psycopg.connect(sdb.app_conninfo(region), autocommit=True, connect_timeout=2) as c:
            c.execute("SET default_transaction_read_only = off")
            c.execute("INSERT INTO items (note) VALUES ('rogue')")
    except psycopg.Error:
        return True
    return False


def test_fence_cannot_be_undone_by_a_client_and_unfence_restores(replicated: ServiceDb) -> None:
    rogue = psycopg.connect(replicated.app_conninfo("alpha"), autocommit=True)
    rogue.execute("SET default_transaction_read_only = off")
    run_steps(fence_steps(replicated.db, "alpha"))
    with pytest.raises(psycopg.OperationalError):  # its session was terminated
        rogue.execute("INSERT INTO items (note) VALUES ('rogue')")
    rogue.close()
    assert app_write_fails(replicated, "alpha")  # and a new one cannot log in
    with replicated.admin("alpha") as conn:
        status = inspect_node(conn, SERVICE)
    assert status.fenced and status.database_read_only
    run_steps(unfence_steps(replicated.db, "alpha"))
    assert not app_write_fails(replicated, "alpha")


def test_switchover_under_writes_loses_nothing_and_reverses_the_flow(
        replicated: ServiceDb) -> None:
    writer = Writer(replicated, ("alpha", "bravo"))
    writer.start()
    wait_until(lambda: len(writer.acknowledged) > 50, what="the writer to get going")
    rogue = psycopg.connect(replicated.app_conninfo("alpha"), autocommit=True)
    rogue.execute("SET default_transaction_read_only = off")
    after_fence: list[bool] = []

    def check_fence(step: SqlStep) -> None:
        if step.name.startswith("write a marker"):  # the fence steps are done
            try:
                rogue.execute("INSERT INTO items (note) VALUES ('rogue')")
                after_fence.append(False)
            except psycopg.Error:
                after_fence.append(True)
            after_fence.append(app_write_fails(replicated, "alpha"))

    plan = switchover_steps(replicated.db, "bravo", timeout=20)
    assert (plan.old_primary, plan.subscribers) == ("alpha", ("charlie",))
    results = run_steps(plan.steps, before=check_fence)
    wait_until(lambda: any(region == "bravo" for region, _ in writer.acknowledged[-5:]),
               what="the writer to write on bravo")
    writer.stopping.set()
    writer.join(timeout=10)
    rogue.close()

    assert after_fence == [True, True]
    assert "clean hand-over" in next(r.detail for r in results if r.name.startswith("re-point"))
    on_bravo = [str(row[1]) for row in replicated.rows("bravo", "items")]
    acknowledged = [note for _, note in writer.acknowledged]
    assert set(acknowledged) <= set(on_bravo)  # every acknowledged write survived
    assert len(on_bravo) == len(set(on_bravo))
    assert "rogue" not in on_bravo
    # Writes now flow bravo -> alpha and bravo -> charlie, without a re-copy.
    for region in ("alpha", "charlie"):
        replicated.wait_same("bravo", region, tables=("items",))
    with replicated.admin("alpha") as conn:
        alpha = inspect_node(conn, SERVICE)
        slots = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
    assert (alpha.role, alpha.fenced, alpha.database_read_only) == ("subscriber", False, True)
    assert alpha.publisher is not None and alpha.publisher.startswith(
        replicated.server("bravo").host)
    assert slots == (0,)


def test_switchover_timeout_unfences_and_changes_nothing(replicated: ServiceDb) -> None:
    with replicated.admin("bravo") as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SUBSCRIPTION failover_shop DISABLE")  # bravo cannot catch up
    with pytest.raises(SwitchoverTimeout, match="alpha is unfenced"):
        run_steps(switchover_steps(replicated.db, "bravo", timeout=1).steps)
    with replicated.admin("alpha") as conn:
        alpha = inspect_node(conn, SERVICE)
    with replicated.admin("bravo") as conn:
        bravo = inspect_node(conn, SERVICE)
    assert (alpha.role, alpha.fenced, alpha.database_read_only) == ("primary", False, False)
    assert (bravo.role, bravo.subscription_present) == ("subscriber", True)
    assert not app_write_fails(replicated, "alpha")


def test_a_lagging_third_region_does_not_hold_the_switchover_and_is_resynced(
        replicated: ServiceDb) -> None:
    with replicated.admin("charlie") as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SUBSCRIPTION failover_shop DISABLE")  # charlie falls behind
    write_rows(replicated, "alpha", 3, "charlie-missed")
    results = run_steps(switchover_steps(replicated.db, "bravo", timeout=20).steps)
    drain = next(r for r in results if r.name.startswith("write a marker"))
    assert "charlie will be resynced" in drain.detail
    assert drain.seconds < 10  # far from the 20 s timeout: it did not wait for charlie
    assert "full resync" in next(r.detail for r in results if r.name.startswith("re-point"))
    write_rows(replicated, "bravo", 2, "after")
    replicated.wait_synced("charlie")
    replicated.wait_same("bravo", "charlie")
