"""The controller's journal: append rate with fsync, and lookups in a journal of 100,000 entries.

Run: .venv/bin/python benchmarks/journal.py [--appends 2000] [--entries 100000] [--dir DIR]
DIR (default: a directory under /var/tmp, removed afterwards) should be on the disk a controller's
state directory would be on: the append rate is the disk's fsync rate. For
comparison, the same figures for the JSON-lines file the journal used to be (an
fsynced line an append, a full read a lookup) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failover.controller.journal import DECISION, PLAN, STEP, THRESHOLD, VERDICT, Journal

STEPS = ["fence-old-writer", "wait-for-replay", "promote", "bump-epoch", "move-dns"]


def timed(action: Callable[[], object], repeat: int) -> dict[str, float]:
    """Milliseconds per call: median and worst of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(samples), 3), "max_ms": round(max(samples), 3)}


def rate(action: Callable[[], object], count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"per_s": round(count / sum(samples) * 1000),
            "median_ms": round(samples[len(samples) // 2], 3),
            "p99_ms": round(samples[len(samples) * 99 // 100], 3),
            "max_ms": round(samples[-1], 3)}


def plan_entries(plan_id: str, ts: float, outcome: str | None) -> list[dict[str, Any]]:
    """A plan of five steps as the executor journals it; `outcome` None: interrupted."""
    common = {"source": "us-east-1", "plan_id": plan_id, "epoch": 7, "service": "app"}
    entries: list[dict[str, Any]] = [
        {"ts": ts, "kind": PLAN, "event": "start", "steps": STEPS,
         "plan": {"decided_at": ts, "actions": [{"kind": "promote"}]}, **common}]
    for index, step in enumerate(STEPS if outcome is not None else STEPS[:1]):
        entries.append({"ts": ts, "kind": STEP, "event": "start", "index": index, "step": step,
                        "attempt": 1, **common})
        entries.append({"ts": ts, "kind": STEP, "event": "end", "index": index, "step": step,
                        "attempt": 1, "outcome": "ok", "duration": 0.01, "detail": "done",
                        **common})
    if outcome is not None:
        entries.append({"ts": ts, "kind": PLAN, "event": "end", "outcome": outcome, **common})
    return entries


def workload(count: int, start_ts: float) -> list[dict[str, Any]]:
    """A controller's journal: mostly verdicts, thresholds and decisions, a plan (12 entries)
    every 500 entries, two of three failed; and last, a plan a crash interrupted."""
    entries: list[dict[str, Any]] = []
    while len(entries) < count - 3:
        n = len(entries)
        ts = start_ts + n
        if n % 500 == 0:
            entries += plan_entries(f"app-{n:08d}", ts, "ok" if n % 1500 == 0 else "failed")
        elif n % 3 == 0:
            entries.append({"ts": ts, "source": "us-east-1", "kind": VERDICT,
                            "target": "eu-west-1", "verdict": "UP", "reason": "2 of 3 say up",
                            "votes": [{"observer": r, "state": "up", "age": 0.4}
                                      for r in ("us-east-1", "eu-west-1", "ap-south-1")]})
        elif n % 3 == 1:
            entries.append({"ts": ts, "source": "us-east-1", "kind": THRESHOLD,
                            "target": "eu-west-1", "check": "postgres", "state": "up",
                            "detail": "select 1 answered in 3 ms"})
        else:
            entries.append({"ts": ts, "source": "us-east-1", "kind": DECISION, "service": "app",
                            "reason": "the writer is healthy: nothing to do"})
    entries = entries[:count - 3]
    return entries + plan_entries("app-interrupted", start_ts + count, None)


def fill(journal: Journal, entries: list[dict[str, Any]]) -> None:
    """One transaction for the whole fill: a benchmark need not wait for 100,000 fsyncs."""
    with journal._lock:
        journal._db.execute("BEGIN IMMEDIATE")
        for entry in entries:
            journal._insert(entry)
        journal._db.execute("COMMIT")


def json_lines_append(path: Path, entry: dict[str, Any]) -> None:
    """An append as the JSON-lines journal did it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def json_lines_scan(path: Path) -> list[dict[str, Any]]:
    """What every lookup of the JSON-lines journal read."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return run(args, args.dir)
    with tempfile.TemporaryDirectory(prefix="journal-bench-", dir="/var/tmp") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, base: Path) -> int:
    figures: dict[str, Any] = {"directory": str(base)}

    # Appends, each durable before it returns.
    step = {"event": "start", "plan_id": "app-e1-0123456789ab", "epoch": 1, "service": "app",
            "index": 2, "step": "promote", "attempt": 1}
    journal = Journal(base / "append.db", source="us-east-1")
    figures["append_sqlite"] = rate(lambda: journal.append(STEP, **step), args.appends)
    journal.close()
    lines = base / "append.jsonl"
    figures["append_json_lines"] = rate(lambda: json_lines_append(
        lines, {"ts": time.time(), "source": "us-east-1", "kind": STEP, **step}), args.appends)

    # Lookups in a full journal.
    entries = workload(args.entries, start_ts=1_700_000_000.0)
    middle = f"app-{args.entries // 2 // 500 * 500:08d}"
    path = base / "full.db"
    journal = Journal(path, source="us-east-1", max_entries=args.entries)
    start = time.perf_counter()
    fill(journal, entries)
    figures["fill_one_transaction_s"] = round(time.perf_counter() - start, 2)
    journal.close()
    figures["database_mb"] = round(path.stat().st_size / 1e6, 1)
    opened: list[Journal] = []
    figures["open_ms"] = timed(lambda: opened.append(Journal(path, source="us-east-1",
                                                             max_entries=args.entries)), 1)
    journal = opened[0]
    since = entries[-600]["ts"]
    figures["lookups_sqlite"] = {
        "plan_progress": timed(lambda: journal.plan_progress(middle), 200),
        "attempt_id": timed(lambda: journal.attempt_id(middle), 200),
        "unfinished_plans": timed(journal.unfinished_plans, 200),
        "entries_limit_5000": timed(lambda: journal.entries(limit=5000), 10),
        "entries_since_last_600": timed(lambda: journal.entries(since), 50),
        "entries_all": timed(journal.entries, 3),
    }
    assert [p.plan_id for p in journal.unfinished_plans()] == ["app-interrupted"]
    # At the cap, one append in 1% of the cap compacts a batch: max_ms is that one.
    figures["append_at_cap"] = rate(
        lambda: journal.append(THRESHOLD, target="eu-west-1", state="up"),
        args.entries // 100 + 2)
    journal.close()

    lines = base / "full.jsonl"
    with lines.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    figures["json_lines_mb"] = round(lines.stat().st_size / 1e6, 1)
    figures["lookup_json_lines_full_scan"] = timed(lambda: json_lines_scan(lines), 3)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
