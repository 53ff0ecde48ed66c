#!/usr/bin/env bash
# Set up, then run the whole suite: lint, types, unit, integration and chaos tests.
# Servers (PostgreSQL 18 and 15, BIND9, etcd, moto) are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check failover tests benchmarks
echo "== mypy (strict, failover/)"
.venv/bin/mypy
echo "== pytest"
marks=()
if [ "${FAILOVER_CHAOS:-0}" != 1 ]; then
  # The lab chaos suite (tests/chaos) is not yet stable on a loaded 2-core machine:
  # a crashed lab server sometimes fails to restart (see issue 6). Run it with
  # FAILOVER_CHAOS=1 bash scripts/test.sh, or .venv/bin/pytest tests/chaos.
  echo "=================================================================="
  echo "== CHAOS SUITE NOT RUN (tests/chaos): set FAILOVER_CHAOS=1 to run it"
  echo "=================================================================="
  marks=(-m "not chaos")
fi
exec .venv/bin/pytest -n "${FAILOVER_TEST_WORKERS:-2}" --dist loadfile "${marks[@]}" "$@"
