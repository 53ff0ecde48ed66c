"""The writer's lease, granted by a quorum of observers and waited out before a promotion: pure.

A writer's database takes application writes only while its lease is valid
(the server checks it on every write). Its controller renews it every tick, but
only as far as a quorum of observers vouches for it: an observer vouches for
the writer up to `last_ok_at`, the start of its last probe that found the
writer's region healthy, and stops vouching once it has promised a higher
epoch to a new writer. The lease runs until the quorum-th newest such moment
plus the lease TTL.

Whoever promotes another region first claims the new epoch on a majority.
Each member of that majority, when it promises, reports how far it vouched for
the old writer. Any quorum the old writer could still use shares a member with
that majority, so its lease cannot run past the quorum-th newest report plus
the TTL (observers that did not answer count as vouching for ever). The new
writer becomes writable only after that moment: the old one has stopped by
then, by its own clock, whether it crashed, hangs, or is cut off and still running.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from failover.engine.model import Health, Observation


def quorum_th_newest(moments: Iterable[float], quorum: int) -> float:
    """The `quorum`-th largest moment (-inf when fewer than `quorum` are given)."""
    ordered = sorted(moments, reverse=True)
    return ordered[quorum - 1] if len(ordered) >= quorum else -math.inf


def lease_end(observations: Iterable[Observation], writer: str, quorum: int, ttl: float,
              *, void: frozenset[str] = frozenset()) -> float:
    """How long `writer`'s controller may extend its database's lease now (epoch seconds;
    -inf: not at all).

    `observations` are the latest of every observer, `void` the observers that promised a
    higher epoch (their word for the old writer no longer counts). An observer vouches only
    while it finds the writer healthy: its last_ok_at stops moving when it does not.
    """
    vouched: dict[str, float] = {}
    for observation in observations:
        if (observation.target != writer or observation.observer in void
                or observation.health is not Health.HEALTHY or observation.last_ok_at is None):
            continue
        vouched[observation.observer] = max(vouched.get(observation.observer, -math.inf),
                                            observation.last_ok_at)
    return quorum_th_newest(vouched.values(), quorum) + ttl


def old_lease_ends_by(reports: Mapping[str, float | None], observers: Iterable[str],
                      quorum: int, ttl: float) -> float:
    """When the old writer's lease has surely ended, from the reports of the observers that
    promised the new epoch: how far each vouched for the old writer (None: never).
    An observer that did not report may have vouched for ever."""
    def vouched_until(name: str) -> float:
        if name not in reports:
            return math.inf
        moment = reports[name]
        return -math.inf if moment is None else moment

    return quorum_th_newest((vouched_until(name) for name in observers), quorum) + ttl
