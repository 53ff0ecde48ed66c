#!/usr/bin/env bash
# Set up, then run the whole suite: lint, types, unit, integration and chaos tests.
# Servers (PostgreSQL 18 and 15, BIND9, etcd, moto, the lab) are started by the tests themselves.
#
#   bash scripts/test.sh                  everything (the chaos suite beside the rest)
#   bash scripts/test.sh tests/unit -x    only what you name (pytest arguments)
#   FAILOVER_CHAOS=0 bash scripts/test.sh everything but the chaos suite (says so loudly)
#   FAILOVER_CHAOS_TLS=1 bash scripts/test.sh   the chaos labs come up with `lab up --tls`
#                                         (a throwaway CA; PostgreSQL from FAILOVER_PG_BINDIR
#                                         or Debian's 15, the embedded one has no TLS)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check failover tests benchmarks
echo "== mypy (strict, failover/)"
.venv/bin/mypy
echo "== pytest"
workers=(-n "${FAILOVER_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
if [ $# -gt 0 ]; then
  exec .venv/bin/pytest "${workers[@]}" "$@"
fi
if [ "${FAILOVER_CHAOS:-1}" = 0 ]; then
  echo "=================================================================="
  echo "== CHAOS SUITE NOT RUN (tests/chaos): FAILOVER_CHAOS=0 was set"
  echo "=================================================================="
  exec .venv/bin/pytest "${workers[@]}" -m "not chaos"
fi
# The chaos suite drives the lab (fixed loopback addresses: one lab at a time) and spends
# its time waiting for failovers, so it runs in its own process beside the rest.
chaos_log=$(mktemp /tmp/failover-chaos.XXXXXX.log)
# One round a scenario here: each round now also lets the fleet settle for 20 s and
# has the checker read every database, and three rounds took 27 minutes.
# FAILOVER_CHAOS_ROUNDS=3 (or 20) runs more.
FAILOVER_CHAOS_ROUNDS="${FAILOVER_CHAOS_ROUNDS:-1}" \
  .venv/bin/pytest -m chaos tests/chaos -p no:cacheprovider -rA --durations=40 >"$chaos_log" 2>&1 &
chaos_pid=$!
rest=0
.venv/bin/pytest "${workers[@]}" -m "not chaos" --durations=25 || rest=$?
chaos=0
wait "$chaos_pid" || chaos=$?
echo "== chaos suite (tests/chaos), run beside the rest; its log: $chaos_log"
cat "$chaos_log"
echo "== pytest exit codes: rest $rest, chaos $chaos"
[ "$rest" = 0 ] && [ "$chaos" = 0 ]
