"""After a fault, check from outside that the fleet put the world back in order.

- `DnsAgreement` watches, from the end of a fault, whether the writer and reader
  records answer what the fleet records (the writer's address; the readers'
  addresses), and tells how long after the fault's end they last disagreed on two
  looks in a row (POLL apart);
- `plans_run_twice` reads every controller's journal and finds a plan, or a
  promotion's epoch, that more than one controller carried out.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from failover.controller.api import JOURNAL_LIMIT_MAX
from failover.controller.client import ControllerUnreachable, acting_view, call, fleet_statuses
from failover.controller.journal import STEP
from failover.lab import state as lab

POLL = 0.1  # seconds between two looks at DNS and the fleet record
LOOK_TIMEOUT = 0.5
# The steps only a promotion runs: two controllers finishing one for the same epoch is
# one epoch claimed twice, whatever their plan ids say.
PROMOTION_STEP = re.compile(r"^(claim epoch \d+|record \S+ as the writer of )")


def _answers(state: lab.LabState, record: str) -> frozenset[str] | None:
    query = dns.message.make_query(record, dns.rdatatype.A)
    try:
        response = dns.query.udp(query, state.dns.address, port=state.dns.port,
                                 timeout=LOOK_TIMEOUT)
    except (dns.exception.DNSException, OSError):
        return None
    return frozenset(rdata.to_text() for rrset in response.answer for rdata in rrset)


def _fleet_record(state: lab.LabState) -> dict[str, Any] | None:
    view = acting_view(fleet_statuses(state.controllers(), timeout=LOOK_TIMEOUT,
                                      tls=state.api_tls()))
    if view is None or not view.get("has_quorum"):
        return None
    service: dict[str, Any] | None = view.get("services", {}).get(state.service.name)
    return service


def disagreement(state: lab.LabState) -> str | None:
    """Why DNS does not answer what the fleet records now, or None when it does."""
    record = _fleet_record(state)
    if record is None or record.get("writer") is None:
        return "no controller with a quorum tells the fleet record"
    addresses = {r.name: r.address for r in state.regions}
    writer = _answers(state, state.service.writer_record)
    if writer != frozenset({addresses[record["writer"]]}):
        return (f"{state.service.writer_record} answers {sorted(writer or ())} but the fleet "
                f"records {record['writer']}")
    readers = _answers(state, state.service.reader_record)
    wanted = frozenset(addresses[r] for r in record.get("readers", []))
    if readers != wanted:
        return (f"{state.service.reader_record} answers {sorted(readers or ())} but the fleet "
                f"records readers {sorted(record.get('readers', []))}")
    return None


@dataclass(frozen=True)
class Agreement:
    converged_s: float  # from the fault's end to the last look that disagreed (0: none did)
    agrees_at_end: bool
    last_disagreement: str | None


class DnsAgreement:
    """Looks at DNS and the fleet record from `start()` until `stop()`."""

    def __init__(self, state: lab.LabState) -> None:
        self.state = state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0
        self._last_bad: tuple[float, str] | None = None
        self._agrees_now = False

    def start(self) -> None:
        self._since = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="dns-agreement", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        before: str | None = None
        while not self._stop.is_set():
            looked_at = time.monotonic()
            why = disagreement(self.state)
            # A plan moves DNS first and stores the record after it, so one look can catch
            # DNS a few milliseconds ahead: only a disagreement seen twice in a row counts.
            if why is not None and before is not None:
                self._last_bad = (looked_at, why)
            before = why
            self._agrees_now = why is None
            self._stop.wait(POLL)

    def stop(self) -> Agreement:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._last_bad is None:
            return Agreement(0.0, self._agrees_now, None)
        return Agreement(self._last_bad[0] - self._since, self._agrees_now, self._last_bad[1])


def journals(state: lab.LabState, key: bytes, since: float) -> dict[str, list[dict[str, Any]]]:
    """Every reachable controller's journal entries from `since`, by region."""
    out: dict[str, list[dict[str, Any]]] = {}
    tls = state.api_tls()
    for region in state.regions:
        with contextlib.suppress(ControllerUnreachable):
            reply = call(region.controller_url, "GET", "/v1/journal", key=key,
                         query=f"since={since}&limit={JOURNAL_LIMIT_MAX}", timeout=10, tls=tls)
            if isinstance(reply.body, dict):
                out[region.name] = list(reply.body.get("entries", []))
    return out


def plans_run_twice(by_region: Mapping[str, Iterable[dict[str, Any]]]) -> list[str]:
    """Plans whose steps more than one controller finished, and promotion epochs that
    more than one controller carried out; each described in a line."""
    plan_runners: dict[str, set[str]] = defaultdict(set)
    epoch_runners: dict[int, set[str]] = defaultdict(set)
    for region, entries in by_region.items():
        for entry in entries:
            if entry.get("kind") != STEP or entry.get("outcome") != "ok":
                continue
            plan_runners[str(entry.get("plan_id"))].add(region)
            if PROMOTION_STEP.match(str(entry.get("step", ""))):
                epoch_runners[int(entry.get("epoch", 0))].add(region)
    twice = [f"plan {plan}: steps finished by {', '.join(sorted(regions))}"
             for plan, regions in sorted(plan_runners.items()) if len(regions) > 1]
    twice += [f"epoch {epoch}: promoted by {', '.join(sorted(regions))}"
              for epoch, regions in sorted(epoch_runners.items()) if len(regions) > 1]
    return twice


def back_in_readers(journals: dict[str, list[dict[str, Any]]], region: str,
                     since: float) -> float | None:
    """From `since` to the end of the first plan after it that put `region` back into the
    reader record, in any reachable journal."""
    adding = {e["plan_id"] for entries in journals.values() for e in entries
              if e.get("kind") == "plan" and e.get("event") == "start"
              and any(a.get("type") == "AddReader" and a.get("region") == region
                      for a in (e.get("plan") or {}).get("actions", []))}
    ends = [e["ts"] for entries in journals.values() for e in entries
            if e.get("kind") == "plan" and e.get("event") == "end" and e.get("outcome") == "ok"
            and e.get("plan_id") in adding and e["ts"] >= since]
    return min(ends) - since if ends else None
