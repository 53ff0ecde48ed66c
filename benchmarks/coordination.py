"""Failover RTO with etcd against the peer exchange: the same lab drill, side by side.

Target (issue 8): etcd no more than 0.5 s slower than peers at p99.

Run as root: .venv/bin/python benchmarks/coordination.py [--rounds 5] [--kind crash]
It brings a lab up with each backend in turn (in /tmp/failover-bench-lab) and
takes it down again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from failover.lab.build import down, up
from failover.lab.drill import drill

LAB = Path("/tmp/failover-bench-lab")


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kind", default="crash")
    args = parser.parse_args()
    figures = {}
    for backend in ("peers", "etcd"):
        if (LAB / "lab.json").exists():
            down(LAB, purge=True, progress=say)
        up(LAB, coordination=backend, progress=say)
        try:
            report = drill(LAB, [args.kind], args.rounds, say)
        finally:
            down(LAB, purge=True, progress=say)
        figures[backend] = report["kinds"][args.kind]
    slower = None
    if figures["peers"]["rto_s"]["p99"] is not None and figures["etcd"]["rto_s"]["p99"] is not None:
        slower = figures["etcd"]["rto_s"]["p99"] - figures["peers"]["rto_s"]["p99"]
    print(json.dumps({"kind": args.kind, "rounds": args.rounds, "peers": figures["peers"],
                      "etcd": figures["etcd"], "etcd_slower_at_p99_s": slower,
                      "target_s": 0.5}, indent=2))
    return 0 if slower is not None and slower <= 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
