"""Wait until every authoritative server of a zone serves a change.

A server shows the change once its SOA serial has reached the serial the
primary had right after the update (so it has loaded that version of the
zone) and its answer for the record holds the change's values; the serial
alone would not catch a later update that undid ours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from failover.dns.errors import VisibilityTimeout
from failover.dns.provider import Change
from failover.dns.wire import (
    TRANSIENT_ERRORS,
    Endpoint,
    ServerAnswerError,
    answer,
    serial_reached,
    soa_serial,
)

_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.02  # a UDP query per server per pause: cheap next to a slow failover


def _shows(change: Change, values: frozenset[str]) -> bool:
    return change.present <= values and not change.absent & values


def _why_not(server: Endpoint, zone: str, change: Change, target: int,
             query_timeout: float) -> str | None:
    """None when `server` shows the change; otherwise what it shows instead."""
    try:
        serial = soa_serial(server, zone, query_timeout)
        if not serial_reached(serial, target):
            return f"serial {serial}, not yet {target}"
        found = answer(server, change.key.name, change.key.rtype, query_timeout)
    except TRANSIENT_ERRORS as exc:
        return f"no answer ({type(exc).__name__})"
    except ServerAnswerError as exc:
        return str(exc)
    values = found[1] if found else frozenset()
    if _shows(change, values):
        return None
    return f"answers {', '.join(sorted(values)) or 'nothing'}"


def wait_until_served(servers: Sequence[Endpoint], zone: str, change: Change, target_serial: int,
                      *, timeout: float, query_timeout: float) -> None:
    """Poll each server until it shows `change`; VisibilityTimeout names the laggards."""
    deadline = time.monotonic() + timeout
    waiting: dict[Endpoint, str] = {server: "not asked yet" for server in servers}
    pause = _FIRST_PAUSE
    while True:
        for server in list(waiting):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            reason = _why_not(server, zone, change, target_serial,
                              min(query_timeout, remaining))
            if reason is None:
                del waiting[server]
            else:
                waiting[server] = reason
        if not waiting:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            lagging = "; ".join(f"{server}: {reason}" for server, reason in waiting.items())
            raise VisibilityTimeout(
                f"{change.key}: changed on the primary, but after {timeout:g} s "
                f"{len(waiting)} of {len(servers)} authoritative server(s) do not serve it yet "
                f"({lagging}); check that they are up and receive NOTIFY/zone transfers"
            )
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _MAX_PAUSE)
