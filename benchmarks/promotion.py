"""Promotion time: from the start of the promotion until the new primary accepts a write.

Each run: a fresh database on three loopback servers, alpha publishing to
bravo and charlie with heartbeats, some rows, the probe's inspection, then
alpha is SIGKILLed and bravo promoted. Timed: plan + steps up to bravo
taking the writer role + one application insert on bravo that succeeds.
Also reported: the whole promotion including re-pointing charlie.

    .venv/bin/python -m benchmarks.promotion --runs 20
    .venv/bin/python -m benchmarks.promotion --runs 20 --cli   # `failover promote` as a process
    FAILOVER_PG_BINDIR=/usr/lib/postgresql/15/bin .venv/bin/python -m benchmarks.promotion
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from failover.lab.postgres import pg_bindir
from failover.postgres.promote import promotion_steps
from failover.postgres.steps import SqlStep, StepResult, run_steps
from tests.support.pg import (
    ServiceDb,
    fresh_service_db,
    probe,
    replicate_from_alpha,
    running_cluster,
    write_rows,
    write_topology,
)

TARGET_MS = 500.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def prepare_dead_primary(sdb: ServiceDb) -> None:
    replicate_from_alpha(sdb)
    write_rows(sdb, "alpha", 20, "before")
    sdb.wait_same("alpha", "bravo")
    sdb.wait_same("alpha", "charlie")
    probe(sdb, "bravo", "charlie")
    sdb.server("alpha").kill()
    sdb.db.close()  # a promoting process starts with no sessions


def one_promotion(sdb: ServiceDb) -> tuple[float, float]:
    """(ms until bravo accepted a write, ms for the whole promotion)."""
    prepare_dead_primary(sdb)

    accepted: list[float] = []

    def on_event(step: SqlStep, result: StepResult | None) -> None:
        if result is not None and step.name.startswith("bump the epoch"):
            with psycopg.connect(sdb.app_conninfo("bravo"), autocommit=True) as conn:
                conn.execute("INSERT INTO items (note) VALUES ('first write')")
            accepted.append(time.perf_counter())

    started = time.perf_counter()
    plan = promotion_steps(sdb.db, "bravo")
    run_steps(plan.steps, on_event=on_event)
    finished = time.perf_counter()
    return (accepted[0] - started) * 1000, (finished - started) * 1000


def one_cli_promotion(sdb: ServiceDb, topology: Path) -> tuple[float, float]:
    """The same through `failover promote --yes` in a new process: (ms until bravo accepted
    a write, polled every 5 ms; ms until the command exited)."""
    prepare_dead_primary(sdb)
    started = time.perf_counter()
    command = subprocess.Popen(
        [sys.executable, "-m", "failover", "promote", "shop", "bravo", "--direct", "-t", str(topology),
         "--yes"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    accepted = None
    while accepted is None:
        try:
            with psycopg.connect(sdb.app_conninfo("bravo"), autocommit=True,
                                 connect_timeout=2) as conn:
                conn.execute("INSERT INTO items (note) VALUES ('first write')")
            accepted = time.perf_counter()
        except psycopg.Error:
            if command.poll() not in (None, 0):
                raise RuntimeError(f"failover promote failed: {command.communicate()[1]}") from None
            time.sleep(0.005)
    command.wait(timeout=60)
    return (accepted - started) * 1000, (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cli", action="store_true",
                        help="run `failover promote` as a new process (Python start included)")
    args = parser.parse_args()
    bindir = pg_bindir()
    writable: list[float] = []
    total: list[float] = []
    with running_cluster(bindir) as cluster:
        print(f"PostgreSQL {cluster.version} from {bindir}, {args.runs} runs")
        for run in range(args.runs):
            with fresh_service_db(cluster) as sdb, tempfile.TemporaryDirectory() as folder:
                if args.cli:
                    topology = write_topology(sdb, Path(folder) / "topology")
                    accepted_ms, total_ms = one_cli_promotion(sdb, topology)
                else:
                    accepted_ms, total_ms = one_promotion(sdb)
            writable.append(accepted_ms)
            total.append(total_ms)
            print(f"run {run + 1:2d}: writable after {accepted_ms:6.1f} ms, "
                  f"all steps {total_ms:6.1f} ms", flush=True)
    median, p99 = statistics.median(writable), percentile(writable, 0.99)
    print(f"until the new primary accepted a write: median {median:.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(writable):.1f} ms (target < {TARGET_MS:.0f} ms: "
          f"{'met' if p99 < TARGET_MS else 'MISSED'})")
    print(f"{'the command, until it exited' if args.cli else 'all steps'} (incl. re-pointing "
          f"charlie): median {statistics.median(total):.1f} ms, p99 {percentile(total, 0.99):.1f} ms")


if __name__ == "__main__":
    main()
