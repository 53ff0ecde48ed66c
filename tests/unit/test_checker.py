"""The safety checker's judgement on hand-made logs and database contents."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from failover.lab.checker import (
    NodeRecord,
    Observation,
    StoredRow,
    analyse,
    current_writer,
    reconciled_ids,
)
from failover.lab.writers import Write, classify
from failover.postgres.rejoin import decode_lost

RUN = 7
A, B, C = "us-east-1", "us-west-2", "eu-west-1"


def acked(client: str, seq: int, at: float, epoch: int, region: str | None = None,
          role: str = "primary") -> Write:
    return Write(RUN, client, seq, at - 0.01, at, "acked", server_region=region or client,
                 server_epoch=epoch, server_role=role)


def stored(w: Write, written_at: str = "t") -> StoredRow:
    assert w.server_region is not None and w.server_epoch is not None
    return StoredRow(RUN, w.client, w.seq, w.server_region, w.server_epoch,
                     w.server_role or "primary", written_at)


def after_failover(rows: dict[str, list[StoredRow]], *,
                   reconciled: set[tuple[int, str, int]] | None = None,
                   unreadable: dict[str, str] | None = None) -> Observation:
    """B took over from A at epoch 2; A came back fenced, C is a subscriber."""
    nodes = {A: NodeRecord("primary", 1, True), B: NodeRecord("primary", 2, False),
             C: NodeRecord("subscriber", 2, False)}
    return Observation(rows=rows, nodes=nodes, unreadable=unreadable or {},
                       reconciled=reconciled or set(),
                       writable={A: "28000: role not permitted to log in", B: None,
                                 C: "25006: read-only"})


def test_a_clean_failover_is_judged_clean() -> None:
    old = [acked(A, i, 1.0 + i, 1) for i in range(5)]
    new = [acked(B, i, 10.0 + i, 2) for i in range(5)]
    report = analyse(old + new, after_failover({B: [stored(w) for w in old + new], A: [], C: []}))
    assert (report.split_brain_writes, report.lost_acknowledged, report.duplicates) == (0, 0, 0)
    assert report.writer == B and report.primaries == [B]
    assert report.writable_regions == [B] and report.writable_regions_after == 1
    assert report.not_writable[A].startswith("28000")
    assert report.per_client[A] == {"acked": 5, "failed": 0, "indeterminate": 0}


def test_an_old_writer_acknowledging_after_the_new_writers_first_write_is_split_brain() -> None:
    first_new = acked(B, 0, 10.0, 2)
    late = acked(A, 9, 10.5, 1)
    early = acked(A, 8, 9.5, 1)
    report = analyse([early, first_new, late],
                     after_failover({B: [stored(first_new), stored(early)], A: [stored(late)]},
                                    reconciled={late.id}))
    assert report.split_brain_writes == 1
    example = report.examples["split_brain"][0]
    assert (example["client"], example["seq"], example["epoch"]) == (A, 9, 1)
    assert example["after"] == {"region": B, "epoch": 2, "first_acked_at": 10.0}
    # The rejoin set the late write aside: split brain, but not lost.
    assert report.lost_acknowledged == 0 and report.reconciled == 1


def test_a_writer_coming_back_at_a_newer_epoch_is_no_split_brain() -> None:
    writes = [acked(A, 0, 1.0, 1), acked(B, 0, 10.0, 2), acked(A, 1, 20.0, 3)]
    nodes = {A: NodeRecord("primary", 3, False), B: NodeRecord("subscriber", 3, False)}
    report = analyse(writes, Observation(rows={A: [stored(w) for w in writes]}, nodes=nodes))
    assert report.split_brain_writes == 0 and report.lost_acknowledged == 0
    assert report.writer == A


def test_a_pinned_client_reaching_another_region_is_judged_by_the_server_it_reached() -> None:
    # The client of C got its ack from B (a proxy, say): B's write, not C's.
    writes = [acked(A, 0, 1.0, 1), acked(C, 0, 2.0, 2, region=B), acked(A, 1, 3.0, 1)]
    report = analyse(writes, after_failover({B: [stored(w) for w in writes]}))
    assert report.split_brain_writes == 1
    assert report.examples["split_brain"][0]["client"] == A


def test_lost_is_what_the_writer_lacks_and_no_rejoin_set_aside() -> None:
    kept, set_aside, gone = acked(A, 0, 1.0, 1), acked(A, 1, 1.1, 1), acked(A, 2, 1.2, 1)
    report = analyse([kept, set_aside, gone],
                     after_failover({B: [stored(kept)]}, reconciled={set_aside.id}))
    assert report.lost_acknowledged == 1 and report.reconciled == 1
    assert report.examples["lost"][0]["seq"] == 2


def test_a_reconciliation_file_listing_what_the_writer_has_is_reported() -> None:
    """The file must list exactly what the writer lacks: an entry the writer also holds
    would be applied twice by whoever reconciles."""
    kept, aside = acked(A, 0, 1.0, 1), acked(A, 1, 2.0, 1)
    other_run = (RUN + 1, A, 0)
    report = analyse([kept, aside], after_failover({B: [stored(kept)]},
                                                   reconciled={kept.id, aside.id, other_run}))
    assert (report.lost_acknowledged, report.reconciled) == (0, 1)
    assert report.reconciled_on_writer == 1
    assert report.examples["reconciled_on_writer"] == [{"run": RUN, "client": A, "seq": 0}]
    clean = analyse([kept, aside], after_failover({B: [stored(kept)]}, reconciled={aside.id}))
    assert clean.reconciled_on_writer == 0


def test_indeterminate_writes_are_never_lost_nor_acknowledged() -> None:
    unknown_kept = Write(RUN, A, 0, 1.0, 1.5, "indeterminate", error="timeout")
    unknown_gone = Write(RUN, A, 1, 1.5, 2.0, "indeterminate", sqlstate="57P01", error="x")
    failed = Write(RUN, A, 2, 2.0, 2.0, "failed", sqlstate="25006", error="read-only")
    row = StoredRow(RUN, A, 0, A, 1, "primary", "t")
    report = analyse([unknown_kept, unknown_gone, failed], after_failover({B: [row]}))
    assert (report.acknowledged, report.indeterminate, report.failed) == (0, 2, 1)
    assert report.indeterminate_committed == 1
    assert report.lost_acknowledged == 0


def test_one_id_with_two_contents_is_a_duplicate_and_twice_in_one_database_is_repeated() -> None:
    w, v = acked(A, 0, 1.0, 1), acked(A, 1, 1.1, 1)
    report = analyse([w, v], after_failover({
        B: [stored(w, "t1"), stored(v), stored(v)],
        C: [stored(w, "t2"), stored(v)]}))
    assert report.duplicates == 1 and report.repeated_rows == 1
    assert report.examples["duplicates"][0]["seq"] == 0


def test_no_readable_writer_leaves_lost_unknown() -> None:
    w = acked(A, 0, 1.0, 1)
    report = analyse([w], after_failover({A: [stored(w)]}, unreadable={B: "connection refused"}))
    assert report.writer == B and report.lost_acknowledged is None
    assert report.unreadable == {B: "connection refused"}


def test_the_writer_is_the_unfenced_primary_with_the_highest_epoch() -> None:
    assert current_writer({A: NodeRecord("primary", 3, True), B: NodeRecord("primary", 2, False),
                           C: NodeRecord("subscriber", 3, False)}) == B
    # Two unfenced primaries at one epoch: no database can be trusted as the writer's.
    assert current_writer({A: NodeRecord("primary", 2, False),
                           B: NodeRecord("primary", 2, False)}) is None
    assert current_writer({}) is None


def test_acks_from_a_server_that_is_not_primary_are_counted() -> None:
    writes = [acked(A, 0, 1.0, 1), acked(C, 0, 1.0, 1, role="subscriber")]
    report = analyse(writes, after_failover({B: [stored(w) for w in writes]}))
    assert report.non_primary_acks == 1


def test_reconciliation_files_are_read_in_the_format_rejoin_writes() -> None:
    rows = [
        ("0/100", "740", "BEGIN 740"),
        ("0/100", "740", "table public.checker_writes: INSERT: run[bigint]:7 "
                         "client[text]:'us-east-1' seq[bigint]:3 region[text]:'us-east-1' "
                         "epoch[bigint]:1 role[text]:'primary' "
                         "written_at[timestamp with time zone]:'2025-01-01 00:00:00+00'"),
        ("0/100", "740", "table public.drill_writes: INSERT: seq[bigint]:4 id[bigint]:9 "
                         "round[integer]:7"),
        ("0/200", "740", "COMMIT 740 (at 2025-01-01 00:00:00+00)"),
    ]
    document = {"complete": True, "transactions": [asdict(t) for t in decode_lost(rows, None)]}
    assert reconciled_ids(document) == {(7, A, 3)}
    assert reconciled_ids({"complete": False, "transactions": []}) == set()


@pytest.mark.parametrize(("sent", "sqlstate", "outcome"), [
    (False, None, "failed"),  # never connected: nothing was sent
    (False, "28000", "failed"),  # login refused (a fenced region)
    (True, None, "indeterminate"),  # timeout or connection lost mid-statement
    (True, "08006", "indeterminate"),
    (True, "57P01", "indeterminate"),  # terminated: perhaps after the commit
    (True, "25006", "failed"),  # read-only: the server refused the statement
    (True, "57014", "failed"),  # statement_timeout: cancelled before any commit
])
def test_a_failed_attempt_is_failed_only_when_it_certainly_did_not_commit(
        sent: bool, sqlstate: str | None, outcome: str) -> None:
    assert classify(sent, sqlstate) == outcome
