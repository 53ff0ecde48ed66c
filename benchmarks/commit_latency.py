"""Commit latency on the writer for durability async, sync k=1 and sync k=2.

Three loopback servers of its own (as the integration tests start them, never the lab):
alpha publishing to bravo and charlie. The writer's synchronous_standby_names is set by
the controller's own step (`ANY k` of the two subscriptions' names); then the application
role inserts one row per autocommit transaction, one after the other, and each commit is
timed from the client. Heartbeats and lease renewals are stopped while measuring (one long
lease instead), so that only the measured commits reach the server. Bounded per mode by
--commits and --seconds.

    .venv/bin/python -m benchmarks.commit_latency --commits 2000
    .venv/bin/python -m benchmarks.commit_latency --durable --json   # fsync on
    FAILOVER_PG_BINDIR=/usr/lib/postgresql/15/bin .venv/bin/python -m benchmarks.commit_latency
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import psycopg

from failover.engine import SyncStandbys
from failover.lab.postgres import pg_bindir
from failover.postgres.names import standby_name
from failover.postgres.state import recorded_epoch
from failover.postgres.steps import run_steps
from failover.postgres.sync import sync_standbys_step
from tests.support.pg import (
    SERVICE,
    ServiceDb,
    fresh_service_db,
    replicate_from_alpha,
    running_cluster,
)

SUBSCRIBERS = ("bravo", "charlie")
NAMES = tuple(sorted(standby_name(SERVICE, region) for region in SUBSCRIBERS))
MODES = {"async": SyncStandbys(), "sync k=1": SyncStandbys(NAMES, 1),
         "sync k=2": SyncStandbys(NAMES, 2)}
WARMUP = 50


def set_standbys(sdb: ServiceDb, standbys: SyncStandbys) -> None:
    epoch = recorded_epoch(sdb.db.conn("alpha"), SERVICE)
    run_steps([sync_standbys_step(sdb.db, "alpha", epoch, standbys)])


def measure(sdb: ServiceDb, commits: int, seconds: float) -> list[float]:
    """Milliseconds per commit of a one-row insert, after a warm-up."""
    latencies: list[float] = []
    with psycopg.connect(sdb.app_conninfo("alpha"), autocommit=True) as conn:
        for i in range(WARMUP):
            conn.execute("INSERT INTO items (note) VALUES (%s)", [f"warm-up {i}"])
        deadline = time.monotonic() + seconds
        while len(latencies) < commits and time.monotonic() < deadline:
            started = time.perf_counter()
            conn.execute("INSERT INTO items (note) VALUES ('measured')")
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def figures(latencies: list[float]) -> dict[str, Any]:
    return {"commits": len(latencies), "p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 3),
            "max_ms": round(max(latencies), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000, help="per mode, at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="per mode, at most")
    parser.add_argument("--durable", action="store_true",
                        help="fsync on (the tests' servers run with fsync off)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bindir = pg_bindir()
    results: dict[str, dict[str, Any]] = {}
    with running_cluster(bindir, durable=args.durable) as cluster, \
            fresh_service_db(cluster) as sdb:
        replicate_from_alpha(sdb)
        sdb.stop_background_writes("alpha")
        try:
            for mode, standbys in MODES.items():
                set_standbys(sdb, standbys)
                results[mode] = figures(measure(sdb, args.commits, args.seconds))
                if not args.json:
                    result = results[mode]
                    print(f"{mode:9s} {result['commits']:5d} commits: p50 {result['p50_ms']:.3f} "
                          f"ms, p99 {result['p99_ms']:.3f} ms, max {result['max_ms']:.3f} ms",
                          flush=True)
        finally:
            set_standbys(sdb, SyncStandbys())  # or dropping the database would wait for ever
        version = cluster.version
    setup = {"postgres": version, "fsync": args.durable, "servers": 3}
    if args.json:
        print(json.dumps({**setup, "modes": results}, indent=2))
    else:
        print(f"PostgreSQL {version} from {bindir}, fsync {'on' if args.durable else 'off'}, "
              "writer + 2 subscribers on loopback")


if __name__ == "__main__":
    main()
