"""Time one engine evaluation: 100 services x 5 regions x 5 observers.

Run: .venv/bin/python benchmarks/engine.py [--iterations N]
Pins itself to one core; prints median and p99 per evaluation for a healthy
fleet, for the evaluation that fails over the fifth of the services whose
writer is in a region that just went DOWN (and drops that region from every
reader record), and for the evaluations that follow it; exits 1 when a
median misses the 1 ms target. The figures are
thread CPU time, so that other processes on a shared machine do not count;
wall-clock figures are printed alongside.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

from failover.engine import (
    ClusterState,
    Health,
    Observation,
    Policy,
    RegionPolicy,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    apply_plan,
    decide,
    majority,
)

REGIONS = ("r1", "r2", "r3", "r4", "r5")
SERVICES = tuple(f"svc{i:03d}" for i in range(100))
NOW = 1_700_000_000.0
TARGET_SECONDS = 0.001


def build_policy() -> Policy:
    return Policy(
        regions=tuple(RegionPolicy(name, 50 - i) for i, name in enumerate(REGIONS)),
        services=tuple(ServicePolicy(s, frozenset(REGIONS), 16 << 20, 30.0, 300.0)
                       for s in SERVICES),
        quorum=majority(len(REGIONS)),
        observation_max_age=10.0,
        self_fence_after=5.0,
    )


def writer_of(index: int) -> str:
    return REGIONS[index % len(REGIONS)]


def build_state() -> ClusterState:
    return ClusterState(tuple(
        ServiceState(s, writer_of(i), epoch=3, readers=frozenset(REGIONS))
        for i, s in enumerate(SERVICES)
    ))


def build_observations(down: str | None) -> list[Observation]:
    observations = []
    for o_index, observer in enumerate(REGIONS):
        for target in REGIONS:
            replications = tuple(
                Replication(s, Role.PRIMARY if writer_of(i) == target else Role.SUBSCRIBER,
                            epoch=3, applied_lsn=0x3000000 + i * 7 + o_index,
                            lag_bytes=128, lag_seconds=0.4, ready=True)
                for i, s in enumerate(SERVICES)
            )
            health = Health.UNHEALTHY if target == down else Health.HEALTHY
            observations.append(Observation(observer, target, health, 3,
                                            NOW - 0.5 - o_index * 0.1, replications))
    return observations


def measure(label: str, observations: list[Observation], state: ClusterState, policy: Policy,
            iterations: int) -> float:
    for _ in range(50):
        decide(observations, state, policy, NOW, "r2")
    cpu, wall = [], []
    gc.collect()
    for _ in range(iterations):
        start_cpu, start_wall = time.thread_time_ns(), time.perf_counter_ns()
        decision = decide(observations, state, policy, NOW, "r2")
        cpu.append(time.thread_time_ns() - start_cpu)
        wall.append(time.perf_counter_ns() - start_wall)
    changes = len(decision.plan.changes())
    print(f"{label:<24} cpu median {_ms(cpu, 0.5)} p99 {_ms(cpu, 0.99)}   "
          f"wall median {_ms(wall, 0.5)} p99 {_ms(wall, 0.99)}   "
          f"({changes} actions, {iterations} runs)")
    return statistics.median(cpu) / 1e9


def _calibration_ms() -> float:
    samples = []
    for _ in range(200):
        start = time.thread_time_ns()
        sum(range(10000))
        samples.append(time.thread_time_ns() - start)
    return statistics.median(samples) / 1e6


def _ms(samples: list[int], quantile: float) -> str:
    ordered = sorted(samples)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * quantile))] / 1e6:.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    policy, state = build_policy(), build_state()
    print(f"{len(SERVICES)} services x {len(REGIONS)} regions x {len(REGIONS)} observers, "
          f"one core, Python {sys.version.split()[0]}; this machine runs "
          f"sum(range(10000)) in {_calibration_ms():.3f} ms CPU (a yardstick for comparing "
          "figures across machines and loads)")
    r1_down = build_observations("r1")
    failed_over = apply_plan(state, decide(r1_down, state, policy, NOW, "r2").plan)
    worst = max(
        measure("all regions UP", build_observations(None), state, policy, args.iterations),
        measure("r1 DOWN: 20 failovers", r1_down, state, policy, args.iterations),
        measure("r1 DOWN: after them", r1_down, failed_over, policy, args.iterations),
    )
    met = worst < TARGET_SECONDS
    print(f"target: median CPU time < {TARGET_SECONDS * 1e3:g} ms: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
