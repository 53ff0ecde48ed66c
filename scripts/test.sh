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
exec .venv/bin/pytest -n "${FAILOVER_TEST_WORKERS:-2}" --dist loadfile "$@"
