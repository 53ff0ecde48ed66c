"""Schema install, replication set-up and inspection on real servers."""

from __future__ import annotations

import pytest

from failover.errors import ConflictError
from failover.postgres.inspect import inspect_node
from failover.postgres.replicate import replication_steps
from failover.postgres.schema import install, installed_version, schema_versions
from failover.postgres.steps import run_steps
from tests.support.pg import SERVICE, ServiceDb, wait_until

pytestmark = pytest.mark.integration


def test_install_is_idempotent(service_db: ServiceDb) -> None:
    with service_db.admin("alpha") as conn:
        assert install(conn, SERVICE, "alpha") == []  # the fixture installed it already
        assert installed_version(conn) == schema_versions()[-1].version
        assert conn.execute("SELECT region, role FROM failover.node_state").fetchall() == [
            ("alpha", "unknown")]


def test_replicate_copies_and_streams_and_is_rerunnable(replicated: ServiceDb) -> None:
    with replicated.admin("alpha") as conn:
        conn.execute("INSERT INTO items (note) VALUES ('a'), ('b')")
    for region in ("bravo", "charlie"):
        replicated.wait_same("alpha", region)
    run_steps(replication_steps(replicated.db, "alpha").steps)  # a rerun changes nothing
    with replicated.admin("bravo") as conn:
        subs = conn.execute("SELECT subname, subslotname FROM pg_subscription").fetchall()
    assert subs == [("failover_shop", "failover_shop_bravo")]


def test_replicate_refuses_a_second_writer(replicated: ServiceDb) -> None:
    with pytest.raises(ConflictError, match="alpha is already the primary"):
        replication_steps(replicated.db, "bravo")


def test_inspect_reports_roles_and_lag(replicated: ServiceDb) -> None:
    with replicated.admin("alpha") as conn:
        primary = inspect_node(conn, SERVICE)
    assert (primary.role, primary.fenced, primary.lag_bytes) == ("primary", False, 0)

    def fresh() -> bool:
        with replicated.admin("bravo") as conn:
            status = inspect_node(conn, SERVICE)
        return status.worker_running and status.lag_seconds is not None \
            and status.lag_seconds < 2 and status.heartbeat_region == "alpha"
    wait_until(fresh, what="bravo to apply heartbeats")
    with replicated.admin("bravo") as conn:
        status = inspect_node(conn, SERVICE)
        assert status.role == "subscriber" and status.database_read_only
        assert status.remote_lsn is not None and status.publisher_lsn is not None
        assert not status.remembered
        replicated.server("alpha").kill()
        # Once the publisher is gone the worker exits; the position is remembered.
        wait_until(lambda: not inspect_node(conn, SERVICE).worker_running,
                   what="bravo's apply worker to exit")
        after = inspect_node(conn, SERVICE)
    assert after.remembered and after.publisher_lsn is not None
    assert after.remote_lsn == status.remote_lsn or after.remote_lsn is not None
    assert after.lag_seconds is not None and after.lag_seconds < 2
