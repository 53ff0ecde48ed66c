"""The probe scheduler: every check at its interval, results through the thresholds.

Runs on the controller's asyncio loop with APScheduler 3's AsyncIOScheduler.

Checks of equal interval are dealt (in random order) into phase buckets
spaced `BUCKET_SPACING` apart, and each bucket is one APScheduler job that
starts the probes of its checks. One job per check would cost APScheduler's
bookkeeping on every probe (measured: ~0.2 ms of CPU per run, as much as an
HTTP probe itself); a bucket pays it once for all its checks, while the
buckets still spread the checks evenly across the interval instead of firing
them all at its start. A fleet of a few dozen checks gets one bucket per check.

Each bucket job has `max_instances=1`, `coalesce=True` (runs missed while
the loop was busy collapse into one) and a `misfire_grace_time` of half the
interval (a run later than that is skipped: the next one is near; APScheduler
3 takes whole seconds, so at least 1 s). The job only starts probes, so a
slow probe never delays the other checks of its bucket; a check whose
previous probe is still running is skipped for that round, so probes of one
check never pile up.

The random phase is the jitter. APScheduler's own `jitter` is not used: it
adds the random offset to the previous (already jittered) fire time, so the
offsets accumulate and every interval grows by half the jitter on average.

Start delay (a probe's actual start minus its bucket's scheduled time) is
measured for every probe: it is how late the loop is, and a late loop means
stale health. A probe that would start more than half an interval late is
skipped instead: with more probes than CPU, running every one late makes
all of them time out (inconclusively), while skipping some lets the loop
catch up and the rest run on time.

Fall fast, rise slow (a check's `fast_interval`): after a failure, while the check is not
unhealthy yet, its next probe is a one-off timer `fast_interval` after the failing one
started, and its bucket leaves it alone meanwhile, so that the runs that decide are
spaced as the check says (a blip shorter than (unhealthy_threshold - 1) x fast_interval
never condemns). A success or the unhealthy verdict hands it back to its bucket. A probe
that keeps a session (`SessionProbe`) and sees the target close it starts one at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from failover.health.probe import ProbeResult, SessionProbe
from failover.health.targets import ProbeTarget, TargetKey
from failover.health.thresholds import HealthState, TargetHealth, observe

log = logging.getLogger(__name__)

# Buckets of one interval start this far apart (at most): 50 a second.
BUCKET_SPACING = 0.02

# Enough recent start delays for a p99 over several minutes of a large fleet.
START_DELAY_SAMPLES = 100_000

# The time APScheduler meant a run to start, handed from the executor to the
# job's task (a task copies the context it is created in).
_scheduled_for: contextvars.ContextVar[dt.datetime] = contextvars.ContextVar("scheduled_for")


class _StartTimeExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """AsyncIOExecutor that lets the job know when it was scheduled to run.

    APScheduler 3 does not pass the scheduled time to the job; it does pass it
    to `_do_submit_job` (stable across 3.x, and the dependency is pinned < 4).
    """

    def _do_submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
        token = _scheduled_for.set(run_times[-1])
        try:
            super()._do_submit_job(job, run_times)
        finally:
            _scheduled_for.reset(token)


@dataclass(frozen=True, slots=True)
class CheckStatus:
    """What the scheduler knows about one check now."""

    region: str
    check: str
    health: TargetHealth
    last_result: ProbeResult | None = None
    last_run_at: float | None = None  # epoch seconds, when the last probe finished
    start_delay_s: float | None = None  # of the last run
    # When the last successful probe started: the newest moment this check vouches for
    # the target. The writer's lease is bounded by the fleet's such moments.
    last_ok_at: float | None = None
    last_started_at: float | None = None  # when the last probe started: what it read is newer

    @property
    def state(self) -> HealthState:
        return self.health.state


@dataclass(frozen=True, slots=True)
class Transition:
    """A check's state crossed a threshold; the controller journals these."""

    region: str
    check: str
    purpose: str
    previous: HealthState
    current: HealthState
    consecutive: int
    result: ProbeResult
    at: float  # epoch seconds


TransitionCallback = Callable[[Transition], None]


ResultCallback = Callable[[ProbeTarget, ProbeResult], None]


class ProbeScheduler:
    def __init__(self, targets: Iterable[ProbeTarget],
                 on_transition: TransitionCallback | None = None,
                 *, rng: random.Random | None = None,
                 on_result: ResultCallback | None = None) -> None:
        self.targets = list(targets)
        self.on_transition = on_transition
        self.on_result = on_result  # every result, for metrics: must be cheap
        self._rng = rng or random.Random()  # noqa: S311 - spreads load, not a secret
        self._status: dict[TargetKey, CheckStatus] = {
            target.key: CheckStatus(target.region, target.check.name, TargetHealth())
            for target in self.targets
        }
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight: set[TargetKey] = set()
        # Checks between a failure and a verdict, re-probed on their own timer.
        self._fast: dict[TargetKey, asyncio.TimerHandle] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self.start_delays: deque[float] = deque(maxlen=START_DELAY_SAMPLES)
        self.probes_run = 0
        self.probes_inconclusive = 0  # timed out while this process was overloaded
        # Probes not started: late beyond the grace time or half an interval
        # (`runs_late`), or the check's previous probe was still running.
        self.runs_skipped = 0
        self.runs_late = 0

    def start(self) -> None:
        """Schedule every check; call from inside the running event loop."""
        if self._scheduler is not None:
            raise RuntimeError("the probe scheduler is already running")
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(),
                                     executors={"default": _StartTimeExecutor()},
                                     timezone=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        by_interval: dict[float, list[ProbeTarget]] = defaultdict(list)
        for target in self.targets:
            by_interval[target.check.interval].append(target)
        for interval, group in by_interval.items():
            self._rng.shuffle(group)
            count = max(1, min(len(group), math.ceil(interval / BUCKET_SPACING)))
            offset = self._rng.uniform(0, interval / count)
            for index in range(count):
                phase = dt.timedelta(seconds=offset + index * interval / count)
                scheduler.add_job(
                    self._start_bucket,
                    IntervalTrigger(seconds=interval, start_date=now + phase, timezone=dt.UTC),
                    args=[group[index::count]], id=f"probes every {interval:g}s #{index}",
                    max_instances=1, coalesce=True,
                    misfire_grace_time=max(1, round(interval / 2)),
                )
        scheduler.add_listener(self._bucket_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self._scheduler = scheduler
        for target in self.targets:
            if target.check.fast_interval is not None and isinstance(target.probe, SessionProbe):
                target.probe.on_close(partial(self._probe_now, target))

    async def stop(self) -> None:
        """Stop scheduling and let the probes in flight finish (each is time-bounded)."""
        if self._scheduler is None:
            return
        self._scheduler.pause()
        for handle in self._fast.values():
            handle.cancel()
        self._fast.clear()
        # Runs submitted just before the pause start on the next loop turn:
        # let them register, so that they are awaited rather than cancelled.
        await asyncio.sleep(0)
        if self._running:
            await asyncio.wait(set(self._running))
        self._scheduler.shutdown(wait=False)
        self._scheduler = None

    def status(self) -> dict[TargetKey, CheckStatus]:
        """The current state of every check, keyed by (region, check name)."""
        return dict(self._status)

    def _bucket_skipped(self, event: JobEvent) -> None:
        job = self._scheduler.get_job(event.job_id) if self._scheduler is not None else None
        self.runs_skipped += len(job.args[0]) if job is not None else 1

    async def _start_bucket(self, targets: list[ProbeTarget]) -> None:
        scheduled = _scheduled_for.get(None)
        for target in targets:
            if target.key in self._fast:
                continue  # between a failure and a verdict: its own timer runs it
            if target.key in self._in_flight:
                self.runs_skipped += 1
                continue
            self._start(target, scheduled)

    def _start(self, target: ProbeTarget, scheduled: dt.datetime | None) -> None:
        self._in_flight.add(target.key)
        task = asyncio.get_running_loop().create_task(self._probe_once(target, scheduled))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _end_fast(self, key: TargetKey) -> None:
        handle = self._fast.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _probe_now(self, target: ProbeTarget) -> None:
        """A probe outside the bucket's schedule: the fast timer fired, or the target closed
        the probe's session."""
        self._end_fast(target.key)
        if self._scheduler is None or target.key in self._in_flight:
            return
        self._start(target, dt.datetime.now(dt.UTC))

    def _fall_fast(self, target: ProbeTarget, result: ProbeResult, health: TargetHealth,
                   started: float) -> None:
        """After a failure short of a verdict, the next probe `fast_interval` after this one
        started; otherwise back to the bucket."""
        self._end_fast(target.key)
        fast = target.check.fast_interval
        if (fast is None or self._scheduler is None or result.ok
                or health.state is HealthState.UNHEALTHY):
            return
        delay = max(0.0, started + fast - time.time())
        self._fast[target.key] = asyncio.get_running_loop().call_later(
            delay, self._probe_now, target)

    async def _probe_once(self, target: ProbeTarget, scheduled: dt.datetime | None) -> None:
        try:
            start_delay = (time.time() - scheduled.timestamp()) if scheduled is not None else None
            if start_delay is not None:
                self.start_delays.append(start_delay)
                if start_delay > target.check.interval / 2:
                    # The loop is behind (more probes than CPU): a probe this late
                    # is stale, and skipping it is how the loop catches up.
                    self.runs_late += 1
                    self.runs_skipped += 1
                    return
            started = time.time()
            result = await target.probe.run()
        finally:
            self._in_flight.discard(target.key)
        self.probes_run += 1
        before = self._status[target.key]
        if result.conclusive:
            health = observe(before.health, result.ok, target.thresholds)
        else:
            # Our own lateness is no evidence about the target: keep its state and runs.
            self.probes_inconclusive += 1
            health = before.health
        finished = time.time()
        last_ok_at = started if result.ok and result.conclusive else before.last_ok_at
        self._status[target.key] = CheckStatus(target.region, target.check.name, health, result,
                                               finished, start_delay, last_ok_at, started)
        self._fall_fast(target, result, health, started)
        if self.on_result is not None:
            self.on_result(target, result)
        if health.state is not before.health.state and self.on_transition is not None:
            transition = Transition(target.region, target.check.name, target.check.purpose,
                                    before.health.state, health.state, health.consecutive,
                                    result, finished)
            try:
                self.on_transition(transition)
            except Exception:
                # A failing listener (say, a full journal disk) must not stop health checking.
                log.exception("transition callback failed for %s/%s",
                              target.region, target.check.name)
