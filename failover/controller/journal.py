"""A durable, append-only record of what this controller saw, decided and did.

One JSON object a line, flushed and fsynced before `append` returns, so that a
controller killed at any instant finds every step it started or finished when
it restarts. A torn last line (the kill landed mid-write) is ignored on read.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
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
    def __init__(self, path: Path, *, source: str) -> None:
        self.path = path
        self.source = source  # the region whose controller writes this journal
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": time.time(), "source": self.source, "kind": kind, **fields}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def entries(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(entry, dict) and (since is None or entry.get("ts", 0) >= since):
                    yield entry

    def plan_progress(self, plan_id: str) -> PlanProgress:
        progress = PlanProgress(plan_id)
        for entry in self.entries():
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

    def attempt_id(self, plan_id: str) -> str:
        """The id under which to run `plan_id` now: itself, unless it already ended without
        success, in which case the next attempt gets its own id (`<id>.2`, `<id>.3`...).
        A plan that ended ok keeps its id, so the executor sees it done and never reruns it."""
        ended: dict[str, str | None] = {}
        for entry in self.entries():
            if entry.get("kind") == PLAN and entry.get("event") == "end":
                ended[entry["plan_id"]] = entry.get("outcome")
        attempt, candidate = 1, plan_id
        while candidate in ended and ended[candidate] != "ok":
            attempt += 1
            candidate = f"{plan_id}.{attempt}"
        return candidate

    def unfinished_plans(self) -> list[PlanProgress]:
        """Plans that started and never ended: a crash interrupted them."""
        started: dict[str, None] = {}
        ended: set[str] = set()
        for entry in self.entries():
            if entry["kind"] != PLAN:
                continue
            if entry.get("event") == "start":
                started[entry["plan_id"]] = None
            elif entry.get("event") == "end":
                ended.add(entry["plan_id"])
        return [self.plan_progress(plan_id) for plan_id in started if plan_id not in ended]
