"""From the states of one region's checks to this controller's observation of that region.

Only liveness checks decide a region's health: any unhealthy one makes the
region unhealthy, all healthy make it healthy, anything else is unknown.
Readiness and info checks are reported but never condemn a region. The
replication positions come from the postgres checks' latest details.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from failover.engine import Health, Observation, Replication, Role
from failover.health.postgres import readiness_problem
from failover.health.scheduler import CheckStatus
from failover.health.thresholds import HealthState
from failover.postgres.sync import parse_standby_names
from failover.topology import Check, PostgresCheck, Service

CheckView = tuple[Check, CheckStatus]


def _role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        return Role.UNKNOWN


def _epoch_seconds(value: Any) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None


def replication_of(service: str, details: Mapping[str, Any], ready: bool,
                   seen_at: float | None = None) -> Replication:
    return Replication(
        service=service,
        role=_role(details.get("role")),
        fenced=bool(details.get("fenced")),
        epoch=details.get("epoch"),
        applied_lsn=details.get("remote_lsn_bytes"),
        lag_bytes=details.get("lag_bytes"),
        lag_seconds=details.get("lag_seconds"),
        ready=ready,
        wal_lsn=details.get("wal_lsn_bytes"),
        heartbeat_at=_epoch_seconds(details.get("heartbeat_at")),
        subscription_enabled=details.get("subscription_enabled"),
        sync_standbys=parse_standby_names(details.get("synchronous_standby_names")),
        seen_at=seen_at,
    )


def _region_health(liveness: Sequence[CheckStatus]) -> tuple[Health, int]:
    unhealthy = [s for s in liveness if s.state is HealthState.UNHEALTHY]
    if unhealthy:
        return Health.UNHEALTHY, max(s.health.consecutive for s in unhealthy)
    if liveness and all(s.state is HealthState.HEALTHY for s in liveness):
        return Health.HEALTHY, min(s.health.consecutive for s in liveness)
    return Health.UNKNOWN, 0


def _observed_at(live: Sequence[CheckView], now: float) -> float:
    """When this view holds: now while every liveness check reports on schedule (its
    state is current), else when the most overdue one last reported, so that a
    verdict never rests on a check that stopped running."""
    times = []
    on_schedule = True
    for check, status in live:
        if status.last_run_at is None:
            return now  # not probed yet: the state is unknown, and says so now
        times.append(status.last_run_at)
        on_schedule = on_schedule and now - status.last_run_at <= check.interval + check.timeout
    return now if on_schedule or not times else min(times)


def observe_region(observer: str, target: str, views: Sequence[CheckView], now: float,
                   services: Mapping[str, Service], *, topology: str | None = None
                   ) -> Observation:
    live = [(check, status) for check, status in views if check.purpose == "liveness"]
    liveness = [status for _, status in live]
    health, consecutive = _region_health(liveness)
    observed_at = _observed_at(live, now)
    seen: dict[str, Replication] = {}
    for check, status in views:
        if not isinstance(check, PostgresCheck) or status.last_result is None:
            continue
        details = status.last_result.details
        service = services.get(check.service)
        if "role" not in details or service is None:
            continue  # the database did not answer: nothing is known of its role
        ready = readiness_problem(details, service) is None
        seen[service.name] = replication_of(service.name, details, ready, status.last_started_at)
    oks = [status.last_ok_at for status in liveness]
    last_ok_at = None if not oks or None in oks else min(ok for ok in oks if ok is not None)
    return Observation(observer, target, health, consecutive, observed_at,
                       tuple(seen[name] for name in sorted(seen)), last_ok_at, topology)
