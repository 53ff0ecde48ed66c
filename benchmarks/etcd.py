"""etcd coordination figures on a real three-member cluster on loopback.

    .venv/bin/python benchmarks/etcd.py [--rounds 200] [--lease-ttl 5]

1. `exchange()` round trip (one transaction: put my observations, read everyone's
   and the records), `lead()` and `still_leading()`: median and p99.
2. The longest `still_leading()` while the etcd leader is killed: how long a plan
   stalls between two steps during an etcd election (it must answer True).
3. From a controller's SIGKILL until the others stop seeing its votes (lease expiry).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Health, Observation
from failover.lab.etcd import EtcdCluster, start_cluster
from failover.topology import EtcdSettings
from tests.support.etcd import OBSERVERS, failover_decision
from tests.support.loopback import allocate_block

_DYING = """
import asyncio, sys, time
from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Health, Observation
from failover.topology import EtcdSettings
async def main():
    c = EtcdCoordinator("dying", EtcdSettings(endpoints=sys.argv[1].split(","), prefix=sys.argv[2],
                                              lease_ttl=float(sys.argv[3])),
                        observers=("dying", "b"), quorum=2)
    await c.start()
    await c.exchange([Observation("dying", "x", Health.HEALTHY, 1, time.time())])
    print("ready", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1000, 2),
            "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
            "max_ms": round(max(samples) * 1000, 2)}


async def timed(samples: list[float], call: Any) -> Any:
    started = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - started)
    return result


async def latencies(cluster: EtcdCluster, rounds: int, ttl: float) -> dict[str, Any]:
    settings = EtcdSettings(endpoints=cluster.endpoints, prefix="/bench/latency", lease_ttl=ttl)
    controllers = [EtcdCoordinator(name, settings, observers=OBSERVERS, quorum=2)
                   for name in OBSERVERS]
    for c in controllers:
        await c.start()
    exchange: list[float] = []
    lead: list[float] = []
    check: list[float] = []
    try:
        for _ in range(rounds):
            for c in controllers:
                mine = [Observation(c.me, t, Health.HEALTHY, 3, time.time()) for t in "abc"]
                await timed(exchange, c.exchange(mine))
            held = await timed(lead, controllers[0].lead(failover_decision("a")))
            assert held is not None
            assert await timed(check, controllers[0].still_leading(held))
    finally:
        for c in controllers:
            await c.close()
    return {"exchange": summary(exchange), "lead": summary(lead), "still_leading": summary(check)}


async def stall_during_election(cluster: EtcdCluster, ttl: float) -> dict[str, Any]:
    settings = EtcdSettings(endpoints=cluster.endpoints, prefix="/bench/election", lease_ttl=ttl)
    a = EtcdCoordinator("a", settings, observers=OBSERVERS, quorum=2)
    await a.start()
    try:
        held = await a.lead(failover_decision("a"))
        assert held is not None
        victim = cluster.leader()
        victim.kill()
        checks: list[float] = []
        answers = [await timed(checks, a.still_leading(held)) for _ in range(20)]
        victim.start()
        cluster.wait_ready()
        return {"killed": victim.name, "all_true": all(answers), **summary(checks)}
    finally:
        await a.close()


async def vote_expiry(cluster: EtcdCluster, ttl: float) -> float:
    prefix = "/bench/expiry"
    dying = subprocess.Popen([sys.executable, "-c", _DYING, ",".join(cluster.endpoints), prefix,
                              str(ttl)], stdout=subprocess.PIPE, text=True)
    b = EtcdCoordinator("b", EtcdSettings(endpoints=cluster.endpoints, prefix=prefix,
                                          lease_ttl=ttl), observers=("dying", "b"), quorum=2)
    await b.start()
    try:
        assert dying.stdout is not None and dying.stdout.readline().strip() == "ready"
        dying.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        while True:
            await b.exchange([])
            if not any(o.observer == "dying" for o in b.observations()):
                return round(time.perf_counter() - killed, 2)
            await asyncio.sleep(0.05)
    finally:
        dying.kill()
        dying.wait()
        await b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    args = parser.parse_args()
    block = allocate_block()
    workdir = Path(tempfile.mkdtemp(prefix="failover-bench-etcd-"))
    cluster = start_cluster(workdir, [block.address(i) for i in (1, 2, 3)])
    try:
        figures = {
            "lease_ttl_s": args.lease_ttl,
            "latency": asyncio.run(latencies(cluster, args.rounds, args.lease_ttl)),
            "still_leading_while_etcd_leader_killed":
                asyncio.run(stall_during_election(cluster, args.lease_ttl)),
            "dead_controller_votes_gone_after_s": asyncio.run(vote_expiry(cluster, args.lease_ttl)),
        }
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
