"""What the lease guard costs each write: single-row INSERTs as the application role,
into a guarded table and into an identical one without the guard, on each PostgreSQL.

The two tables take turns statement by statement (after a warm-up), so that drift on a
busy machine hits both alike. Each statement is timed from the client over loopback
TCP, prepared after its fifth run as psycopg does. Two modes: autocommit (each INSERT
its own transaction, with its commit) and blocks of INSERTs in one transaction (the
statement without its commit).

    .venv/bin/python -m benchmarks.lease_trigger                      # every PostgreSQL here
    .venv/bin/python -m benchmarks.lease_trigger --statements 20000
    FAILOVER_PG_BINDIR=/usr/lib/postgresql/15/bin .venv/bin/python -m benchmarks.lease_trigger
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from failover.postgres.lease import renew_lease
from failover.postgres.state import record_role
from tests.support.pg import (
    APP_ROLE,
    SERVICE,
    ServiceDb,
    available_bindirs,
    fresh_service_db,
    running_cluster,
)

_TABLE = "(id bigserial PRIMARY KEY, note text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
_BLOCK = 500


@dataclass(frozen=True)
class Figures:
    median_us: float
    p99_us: float
    per_second: float

    @classmethod
    def of(cls, nanoseconds: list[int]) -> Figures:
        micro = [n / 1000 for n in nanoseconds]
        return cls(statistics.median(micro), statistics.quantiles(micro, n=100)[98],
                   len(micro) / (sum(micro) / 1e6))


def _prepare(sdb: ServiceDb) -> None:
    """alpha the leased writer; `guarded` gets the guard from the event trigger, `plain` is
    made in a replica session, where event triggers do not fire."""
    with sdb.admin("alpha") as conn:
        record_role(conn, SERVICE, "primary", 1)
    with sdb.server("alpha").connect(sdb.dbname) as conn:
        conn.execute(f"CREATE TABLE guarded {_TABLE}")
        conn.execute(f"GRANT INSERT ON guarded TO {APP_ROLE}")
        # Any later DDL outside a replica session would guard `plain` too.
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(f"CREATE TABLE plain {_TABLE}")
            conn.execute(f"GRANT INSERT ON plain TO {APP_ROLE}")
            conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
        guards = conn.execute("SELECT tgrelid::regclass::text FROM pg_trigger "
                              "WHERE tgname = 'failover_lease_guard' "
                              "AND tgrelid IN ('guarded'::regclass, 'plain'::regclass)").fetchall()
        assert guards == [("guarded",)], guards
        renew_lease(conn, SERVICE, "alpha", 1, 3600.0)


def _block(conn: psycopg.Connection[tuple[object, ...]], pairs: int,
           one_transaction: bool) -> dict[str, list[int]]:
    timings: dict[str, list[int]] = {"guarded": [], "plain": []}
    if one_transaction:
        conn.execute("BEGIN")
    for _ in range(pairs):
        for table, statement in (("guarded", "INSERT INTO guarded (note) VALUES (%s)"),
                                 ("plain", "INSERT INTO plain (note) VALUES (%s)")):
            started = time.perf_counter_ns()
            conn.execute(statement, ["a single row"])
            timings[table].append(time.perf_counter_ns() - started)
    if one_transaction:
        conn.execute("COMMIT")
    return timings


def measure(sdb: ServiceDb, statements: int, *, one_transaction: bool) -> dict[str, Figures]:
    timings: dict[str, list[int]] = {"guarded": [], "plain": []}
    with psycopg.connect(sdb.app_conninfo("alpha"), autocommit=True) as conn:
        _block(conn, _BLOCK, one_transaction)  # warm-up: caches, prepared plans
        while len(timings["plain"]) < statements:
            block = _block(conn, min(_BLOCK, statements - len(timings["plain"])),
                           one_transaction)
            for table, taken in block.items():
                timings[table].extend(taken)
    return {table: Figures.of(taken) for table, taken in timings.items()}


def report(version: int, mode: str, figures: dict[str, Figures]) -> None:
    guarded, plain = figures["guarded"], figures["plain"]
    for label, f in (("without the guard", plain), ("with the guard", guarded)):
        print(f"PostgreSQL {version} {mode:16s} {label:18s} median {f.median_us:7.1f} µs  "
              f"p99 {f.p99_us:7.1f} µs  {f.per_second:8.0f} statements/s")
    print(f"PostgreSQL {version} {mode:16s} the guard costs    median "
          f"{guarded.median_us - plain.median_us:+7.1f} µs  p99 {guarded.p99_us - plain.p99_us:+7.1f} µs"
          f"  throughput {100 * (guarded.per_second / plain.per_second - 1):+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=5000,
                        help="INSERTs per table and mode (default 5000)")
    args = parser.parse_args()
    bindirs: list[tuple[str, Path]] = available_bindirs()
    for _, bindir in bindirs:
        with running_cluster(bindir) as cluster, fresh_service_db(cluster) as sdb:
            _prepare(sdb)
            print(f"PostgreSQL {cluster.version} from {bindir}: {args.statements} single-row "
                  f"INSERTs per table and mode, as role {APP_ROLE}", flush=True)
            for mode, one_transaction in (("autocommit", False), ("one transaction", True)):
                report(cluster.version, mode,
                       measure(sdb, args.statements, one_transaction=one_transaction))


if __name__ == "__main__":
    main()
