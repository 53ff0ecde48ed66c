"""The journal on SQLite: durable across kills, bounded without losing a resumable plan,
indexed lookups that answer as the full scans did, and `since`/`limit`."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from failover.controller import journal as journal_module
from failover.controller.api import build_app
from failover.controller.executor import Executor, PlanRun
from failover.controller.journal import PLAN, STEP, THRESHOLD, Journal, PlanProgress
from failover.coordination.signing import Verifier, sign
from tests.support.api import View


def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path, source="us-east-1") as journal:
        written = [journal.append(THRESHOLD, target="eu-west-1", n=n) for n in range(5)]
        journal.append(PLAN, event="start", plan_id="p", steps=["a"])
    # A second handle, as a restarted controller would open it, while nothing closed the first.
    first = Journal(path, source="us-east-1")
    first.append(STEP, event="start", plan_id="p", index=0, step="a", attempt=1)
    again = Journal(path, source="us-east-1")
    entries = again.entries()
    assert entries[:5] == written  # whole, with ts, source, kind and the fields
    assert [e["kind"] for e in entries] == [THRESHOLD] * 5 + [PLAN, STEP]
    [unfinished] = again.unfinished_plans()
    assert unfinished.plan_id == "p" and unfinished.attempts == {0: 1}
    first.close()
    again.close()


def test_appends_are_in_write_ahead_log_mode_with_full_sync(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.db", source="x") as journal:
        journal.append(THRESHOLD)
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


KILLED_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from failover.controller.journal import PLAN, THRESHOLD, Journal
    journal = Journal(Path(sys.argv[1]), source="us-east-1", max_entries=int(sys.argv[2]))
    journal.append(PLAN, event="start", plan_id="open", steps=["fence", "promote"])
    print("open", flush=True)
    n = 0
    while True:
        journal.append(THRESHOLD, target="eu-west-1", n=n, padding="x" * (n % 700))
        print(n, flush=True)
        n += 1
""")


def _run_and_kill(path: Path, max_entries: int, after: int) -> list[str]:
    """Appends in a loop in a child process, SIGKILLed once `after` appends returned.
    Every line it printed is an append that had returned."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), str(max_entries)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    printed: list[str] = []
    while len(printed) < after:
        line = child.stdout.readline()
        assert line, f"the writer stopped: rc={child.poll()}"
        printed.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    printed += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    assert child.wait() == -signal.SIGKILL
    return printed


def test_every_append_that_returned_survives_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    printed = _run_and_kill(path, max_entries=1_000_000, after=150)
    with Journal(path, source="us-east-1") as journal:
        entries = journal.entries()
        returned = [int(n) for n in printed[1:]]
        found = [e["n"] for e in entries if e["kind"] == THRESHOLD]
        # At most the append in flight at the kill is there without having been printed.
        assert set(returned) <= set(found) and len(found) - len(returned) in (0, 1)
        assert all(e["padding"] == "x" * (e["n"] % 700) for e in entries if e["kind"] == THRESHOLD)
        [unfinished] = journal.unfinished_plans()
        assert unfinished.plan_id == "open" and unfinished.record is not None
        journal.append(THRESHOLD, n=-1)  # and it is writable again
        assert journal.entries(limit=1)[0]["n"] == -1


def test_a_sigkill_during_compaction_loses_neither_the_open_plan_nor_the_newest(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    printed = _run_and_kill(path, max_entries=20, after=300)  # compacting on every append
    with Journal(path, source="us-east-1", max_entries=20) as journal:
        entries = journal.entries()
        assert len(entries) <= 22
        assert int(printed[-1]) in [e["n"] for e in entries if e["kind"] == THRESHOLD]
        [unfinished] = journal.unfinished_plans()
        assert unfinished.plan_id == "open"
        assert unfinished.record is not None and unfinished.record["steps"] == ["fence", "promote"]


def _plan(journal: Journal, plan_id: str, outcome: str | None, steps: int = 2) -> None:
    """A plan as the executor journals it; `outcome` None leaves it unfinished after step 0."""
    journal.append(PLAN, event="start", plan_id=plan_id, epoch=3, service="app",
                   steps=[f"s{i}" for i in range(steps)])
    for index in range(steps if outcome is not None else 1):
        journal.append(STEP, event="start", plan_id=plan_id, index=index, step=f"s{index}",
                       attempt=1)
        journal.append(STEP, event="end", plan_id=plan_id, index=index, step=f"s{index}",
                       attempt=1, outcome="ok")
    if outcome is not None:
        journal.append(PLAN, event="end", plan_id=plan_id, epoch=3, service="app",
                       outcome=outcome)


def test_compaction_never_drops_an_unfinished_plan(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x", max_entries=50)
    _plan(journal, "interrupted", None)
    for n in range(500):
        journal.append(THRESHOLD, n=n)
    entries = journal.entries()
    assert len(entries) <= 51
    assert entries[-1]["n"] == 499
    [unfinished] = journal.unfinished_plans()
    assert unfinished.plan_id == "interrupted"
    assert unfinished.steps_done == {0} and unfinished.attempts == {0: 1}
    assert unfinished.record is not None and unfinished.record["steps"] == ["s0", "s1"]
    journal.close()


def test_the_newest_entry_stays_when_an_unfinished_plan_fills_the_journal(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x", max_entries=2)
    _plan(journal, "interrupted", None)  # three entries, none of which may go
    for n in range(5):
        journal.append(THRESHOLD, n=n)
        entries = journal.entries()
        assert [e["kind"] for e in entries[:3]] == [PLAN, STEP, STEP]
        assert entries[-1]["n"] == n and len(entries) <= 5  # those three, and one to spare
    seqs = [seq for (seq,) in journal._db.execute("SELECT seq FROM entries ORDER BY seq")]
    assert seqs[-1] == 8  # never reused: every append got a new one
    journal.close()


def test_attempt_ids_and_done_plans_outlive_compaction(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x", max_entries=30)
    _plan(journal, "failing", "failed")
    _plan(journal, "failing.2", "deposed")
    _plan(journal, "done", "ok")
    for n in range(300):
        journal.append(THRESHOLD, n=n)
    assert not any(e.get("plan_id") for e in journal.entries())  # their entries are gone
    assert journal.attempt_id("failing") == "failing.3"
    assert journal.attempt_id("done") == "done"
    done = journal.plan_progress("done")
    assert done.ended and done.outcome == "ok"
    # So a plan that succeeded is still never run twice.
    assert Executor(journal).execute(PlanRun("done", 3, "app", [])).outcome == "already-done"
    journal.close()


def test_ended_plans_are_forgotten_past_max_plans_once_their_entries_are_gone(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x", max_entries=40, max_plans=3)
    for n in range(30):
        _plan(journal, f"p{n}", "failed", steps=1)
    rows = journal._db.execute("SELECT plan_id FROM plans ORDER BY last_seq").fetchall()
    kept = [plan_id for (plan_id,) in rows]
    with_entries = {e["plan_id"] for e in journal.entries() if "plan_id" in e}
    assert with_entries <= set(kept)  # a plan with entries left keeps its row
    assert len(kept) <= len(with_entries) + 3
    assert kept[-1] == "p29" and journal.attempt_id("p29") == "p29.2"
    journal.close()


# The lookups as they were, by reading every entry: the indexed ones must agree.

def reference_progress(entries: list[dict[str, Any]], plan_id: str) -> PlanProgress:
    progress = PlanProgress(plan_id)
    for entry in entries:
        if entry.get("plan_id") != plan_id:
            continue
        event = entry.get("event")
        if entry["kind"] == PLAN and event == "start":
            progress.started = True
            progress.record = entry
        elif entry["kind"] == PLAN and event == "end":
            progress.ended = True
            progress.outcome = entry.get("outcome")
        elif entry["kind"] == STEP and event == "end" and entry.get("outcome") == "ok":
            progress.steps_done.add(int(entry["index"]))
        elif entry["kind"] == STEP and event == "start":
            index = int(entry["index"])
            progress.attempts[index] = progress.attempts.get(index, 0) + 1
    return progress


def reference_attempt_id(entries: list[dict[str, Any]], plan_id: str) -> str:
    ended = {e["plan_id"]: e.get("outcome") for e in entries
             if e.get("kind") == PLAN and e.get("event") == "end"}
    attempt, candidate = 1, plan_id
    while candidate in ended and ended[candidate] != "ok":
        attempt += 1
        candidate = f"{plan_id}.{attempt}"
    return candidate


def reference_unfinished(entries: list[dict[str, Any]]) -> list[str]:
    started: dict[str, None] = {}
    ended: set[str] = set()
    for entry in entries:
        if entry["kind"] == PLAN and entry.get("event") == "start":
            started[entry["plan_id"]] = None
        elif entry["kind"] == PLAN and entry.get("event") == "end":
            ended.add(entry["plan_id"])
    return [plan_id for plan_id in started if plan_id not in ended]


@pytest.mark.parametrize("seed", range(3))
def test_indexed_lookups_answer_as_the_full_scans_did(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    ids = ["a", "a.2", "a.3", "a.10", "ab", "a-b", "b", "b.2", "c"]
    journal = Journal(tmp_path / "journal.db", source="x")
    for _ in range(250):
        plan_id = rng.choice(ids)
        kind = rng.choice([PLAN, PLAN, STEP, STEP, STEP, THRESHOLD])
        if kind == PLAN and rng.random() < 0.5:
            journal.append(PLAN, event="start", plan_id=plan_id, steps=["s0", "s1"], n=rng.random())
        elif kind == PLAN:
            journal.append(PLAN, event="end", plan_id=plan_id,
                           outcome=rng.choice(["ok", "failed", "deposed", "superseded"]))
        elif kind == STEP:
            journal.append(STEP, event=rng.choice(["start", "end"]), plan_id=plan_id,
                           index=rng.randrange(3), outcome=rng.choice(["ok", "error"]))
        else:
            journal.append(THRESHOLD, target="eu-west-1")
    entries = journal.entries()
    for plan_id in [*ids, "unknown"]:
        assert journal.plan_progress(plan_id) == reference_progress(entries, plan_id)
        assert journal.attempt_id(plan_id) == reference_attempt_id(entries, plan_id)
    assert [p.plan_id for p in journal.unfinished_plans()] == reference_unfinished(entries)
    assert journal.unfinished_plans() == [reference_progress(entries, plan_id)
                                          for plan_id in reference_unfinished(entries)]
    journal.close()


@pytest.mark.parametrize("name", ["SQL_ENTRIES", "SQL_NEWEST_ENTRIES", "SQL_PLAN_ROW",
                                  "SQL_PLAN_ENTRIES", "SQL_ATTEMPTS", "SQL_UNFINISHED",
                                  "SQL_COMPACT", "SQL_FORGET_PLANS"])
def test_lookups_read_through_an_index(tmp_path: Path, name: str) -> None:
    Journal(tmp_path / "journal.db", source="x").close()
    sql = getattr(journal_module, name)
    with sqlite3.connect(tmp_path / "journal.db") as db:
        steps = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", (1,) * sql.count("?"))]
    db.close()
    # A bare "SCAN" reads every row of the table.
    assert not [step for step in steps if step in ("SCAN entries", "SCAN plans")], steps


def test_since_and_limit(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x")
    for n in range(10):
        journal.append(THRESHOLD, n=n, ts=100.0 + n)  # a field overrides the time: fixed clock
    journal.append(THRESHOLD, n=10, ts=103.0)  # the clock stepped back: time order, then append order

    def ns(entries: list[dict[str, Any]]) -> list[int]:
        return [e["n"] for e in entries]

    assert ns(journal.entries()) == [0, 1, 2, 3, 10, 4, 5, 6, 7, 8, 9]
    assert ns(journal.entries(since=105.0)) == [5, 6, 7, 8, 9]
    assert ns(journal.entries(limit=3)) == [7, 8, 9]
    assert ns(journal.entries(since=102.0, limit=4)) == [6, 7, 8, 9]
    assert ns(journal.entries(since=102.0, limit=100)) == [2, 3, 10, 4, 5, 6, 7, 8, 9]
    assert ns(journal.entries(since=103.0, limit=7)) == [3, 10, 4, 5, 6, 7, 8, 9][-7:]
    assert journal.entries(since=200.0) == [] and journal.entries(limit=0) == []
    journal.close()


def test_threads_append_concurrently(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", source="x")

    def write(thread: int) -> None:
        for n in range(25):
            journal.append(STEP, event="start", plan_id=f"t{thread}", index=n)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(6):
        assert journal.plan_progress(f"t{t}").attempts == {n: 1 for n in range(25)}
    assert len(journal.entries()) == 150
    journal.close()


def test_a_json_lines_journal_beside_it_is_imported_once(tmp_path: Path) -> None:
    old = tmp_path / "journal.jsonl"
    lines = [{"ts": 1.0, "source": "x", "kind": PLAN, "event": "start", "plan_id": "p",
              "steps": ["a", "b"]},
             {"ts": 2.0, "source": "x", "kind": STEP, "event": "end", "plan_id": "p", "index": 0,
              "outcome": "ok"},
             {"ts": 3.0, "source": "x", "kind": PLAN, "event": "start", "plan_id": "q"},
             {"ts": 4.0, "source": "x", "kind": PLAN, "event": "end", "plan_id": "q",
              "outcome": "failed"}]
    old.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "step", "ev')
    with Journal(tmp_path / "journal.db", source="x") as journal:
        assert journal.entries() == lines
        [unfinished] = journal.unfinished_plans()
        assert unfinished.plan_id == "p" and unfinished.steps_done == {0}
        assert journal.attempt_id("q") == "q.2"
    with old.open("a") as handle:
        handle.write("\n" + json.dumps({"ts": 5.0, "kind": THRESHOLD}) + "\n")
    with Journal(tmp_path / "journal.db", source="x") as journal:
        assert journal.entries() == lines  # not twice, and nothing added since


def test_a_json_lines_journal_in_its_place_is_moved_aside_and_imported(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"  # a controller still given the old file name
    path.write_text(json.dumps({"ts": 1.0, "kind": PLAN, "event": "start", "plan_id": "p"}) + "\n")
    with Journal(path, source="x") as journal:
        assert [p.plan_id for p in journal.unfinished_plans()] == ["p"]
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    assert (tmp_path / "journal.jsonl.legacy").exists()


def test_the_api_serves_since_and_limit(tmp_path: Path) -> None:
    key = b"k" * 32
    journal = Journal(tmp_path / "journal.db", source="us-east-1")
    for n in range(20):
        journal.append(THRESHOLD, n=n, ts=100.0 + n)

    async def get(query: str) -> tuple[int, Any]:
        app = build_app(View(journal), Verifier(key, 30.0))
        async with TestClient(TestServer(app)) as client:
            reply = await client.get(f"/v1/journal?{query}",
                                     headers=sign(key, "GET", "/v1/journal", b""))
            return reply.status, await reply.json()

    status, body = asyncio.run(get("since=110&limit=3"))
    assert status == 200 and [e["n"] for e in body["entries"]] == [17, 18, 19]
    assert body["limit"] == 3 and body["source"] == "us-east-1"
    status, body = asyncio.run(get("since=115"))
    assert status == 200 and [e["n"] for e in body["entries"]] == [15, 16, 17, 18, 19]
    for bad in ("limit=0", "limit=x", "limit=100001", "since=soon"):
        status, body = asyncio.run(get(bad))
        assert status == 400, bad
    journal.close()
