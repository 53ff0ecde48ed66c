"""Rejoin of a returning old primary after an unplanned promotion, on real servers."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from failover.controller.steps import BuiltPlan, StepFactory, StepKind
from failover.engine import RejoinRegion
from failover.postgres.fence import unfence_steps
from failover.postgres.inspect import inspect_node
from failover.postgres.promote import promotion_steps
from failover.postgres.rejoin import DECODE_TIMEOUT_SECONDS, decode_lost, rejoin_steps
from failover.postgres.steps import run_steps
from failover.postgres.switchover import switchover_steps
from failover.topology import load_topology
from tests.support.pg import APP_TABLES, SERVICE, ServiceDb, probe, write_rows, write_topology

pytestmark = pytest.mark.integration


def test_rejoin_lists_exactly_the_lost_rows_then_resyncs(replicated: ServiceDb,
                                                         tmp_path: Path) -> None:
    write_rows(replicated, "alpha", 3, "seen")
    replicated.wait_same("alpha", "bravo")
    probe(replicated, "bravo")
    with replicated.admin("bravo") as conn:  # bravo stops receiving (a partition)
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER SUBSCRIPTION failover_shop DISABLE")
    write_rows(replicated, "alpha", 2, "lost")
    replicated.server("alpha").kill()
    run_steps(promotion_steps(replicated.db, "bravo", allow_data_loss=True).steps)
    replicated.start_heartbeat("bravo")
    write_rows(replicated, "bravo", 2, "new")

    replicated.server("alpha").start()  # it comes back, still believing it is the primary
    lost_file = tmp_path / "lost.json"
    plan = rejoin_steps(replicated.db, "alpha", lost_file=lost_file)
    assert plan.primary == "bravo"
    run_steps(plan.steps)

    document = json.loads(lost_file.read_text())
    lost = {(change["table"], change["columns"]["note"])
            for txn in document["transactions"] for change in txn["changes"]}
    assert document["complete"] is True
    assert lost == {(f"public.{table}", f"lost{i}") for table in APP_TABLES for i in range(2)}

    replicated.wait_synced("alpha")
    replicated.wait_same("bravo", "alpha")
    with replicated.admin("alpha") as conn:
        alpha = inspect_node(conn, SERVICE)
        slots = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
    assert slots == (0,)
    assert (alpha.role, alpha.fenced) == ("subscriber", True)
    # A rerun (say after a crash) keeps the file and changes nothing.
    run_steps(rejoin_steps(replicated.db, "alpha", lost_file=lost_file).steps)
    assert json.loads(lost_file.read_text()) == document


def test_decoded_changes_keep_new_rows_nulls_and_quotes_and_skip_bookkeeping() -> None:
    rows = [
        ("0/10", "700", "BEGIN 700"),
        ("0/11", "700", "table failover.heartbeat: UPDATE: service[text]:'shop'"),
        ("0/12", "700", "table public.items: UPDATE: old-key: id[bigint]:1 new-tuple: "
                        "id[bigint]:2 note[text]:'it''s'"),
        ("0/13", "700", "table public.items: DELETE: id[bigint]:3"),
        ("0/14", "700", "table public.items: INSERT: id[bigint]:4 note[text]:null"),
        ("0/20", "700", "COMMIT 700 (at 2026-11-27 01:00:00.1+00)"),
        ("0/30", "701", "BEGIN 701"),
        ("0/31", "701", "table failover.heartbeat: UPDATE: service[text]:'shop'"),
        ("0/40", "701", "COMMIT 701 (at 2026-11-27 01:00:01.1+00)"),
    ]
    lost = decode_lost(rows, after=0x15)
    assert [t.xid for t in lost] == ["700"]  # 701 only touched failover's own tables
    assert [(c.operation, c.columns) for c in lost[0].changes] == [
        ("UPDATE", {"id": "2", "note": "it's"}),
        ("DELETE", {"id": "3"}),
        ("INSERT", {"id": "4", "note": None}),
    ]
    assert lost[0].committed_at == "2026-11-27 01:00:00.1+00"
    assert decode_lost(rows, after=0x20) == []  # committed at or before the cutoff


def _alpha_crashed_promoted_and_back(replicated: ServiceDb, tmp_path: Path
                                     ) -> tuple[StepFactory, BuiltPlan, int]:
    """alpha's server dies, bravo is promoted, alpha's server starts again: the controller's
    steps for the engine's RejoinRegion(serve_after=True), built, not run yet."""
    replicated.server("alpha").kill()
    run_steps(promotion_steps(replicated.db, "bravo", allow_data_loss=True).steps)
    replicated.start_heartbeat("bravo")
    replicated.server("alpha").start()
    topo = load_topology(write_topology(replicated, tmp_path / "topology"))
    epoch = inspect_node(replicated.db.conn("bravo"), SERVICE).epoch
    factory = StepFactory(topo, None, reconciliation_dir=tmp_path / "reconciliation")
    built = factory.build([RejoinRegion(SERVICE, epoch, "alpha", "test", serve_after=True)])
    return factory, built, epoch


def test_an_automatic_rejoin_leaves_a_serving_subscriber_that_takes_no_writes(
        replicated: ServiceDb, tmp_path: Path) -> None:
    """The steps the controller builds for the engine's RejoinRegion(serve_after=True)."""
    write_rows(replicated, "alpha", 2, "seen")
    replicated.wait_same("alpha", "bravo")
    probe(replicated, "bravo")
    factory, built, epoch = _alpha_crashed_promoted_and_back(replicated, tmp_path)
    # Decoding a long-orphaned slot may take minutes: the plan's watchdog allows for it.
    assert {s.deadline for s in built.steps if s.kind is StepKind.REJOIN} == {
        factory.step_deadline + DECODE_TIMEOUT_SECONDS}
    try:
        for step in built.steps:
            step.run()
    finally:
        built.close()
    assert (tmp_path / "reconciliation" / f"{SERVICE}-alpha-e{epoch}.json").exists()

    replicated.wait_synced("alpha")
    write_rows(replicated, "bravo", 2, "after")
    replicated.wait_same("bravo", "alpha")
    with replicated.admin("alpha") as conn:
        alpha = inspect_node(conn, SERVICE)
    assert (alpha.role, alpha.fenced, alpha.epoch) == ("subscriber", False, epoch)
    with pytest.raises(psycopg.Error) as refused:  # serves reads, takes no application write
        write_rows(replicated, "alpha", 1, "stray")
    assert refused.value.sqlstate in ("FO003", "25006")


@pytest.mark.parametrize("by", ["fleet", "operator"])
@pytest.mark.parametrize("caught_up", [True, False], ids=["caught-up", "still-copying"])
@pytest.mark.parametrize("target", ["alpha", "charlie"])
def test_a_switchover_right_after_a_rejoin_moves_the_writer(
        replicated: ServiceDb, tmp_path: Path, target: str, caught_up: bool, by: str) -> None:
    """Back to the rejoined region, or on to the third: the rejoined region's slot on the
    writer is in use by its subscription (maybe still copying) when the switchover starts.
    Rejoined by the fleet (RejoinRegion with serve_after), or by `failover rejoin` and
    `failover unfence` as an operator does."""
    _, built, _ = _alpha_crashed_promoted_and_back(replicated, tmp_path)
    try:
        if by == "fleet":
            for step in built.steps:
                step.run()
    finally:
        built.close()
    if by == "operator":
        replicated.db.close()
        run_steps(rejoin_steps(replicated.db, "alpha", lost_file=tmp_path / "lost.json").steps)
        run_steps(unfence_steps(replicated.db, "alpha"))
    if caught_up:
        replicated.wait_synced("alpha")
        write_rows(replicated, "bravo", 2, "before")
        replicated.wait_same("bravo", "alpha")
        replicated.wait_same("bravo", "charlie")

    replicated.db.close()  # a new plan: alpha was unreachable during the last one
    plan = switchover_steps(replicated.db, target)
    run_steps(plan.steps)
    with replicated.admin(target) as conn:
        assert inspect_node(conn, SERVICE).role == "primary"
    replicated.start_heartbeat(target)
    write_rows(replicated, target, 2, "after")
    for region in {"alpha", "bravo", "charlie"} - {target}:
        replicated.wait_same(target, region)
