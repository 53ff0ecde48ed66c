"""Judge a run's safety from outside, as Jepsen does: the pinned writers' logs
(`failover.lab.writers`) against what every region's database holds afterwards.

`analyse` is the whole judgement, a pure function of the logs and what was read;
`SafetyWatch` runs the writers around a scenario and gathers what it needs:

- split brain: writes a region acknowledged after another region had acknowledged
  its first write at a newer epoch (times are the client's, on one clock);
- lost: acknowledged writes missing from the current writer's database (the unfenced
  primary with the highest epoch) and listed in no reconciliation file of a rejoin;
- reconciled: acknowledged writes missing from the writer but listed in one;
- writable regions: the regions that accept an application write at the end;
- duplicates: one id stored with two different contents; repeated rows: one id
  stored twice in one database (a write applied twice);
- indeterminate: attempts whose outcome the client never learnt (and how many of
  them turned out committed), never counted as lost or acknowledged;
- non-primary acks: writes acknowledged by a server that did not say it was primary.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from failover.lab import state as lab
from failover.lab.writers import RATE, TABLE, Write, Writers, probe_writable

WriteId = tuple[int, str, int]  # run, client, seq
EXAMPLES = 5


@dataclass(frozen=True)
class StoredRow:
    run: int
    client: str
    seq: int
    region: str
    epoch: int
    role: str
    written_at: str

    @property
    def id(self) -> WriteId:
        return (self.run, self.client, self.seq)

    @property
    def content(self) -> tuple[str, int, str, str]:
        return (self.region, self.epoch, self.role, self.written_at)


@dataclass(frozen=True)
class NodeRecord:
    """A region's `failover.node_state` row for the service."""

    role: str
    epoch: int
    fenced: bool


@dataclass
class Observation:
    """What the checker read after the run."""

    rows: dict[str, list[StoredRow]]  # by the region whose database held them
    nodes: dict[str, NodeRecord]
    unreadable: dict[str, str] = field(default_factory=dict)  # region -> why
    reconciled: set[WriteId] = field(default_factory=set)
    writable: dict[str, str | None] = field(default_factory=dict)  # region -> None or why not


@dataclass
class CheckReport:
    writes: int
    acknowledged: int
    failed: int
    indeterminate: int
    indeterminate_committed: int
    writer: str | None  # whose database judged what is lost
    primaries: list[str]  # regions whose database says: unfenced primary
    split_brain_writes: int
    lost_acknowledged: int | None  # None: no writer's database could be read
    reconciled: int
    # Listed in a reconciliation file yet on the writer: a rejoin that set aside what the
    # writer has (the file must list exactly what the writer lacks).
    reconciled_on_writer: int
    duplicates: int
    repeated_rows: int
    non_primary_acks: int
    writable_regions: list[str]
    not_writable: dict[str, str]
    unreadable: dict[str, str]
    per_client: dict[str, dict[str, int]]
    examples: dict[str, list[dict[str, Any]]]

    @property
    def writable_regions_after(self) -> int:
        return len(self.writable_regions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_writer(nodes: dict[str, NodeRecord]) -> str | None:
    """The unfenced primary with the highest epoch; a tie names none (nobody to trust)."""
    primaries = sorted(((n.epoch, region) for region, n in nodes.items()
                        if n.role == "primary" and not n.fenced), reverse=True)
    if not primaries or (len(primaries) > 1 and primaries[0][0] == primaries[1][0]):
        return None
    return primaries[0][1]


def split_brain(acked: Sequence[Write]) -> list[tuple[Write, tuple[float, str, int]]]:
    """Each acknowledged write that came after another region's first acknowledged write
    at a newer epoch, with that first write (ack time, region, epoch)."""
    stamped = [(w, w.server_region, w.server_epoch) for w in acked
               if w.server_region is not None and w.server_epoch is not None]
    first: dict[tuple[str, int], float] = {}
    for w, region, epoch in stamped:
        first[region, epoch] = min(first.get((region, epoch), w.done_at), w.done_at)
    found = []
    for w, region, epoch in stamped:
        newer = min(((at, other, later) for (other, later), at in first.items()
                     if other != region and later > epoch), default=None)
        if newer is not None and w.done_at > newer[0]:
            found.append((w, newer))
    return found


def reconciled_ids(document: dict[str, Any], table: str = TABLE) -> set[WriteId]:
    """The pinned writers' rows a rejoin listed as lost transactions
    (`failover.postgres.rejoin`: transactions, each with changes and their columns)."""
    ids: set[WriteId] = set()
    for transaction in document.get("transactions", []):
        for change in transaction.get("changes", []):
            columns = change.get("columns", {})
            if (change.get("operation") == "INSERT"
                    and str(change.get("table", "")).split(".")[-1] == table
                    and {"run", "client", "seq"} <= columns.keys()):
                with contextlib.suppress(TypeError, ValueError):
                    ids.add((int(columns["run"]), str(columns["client"]), int(columns["seq"])))
    return ids


def _example(w: Write, **extra: Any) -> dict[str, Any]:
    return {"client": w.client, "seq": w.seq, "sent_at": w.sent_at, "acked_at": w.done_at,
            "region": w.server_region, "epoch": w.server_epoch, **extra}


def analyse(writes: Sequence[Write], seen: Observation, *, examples: int = EXAMPLES) -> CheckReport:
    acked = [w for w in writes if w.outcome == "acked"]
    indeterminate = [w for w in writes if w.outcome == "indeterminate"]

    stored: dict[WriteId, set[tuple[str, int, str, str]]] = defaultdict(set)
    repeated: set[WriteId] = set()
    for rows in seen.rows.values():
        counts = Counter(row.id for row in rows)
        repeated |= {i for i, n in counts.items() if n > 1}
        for row in rows:
            stored[row.id].add(row.content)
    duplicates = sorted(i for i, contents in stored.items() if len(contents) > 1)

    writer = current_writer(seen.nodes)
    lost: list[Write] | None = None
    reconciled: list[Write] = []
    listed_on_writer: set[WriteId] = set()
    if writer is not None and writer in seen.rows:
        on_writer = {row.id for row in seen.rows[writer]}
        missing = [w for w in acked if w.id not in on_writer]
        lost = [w for w in missing if w.id not in seen.reconciled]
        reconciled = [w for w in missing if w.id in seen.reconciled]
        runs = {w.run for w in writes}
        listed_on_writer = {i for i in seen.reconciled if i[0] in runs} & on_writer

    split = split_brain(acked)
    per_client: dict[str, dict[str, int]] = {}
    for w in writes:
        counts_of = per_client.setdefault(w.client, {"acked": 0, "failed": 0,
                                                      "indeterminate": 0})
        counts_of[w.outcome] += 1
    return CheckReport(
        writes=len(writes), acknowledged=len(acked),
        failed=sum(1 for w in writes if w.outcome == "failed"),
        indeterminate=len(indeterminate),
        indeterminate_committed=sum(1 for w in indeterminate
                                    if w.id in stored or w.id in seen.reconciled),
        writer=writer,
        primaries=sorted(r for r, n in seen.nodes.items() if n.role == "primary" and not n.fenced),
        split_brain_writes=len(split),
        lost_acknowledged=None if lost is None else len(lost),
        reconciled=len(reconciled), reconciled_on_writer=len(listed_on_writer),
        duplicates=len(duplicates), repeated_rows=len(repeated),
        non_primary_acks=sum(1 for w in acked if w.server_role != "primary"),
        writable_regions=sorted(r for r, why in seen.writable.items() if why is None),
        not_writable={r: why for r, why in sorted(seen.writable.items()) if why is not None},
        unreadable=dict(seen.unreadable),
        per_client=per_client,
        examples={
            "split_brain": [_example(w, after={"region": region, "epoch": epoch,
                                               "first_acked_at": at})
                            for w, (at, region, epoch) in split[:examples]],
            "lost": [_example(w) for w in (lost or [])[:examples]],
            "duplicates": [{"run": i[0], "client": i[1], "seq": i[2],
                            "contents": sorted(map(list, stored[i]))}
                           for i in duplicates[:examples]],
            "reconciled_on_writer": [{"run": i[0], "client": i[1], "seq": i[2]}
                                     for i in sorted(listed_on_writer)[:examples]],
        },
    )


# ------------------------------------------------------------------ gathering


def read_databases(state: lab.LabState, run: int) -> Observation:
    """Every region's rows of `run` and its node record, read as the superuser."""
    seen = Observation(rows={}, nodes={})
    for region in state.regions:
        try:
            with psycopg.connect(host=region.address, port=region.pg_port,
                                 dbname=state.service.database, user=lab.SUPERUSER,
                                 connect_timeout=3, autocommit=True,
                                 options="-c statement_timeout=10000", **state.pg_tls()) as conn:
                node = conn.execute("SELECT role, epoch, fenced FROM failover.node_state "
                                    "WHERE service = %s", [state.service.name]).fetchone()
                rows = conn.execute(
                    f"SELECT run, client, seq, region, epoch, role, written_at::text "
                    f"FROM {TABLE} WHERE run = %s", [run]).fetchall()
        except psycopg.Error as exc:
            seen.unreadable[region.name] = str(exc).strip().splitlines()[0] if str(exc) else "?"
            continue
        if node is not None:
            seen.nodes[region.name] = NodeRecord(str(node[0]), int(node[1]), bool(node[2]))
        seen.rows[region.name] = [StoredRow(int(r[0]), str(r[1]), int(r[2]), str(r[3]),
                                            int(r[4]), str(r[5]), str(r[6])) for r in rows]
    return seen


def reconciliation_files(lab_dir: Path) -> list[Path]:
    """The drill's rejoins write under the lab's folder, the controllers' under their
    state folders."""
    return sorted([*lab_dir.glob("reconciliation/*.json"),
                   *lab_dir.glob("state/*/reconciliation/*.json")])


def read_reconciliation(lab_dir: Path) -> set[WriteId]:
    ids: set[WriteId] = set()
    for path in reconciliation_files(lab_dir):
        with contextlib.suppress(OSError, ValueError):
            ids |= reconciled_ids(json.loads(path.read_text()))
    return ids


class SafetyWatch:
    """Pinned writers around a scenario, then the checker's report.

    Start it before breaking anything; `finish` once the scenario has healed (it waits
    `settle` seconds, asks every region whether it accepts a write, and stops the
    writers); `report` once any rejoin has listed what it set aside.
    """

    def __init__(self, lab_dir: Path, run: int | None = None, *, rate: float = RATE) -> None:
        self.lab_dir = lab_dir
        # Milliseconds since the epoch: apart from the drill's round numbers, and from
        # every earlier watch on the same lab.
        self.run = run if run is not None else int(time.time() * 1000)
        self.writers = Writers(lab.load(lab_dir), self.run, rate=rate)
        self.writes: list[Write] | None = None
        self.writable: dict[str, str | None] = {}

    def start(self) -> SafetyWatch:
        self.writers.start()
        return self

    def __enter__(self) -> SafetyWatch:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> list[Write]:
        if self.writes is None:
            self.writes = self.writers.stop()
        return self.writes

    def finish(self, settle: float) -> dict[str, str | None]:
        time.sleep(settle)
        self.writable = probe_writable(lab.load(self.lab_dir), self.run)
        self.stop()
        return self.writable

    def report(self) -> CheckReport:
        seen = read_databases(lab.load(self.lab_dir), self.run)
        seen.reconciled = read_reconciliation(self.lab_dir)
        seen.writable = self.writable
        return analyse(self.stop(), seen)

