#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: the three-region lab on this
# machine, one drill round (the writer region's PostgreSQL is killed under a client
# workload), and the timeline the controllers journaled. The lab keeps running:
# `.venv/bin/failover lab down --purge` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
failover=.venv/bin/failover
# No --dir: the lab chooses a folder its servers' users can reach (.failover-lab here, or
# /var/lib/failover-lab when this checkout is closed to them, as under /root), and every
# lab verb run from here finds it again.
if as_root "$failover" lab status --json >/dev/null 2>&1; then
  as_root "$failover" lab down --purge
fi
as_root "$failover" lab up
topology=$(as_root "$failover" lab status --json |
  .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["topology"])')
as_root "$failover" lab drill --rounds 1 --kind crash
as_root "$failover" history --topology "$topology" --since 2m
echo "the lab is still up: $failover status --topology $topology; stop it with: $failover lab down --purge"
