"""A durable, bounded record of what this controller saw, decided and did.

The journal is a SQLite database in WAL mode with `synchronous=FULL`: each
`append` is its own transaction, and SQLite fsyncs the write-ahead log before
the commit returns, so a controller killed at any instant (or a host that loses
power) finds every step it started or finished when it restarts. A write torn by
the kill is a transaction that never committed, and SQLite discards it.

Every entry is kept whole, as the JSON object that `history` and the drill read
(`ts`, `source`, `kind` and the entry's fields), beside the columns the lookups
need: `ts` (indexed, for `since` and `limit`), `plan_id` (indexed, for a plan's
steps), `kind` and `event`. The plan entries' kind and event go further: a
`plans` table, written in the same transaction as each plan entry, holds one row
a plan, saying whether it started, ended and how, so that `attempt_id` and
`unfinished_plans` read a few indexed rows instead of the whole journal.

The journal is bounded: past `max_entries` the oldest entries are deleted, but
never one of a plan that has not ended (it must stay resumable). The `plans` row
of an ended plan outlives its entries, so a plan that failed still gets a new
attempt id and one that succeeded is still never run again; only when more
than `max_plans` plans have ended are the oldest of those rows forgotten, and
only once none of their entries is left. A forgotten plan's id may then be used
again, which is harmless: nothing about it remains, and a plan id names an
epoch the fleet has long left.

Before this database the journal was a JSON-lines file. On creating the
database, the entries of such a file are imported once, in the same transaction
that creates the tables: the file named like the database with a `.jsonl`
suffix, left where it is; or a JSON-lines file at the database's own path,
first moved aside to `<name>.legacy` to make room.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The kinds of entry; `history` merges them from every controller into one timeline.
THRESHOLD = "threshold"  # a probe's state crossed a threshold
VERDICT = "verdict"  # a region's fleet verdict changed, with the votes behind it
DECISION = "decision"  # why the engine did nothing for a service, when that reason changed
PLAN = "plan"  # a plan started or ended
STEP = "step"  # a step attempt started or ended
OPERATOR = "operator"  # an operator's command (pause, resume, switchover...)

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_PLANS = 10_000

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

# seq is the append order. No AUTOINCREMENT: compaction never deletes the newest
# entry, so no seq is reused anyway, and each append writes one page fewer.
SCHEMA = """
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    event TEXT,
    plan_id TEXT,
    body TEXT NOT NULL
);
CREATE INDEX entries_ts ON entries (ts);
CREATE INDEX entries_plan ON entries (plan_id) WHERE plan_id IS NOT NULL;
CREATE TABLE plans (
    plan_id TEXT PRIMARY KEY NOT NULL,
    started INTEGER NOT NULL DEFAULT 0,
    ended INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    start_seq INTEGER,
    last_seq INTEGER NOT NULL
);
CREATE INDEX plans_open ON plans (start_seq) WHERE ended = 0;
CREATE INDEX plans_ended ON plans (last_seq) WHERE ended = 1;
"""

# The lookups, named so that the tests can ask SQLite how it runs each of them.
SQL_INSERT = "INSERT INTO entries (ts, kind, event, plan_id, body) VALUES (?, ?, ?, ?, ?)"
# start_seq is the first start's: unfinished plans are resumed in the order they began.
SQL_PLAN_START = """
INSERT INTO plans (plan_id, started, start_seq, last_seq) VALUES (?, 1, ?, ?)
ON CONFLICT (plan_id) DO UPDATE SET started = 1, last_seq = excluded.last_seq,
                                    start_seq = coalesce(plans.start_seq, excluded.start_seq)
"""
SQL_PLAN_END = """
INSERT INTO plans (plan_id, ended, outcome, last_seq) VALUES (?, 1, ?, ?)
ON CONFLICT (plan_id) DO UPDATE SET ended = 1, outcome = excluded.outcome,
                                    last_seq = excluded.last_seq
"""
SQL_ENTRIES = "SELECT body FROM entries WHERE ts >= ? ORDER BY ts, seq"
SQL_NEWEST_ENTRIES = "SELECT body FROM entries WHERE ts >= ? ORDER BY ts DESC, seq DESC LIMIT ?"
SQL_PLAN_ROW = "SELECT started, ended, outcome FROM plans WHERE plan_id = ?"
SQL_PLAN_ENTRIES = "SELECT body FROM entries WHERE plan_id = ? ORDER BY seq"
# Every attempt of a plan: its id and `<id>.<n>`, one range of the primary key
# ('/' is the character after '.').
SQL_ATTEMPTS = "SELECT plan_id, ended, outcome FROM plans WHERE plan_id = ? OR (plan_id > ? AND plan_id < ?)"
SQL_UNFINISHED = "SELECT plan_id FROM plans WHERE ended = 0 AND started = 1 ORDER BY start_seq"
SQL_COMPACT = """
DELETE FROM entries WHERE seq IN (
    SELECT seq FROM entries
    WHERE (plan_id IS NULL OR plan_id NOT IN (SELECT plan_id FROM plans WHERE ended = 0))
    AND seq < (SELECT max(seq) FROM entries)
    ORDER BY seq LIMIT ?)
"""
SQL_FORGET_PLANS = """
DELETE FROM plans WHERE plan_id IN (
    SELECT plan_id FROM plans WHERE ended = 1
    AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.plan_id = plans.plan_id)
    ORDER BY last_seq LIMIT ?)
"""


@dataclass
class PlanProgress:
    """What the journal knows of one plan: which steps finished, and whether it ended."""

    plan_id: str
    started: bool = False
    ended: bool = False
    outcome: str | None = None
    steps_done: set[int] = field(default_factory=set)
    attempts: dict[int, int] = field(default_factory=dict)
    record: dict[str, Any] | None = None  # the plan-start entry, with everything to resume it


class Journal:
    def __init__(self, path: Path, *, source: str, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_plans: int = DEFAULT_MAX_PLANS) -> None:
        if max_entries < 1 or max_plans < 1:
            raise ValueError("max_entries and max_plans must be at least 1")
        self.path = path
        self.source = source  # the region whose controller writes this journal
        self.max_entries = max_entries
        self.max_plans = max_plans
        # Deleting in batches rather than one row an append keeps compaction's
        # cost (a count and a delete) off almost every append.
        self._slack = max(1, max_entries // 100)
        # One connection shared by the executor's worker threads and the event
        # loop: the lock serializes them, which costs little since every append
        # waits for its fsync anyway.
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        _move_aside_if_json_lines(path)
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        # A journal dropped without close() (the controller never closes it) is
        # still closed cleanly, which lets SQLite checkpoint and remove the WAL.
        self._finalizer = weakref.finalize(self, self._db.close)
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            # The WAL is reused after each checkpoint, never shrunk, unless limited:
            # a big compaction would otherwise leave it at its largest.
            self._db.execute("PRAGMA journal_size_limit = 8388608")
            self._create_once()
            self._count = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        except BaseException:
            self.close()
            raise
        self._compact_at = self.max_entries + self._slack

    def close(self) -> None:
        with self._lock:
            self._finalizer()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_once(self) -> None:
        # IMMEDIATE: two processes opening a new journal at once must not both import.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                for legacy in _legacy_files(self.path):
                    for entry in _read_json_lines(legacy):
                        self._insert(entry)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                # SQLite syncs the directory when it creates the WAL, not the
                # database file: without this, a power loss could lose its name.
                _fsync_directory(self.path.parent)
            elif version != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: journal schema {version}, this version "
                                   f"reads {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _insert(self, entry: dict[str, Any]) -> None:
        """Adds one entry, and its plan's row, inside the caller's transaction."""
        kind = str(entry.get("kind"))
        event = entry.get("event")
        plan_id = entry.get("plan_id")
        ts = entry.get("ts")
        cursor = self._db.execute(SQL_INSERT, (
            float(ts) if isinstance(ts, int | float) and math.isfinite(ts) else 0.0,
            kind,
            None if event is None else str(event),
            None if plan_id is None else str(plan_id),
            json.dumps(entry, sort_keys=True, default=str),
        ))
        if kind == PLAN and plan_id is not None:
            seq = cursor.lastrowid
            if event == "start":
                self._db.execute(SQL_PLAN_START, (str(plan_id), seq, seq))
            elif event == "end":
                outcome = entry.get("outcome")
                self._db.execute(SQL_PLAN_END, (str(plan_id),
                                                None if outcome is None else str(outcome), seq))

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": time.time(), "source": self.source, "kind": kind, **fields}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(entry)
                self._db.execute("COMMIT")  # returns once the WAL is fsynced (synchronous=FULL)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count += 1
            if self._count > self._compact_at:
                self._compact()
        return entry

    def _compact(self) -> None:
        """Deletes the oldest entries down to `max_entries`, sparing the plans not ended.
        Its own transaction, after the append's: the entry is durable whatever happens here."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Counted afresh: another Journal on the same file may have appended too.
            count = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            if count > self.max_entries:
                count -= self._db.execute(SQL_COMPACT, (count - self.max_entries,)).rowcount
            ended = self._db.execute("SELECT COUNT(*) FROM plans WHERE ended = 1").fetchone()[0]
            if ended > self.max_plans:
                self._db.execute(SQL_FORGET_PLANS, (ended - self.max_plans,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._count = count
        # What could not be deleted (entries of unfinished plans) must not make
        # every later append compact again in vain.
        self._compact_at = max(count, self.max_entries) + self._slack

    def entries(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries at or after `since` (epoch seconds), the newest `limit` of them if given,
        in time order (append order among equal times)."""
        if limit is not None and limit <= 0:
            return []
        low = -math.inf if since is None else since
        with self._lock:
            if limit is None:
                rows = self._db.execute(SQL_ENTRIES, (low,)).fetchall()
            else:
                rows = self._db.execute(SQL_NEWEST_ENTRIES, (low, limit)).fetchall()
                rows.reverse()  # read newest first, to stop at the limit
        return [json.loads(body) for (body,) in rows]

    def plan_progress(self, plan_id: str) -> PlanProgress:
        progress = PlanProgress(plan_id)
        with self._lock:
            row = self._db.execute(SQL_PLAN_ROW, (plan_id,)).fetchone()
            bodies = self._db.execute(SQL_PLAN_ENTRIES, (plan_id,)).fetchall()
        if row is not None:
            # From the plans row: it outlives the entries that compaction deletes.
            progress.started, progress.ended, progress.outcome = bool(row[0]), bool(row[1]), row[2]
        for (body,) in bodies:
            entry = json.loads(body)
            event = entry.get("event")
            if entry["kind"] == PLAN and event == "start":
                progress.record = entry
            elif entry["kind"] == STEP and event == "end" and entry.get("outcome") == "ok":
                progress.steps_done.add(int(entry["index"]))
            elif entry["kind"] == STEP and event == "start":
                index = int(entry["index"])
                progress.attempts[index] = progress.attempts.get(index, 0) + 1
        return progress

    def attempt_id(self, plan_id: str) -> str:
        """The id under which to run `plan_id` now: itself, unless it already ended without
        success, in which case the next attempt gets its own id (`<id>.2`, `<id>.3`...).
        A plan that ended ok keeps its id, so the executor sees it done and never reruns it."""
        with self._lock:
            rows = self._db.execute(SQL_ATTEMPTS, (plan_id, plan_id + ".", plan_id + "/")).fetchall()
        ended = {row_id: outcome for row_id, was_ended, outcome in rows if was_ended}
        attempt, candidate = 1, plan_id
        while candidate in ended and ended[candidate] != "ok":
            attempt += 1
            candidate = f"{plan_id}.{attempt}"
        return candidate

    def unfinished_plans(self) -> list[PlanProgress]:
        """Plans that started and never ended: a crash interrupted them."""
        with self._lock:
            plan_ids = [plan_id for (plan_id,) in self._db.execute(SQL_UNFINISHED).fetchall()]
        return [self.plan_progress(plan_id) for plan_id in plan_ids]


def _move_aside_if_json_lines(path: Path) -> None:
    """A JSON-lines journal where the database belongs is renamed to `<name>.legacy`,
    to be imported from there (an upgraded controller still given the old file name)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    if not head or head == SQLITE_MAGIC:
        return  # SQLite makes an empty file a new database
    os.replace(path, _aside(path))
    # The rename must be durable before the database that replaces it is.
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside(path: Path) -> Path:
    return path.with_name(path.name + ".legacy")


def _legacy_files(path: Path) -> list[Path]:
    sibling = path.with_suffix(".jsonl")
    candidates = [_aside(path)] + ([sibling] if sibling != path else [])
    return [candidate for candidate in candidates if candidate.is_file()]


def _read_json_lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write
            if isinstance(entry, dict) and "kind" in entry:
                yield entry
