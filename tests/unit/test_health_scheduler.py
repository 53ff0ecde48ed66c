"""The probe scheduler: thresholds over consecutive runs, transitions, no pile-up, clean stop.

The probes here are scripted stand-ins (the scheduler's logic is under test,
not a network); tests/integration/test_probes_scheduler.py drives real servers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from failover.health.probe import ProbeResult
from failover.health.scheduler import ProbeScheduler, Transition
from failover.health.targets import ProbeTarget
from failover.health.thresholds import HealthState
from failover.topology import TcpCheck

H, U, UNKNOWN = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN
INTERVAL = 0.05
PATIENCE = 20.0  # seconds before a wait gives up: a failure, never a pass


class ScriptedProbe:
    """Answers from a script (the last answer repeats), optionally slowly."""

    def __init__(self, script: list[bool], *, takes: float = 0.0) -> None:
        self.script = script
        self.takes = takes
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def run(self) -> ProbeResult:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.takes:
                await asyncio.sleep(self.takes)
            ok = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
            return ProbeResult(ok, self.takes, "ok" if ok else "scripted failure")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


def target(probe: ScriptedProbe, *, name: str = "port", healthy: int = 2,
           unhealthy: int = 3) -> ProbeTarget:
    check = TcpCheck(kind="tcp", name=name, host="127.0.0.1", port=1, interval=INTERVAL,
                     timeout=INTERVAL / 2, healthy_threshold=healthy,
                     unhealthy_threshold=unhealthy)
    return ProbeTarget("alpha", check, probe)


async def wait_for(condition: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while not condition():
        assert loop.time() < deadline, "the scheduler did not get there in time"
        await asyncio.sleep(INTERVAL / 2)


def test_transitions_follow_the_thresholds_over_consecutive_runs() -> None:
    script = [True, True, False, False, False, True, False, True, True]
    probe = ScriptedProbe(script)
    seen: list[Transition] = []

    async def scenario() -> None:
        scheduler = ProbeScheduler([target(probe)], seen.append, rng=random.Random(1))
        scheduler.start()
        await wait_for(lambda: probe.calls >= len(script))
        await scheduler.stop()
        status = scheduler.status()[("alpha", "port")]
        assert status.state is H
        assert status.last_result is not None and status.last_result.ok
        assert scheduler.probes_run == probe.calls
        assert len(scheduler.start_delays) == probe.calls

    asyncio.run(scenario())
    assert [(t.previous, t.current, t.consecutive) for t in seen] == [
        (UNKNOWN, H, 2), (H, U, 3), (U, H, 2)]
    assert seen[1].result.reason == "scripted failure"
    assert all(t.region == "alpha" and t.check == "port" for t in seen)


def test_every_check_has_its_own_state() -> None:
    up, down = ScriptedProbe([True]), ScriptedProbe([False])

    async def scenario() -> dict[str, HealthState]:
        scheduler = ProbeScheduler([target(up, name="up"), target(down, name="down")])
        scheduler.start()
        await wait_for(lambda: up.calls >= 3 and down.calls >= 3)
        await scheduler.stop()
        return {check: status.state for (_, check), status in scheduler.status().items()}

    assert asyncio.run(scenario()) == {"up": H, "down": U}


def test_checks_of_one_interval_are_spread_across_it() -> None:
    started: list[float] = []

    class Recorder(ScriptedProbe):
        async def run(self) -> ProbeResult:
            if self.calls == 0:
                started.append(asyncio.get_running_loop().time())
            return await super().run()

    interval = 1.0
    probes = [Recorder([True]) for _ in range(100)]
    targets = [ProbeTarget("alpha", TcpCheck(kind="tcp", name=f"c{index}", host="127.0.0.1",
                                             port=1, interval=interval, timeout=0.5), probe)
               for index, probe in enumerate(probes)]

    async def scenario() -> None:
        scheduler = ProbeScheduler(targets, rng=random.Random(7))
        scheduler.start()
        await wait_for(lambda: len(started) == len(probes))
        await scheduler.stop()

    asyncio.run(scenario())
    # All at the start of the interval would be a burst every second.
    assert max(started) - min(started) > interval / 2


def test_a_check_not_yet_run_is_unknown() -> None:
    scheduler = ProbeScheduler([target(ScriptedProbe([True]))])
    status = scheduler.status()[("alpha", "port")]
    assert status.state is UNKNOWN and status.last_result is None


def test_inconclusive_results_leave_the_state_and_the_runs_alone() -> None:
    class Overloaded(ScriptedProbe):
        async def run(self) -> ProbeResult:
            result = await super().run()
            if result.ok:
                return result
            return ProbeResult(False, 0.0, "timeout, inconclusive", conclusive=False)

    probe = Overloaded([True, True] + [False] * 5 + [True])
    seen: list[Transition] = []

    async def scenario() -> ProbeScheduler:
        scheduler = ProbeScheduler([target(probe)], seen.append)
        scheduler.start()
        await wait_for(lambda: probe.calls >= 8)
        await scheduler.stop()
        return scheduler

    scheduler = asyncio.run(scenario())
    assert [(t.previous, t.current) for t in seen] == [(UNKNOWN, H)]
    assert scheduler.probes_inconclusive == 5
    # The success after the inconclusive ones continues the earlier run of successes.
    assert scheduler.status()[("alpha", "port")].health.consecutive == probe.calls - 5


def test_a_failing_transition_callback_does_not_stop_health_checking() -> None:
    probe = ScriptedProbe([True, True, False, False, False])
    calls: list[HealthState] = []

    def broken_journal(transition: Transition) -> None:
        calls.append(transition.current)
        raise OSError("journal disk full")

    async def scenario() -> None:
        scheduler = ProbeScheduler([target(probe)], broken_journal)
        scheduler.start()
        await wait_for(lambda: len(calls) >= 2)
        await scheduler.stop()

    asyncio.run(scenario())
    assert calls == [H, U]


def test_a_slow_probe_never_runs_twice_at_once_and_its_late_runs_are_skipped() -> None:
    probe = ScriptedProbe([True], takes=INTERVAL * 3)

    async def scenario() -> int:
        scheduler = ProbeScheduler([target(probe)])
        scheduler.start()
        await wait_for(lambda: probe.calls >= 4)
        await scheduler.stop()
        return scheduler.runs_skipped

    skipped = asyncio.run(scenario())
    assert probe.most_in_flight == 1
    assert skipped > 0


def test_an_overloaded_loop_skips_late_probes_instead_of_running_all_of_them_late() -> None:
    class Hog(ScriptedProbe):
        async def run(self) -> ProbeResult:
            time.sleep(0.03)  # CPU the loop does not have: 10 x 30 ms per 100 ms interval
            return await super().run()

    probes = [Hog([True]) for _ in range(10)]
    targets = [ProbeTarget("alpha", TcpCheck(kind="tcp", name=f"c{index}", host="127.0.0.1",
                                             port=1, interval=0.1, timeout=0.05), probe)
               for index, probe in enumerate(probes)]

    async def scenario() -> ProbeScheduler:
        scheduler = ProbeScheduler(targets, rng=random.Random(3))
        scheduler.start()
        await wait_for(lambda: scheduler.runs_late >= 10)
        await scheduler.stop()
        return scheduler

    scheduler = asyncio.run(scenario())
    assert scheduler.probes_run > 0
    assert scheduler.runs_skipped >= scheduler.runs_late >= 10


def test_stop_waits_for_probes_in_flight_and_nothing_runs_after() -> None:
    probe = ScriptedProbe([True], takes=INTERVAL / 2)

    async def scenario() -> None:
        scheduler = ProbeScheduler([target(probe)])
        scheduler.start()
        await wait_for(lambda: probe.in_flight == 1)
        await scheduler.stop()
        assert probe.in_flight == 0
        calls = probe.calls
        await asyncio.sleep(INTERVAL * 4)
        assert probe.calls == calls

    asyncio.run(scenario())
