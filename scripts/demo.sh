#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: the three-region lab on this
# machine, one drill round (the writer region's PostgreSQL is killed under a client
# workload), and the timeline the controllers journaled. The lab keeps running:
# `.venv/bin/failover lab down --purge` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
lab=.failover-lab
if [ -f "$lab/lab.json" ]; then as_root .venv/bin/failover lab down --dir "$lab" --purge; fi
as_root .venv/bin/failover lab up --dir "$lab"
as_root .venv/bin/failover lab drill --dir "$lab" --rounds 1 --kind crash
as_root .venv/bin/failover history --topology "$lab/topology" --since 2m
echo "the lab is still up: .venv/bin/failover status --topology $lab/topology; stop it with: .venv/bin/failover lab down --dir $lab --purge"
