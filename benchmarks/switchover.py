"""Switchover write pause under a writer at 100 writes per second, and writes lost.

Each run: a fresh database on three loopback servers, alpha publishing to
bravo and charlie; an application writer inserts 100 rows per second as the
application role into whichever region accepts them (it moves on any error);
then a planned switchover alpha -> bravo. Measured: the longest gap between
two acknowledged writes (the pause the application sees), and how many
acknowledged writes are missing on bravo afterwards (must be 0).

    .venv/bin/python -m benchmarks.switchover --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from itertools import pairwise

import psycopg

from failover.lab.postgres import pg_bindir
from failover.postgres.steps import run_steps
from failover.postgres.switchover import switchover_steps
from tests.support.pg import ServiceDb, fresh_service_db, replicate_from_alpha, running_cluster

RATE = 100.0
TARGET_PAUSE = 2.0


class PacedWriter(threading.Thread):
    def __init__(self, sdb: ServiceDb) -> None:
        super().__init__(daemon=True)
        self.sdb = sdb
        self.acknowledged: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        regions, current, counter = ("alpha", "bravo"), 0, 0
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        next_at = time.perf_counter()
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.sdb.app_conninfo(regions[current]),
                                           autocommit=True, connect_timeout=2)
                note = f"w{counter}"
                conn.execute("INSERT INTO items (note) VALUES (%s)", [note])
                counter += 1
                self.acknowledged.append((time.perf_counter(), note))
                next_at += 1 / RATE
                time.sleep(max(0.0, next_at - time.perf_counter()))
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn, current = None, 1 - current  # try the other region at once
                next_at = time.perf_counter()
        if conn is not None:
            conn.close()


def one_switchover(sdb: ServiceDb) -> tuple[float, float, int]:
    """(longest pause s, switchover duration s, acknowledged writes missing on bravo)."""
    replicate_from_alpha(sdb)
    writer = PacedWriter(sdb)
    writer.start()
    time.sleep(1.0)
    started = time.perf_counter()
    run_steps(switchover_steps(sdb.db, "bravo", timeout=30).steps)
    duration = time.perf_counter() - started
    time.sleep(1.0)
    writer.stopping.set()
    writer.join(timeout=10)
    times = [at for at, _ in writer.acknowledged]
    pause = max(later - earlier for earlier, later in pairwise(times))
    with sdb.admin("bravo") as conn:
        present = {str(row[0]) for row in conn.execute("SELECT note FROM items").fetchall()}
    missing = sum(1 for _, note in writer.acknowledged if note not in present)
    return pause, duration, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bindir = pg_bindir()
    pauses: list[float] = []
    lost = 0
    with running_cluster(bindir) as cluster:
        print(f"PostgreSQL {cluster.version} from {bindir}, {args.runs} runs at {RATE:g} writes/s")
        for run in range(args.runs):
            with fresh_service_db(cluster) as sdb:
                pause, duration, missing = one_switchover(sdb)
            pauses.append(pause)
            lost += missing
            print(f"run {run + 1}: longest write pause {pause * 1000:6.0f} ms, switchover "
                  f"{duration * 1000:6.0f} ms, acknowledged writes missing: {missing}", flush=True)
    print(f"write pause: median {statistics.median(pauses) * 1000:.0f} ms, max "
          f"{max(pauses) * 1000:.0f} ms (target < {TARGET_PAUSE:g} s: "
          f"{'met' if max(pauses) < TARGET_PAUSE else 'MISSED'}); acknowledged writes lost: {lost}")


if __name__ == "__main__":
    main()
