"""The embedded default: controllers exchange observations over signed HTTP.

Every exchange is one signed POST to each peer carrying this controller's
observations and its copy of the service records; the answer carries the
peer's. A controller relays only its own observations, so a peer cannot speak
for a third. Who executes is the engine's deterministic rule, which every
controller computes the same from the same observations; the epoch recorded
in the databases fences a leader that acts on a stale view.

A promotion's epoch is claimed once, by a majority's promises (a single
register per service, in the manner of one Paxos prepare round): a controller
promises an epoch above any it promised before, to one claimant; again to the
same claimant, so a resumed plan claims its epoch again. Promises are kept on
disk and travel with every exchange, so that a writer's controller stops
counting the word of observers that promised its successor (`engine.lease`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import TypeAdapter

from failover.coordination.base import (
    OBSERVATIONS,
    RECORDS,
    Claim,
    Leadership,
    ServiceRecord,
    merge_records,
)
from failover.coordination.promises import may_promise
from failover.coordination.signing import sign
from failover.engine import Decision, Observation
from failover.engine.lease import old_lease_ends_by
from failover.errors import ConflictError

EXCHANGE_PATH = "/v1/observations"
CLAIM_PATH = "/v1/claim"
# Once a quorum has promised, how long the other peers have to answer too (their word may
# end the old writer's lease sooner); a peer cut off would otherwise cost the whole timeout.
PROMISE_GRACE = 0.05  # seconds
PROMISES = TypeAdapter(dict[str, tuple[int, str, str]])  # service -> (epoch, claimant, target)
EPOCHS = TypeAdapter(dict[str, int])


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class PeerCoordinator:
    backend = "peers"

    def __init__(
        self,
        me: str,
        peers: Mapping[str, str],
        key: bytes,
        state_dir: Path,
        *,
        quorum: int,
        observation_max_age: float,
        timeout: float,
        on_exchange_error: Callable[[str, str], None] | None = None,
        on_news: Callable[[], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls` verifies the peers at `https://` URLs (None: the system's CAs)."""
        self.me = me
        self._peers = {name: url for name, url in peers.items() if name != me}
        self._key = key
        self._quorum = quorum
        self._max_age = observation_max_age
        self._timeout = timeout
        self._on_error = on_exchange_error
        self._on_news = on_news  # a peer's answer changed what we know: decide again
        self._latest: dict[tuple[str, str], Observation] = {}
        self._records_path = state_dir / "records.json"
        self._records = self._load_records()
        self._promises_path = state_dir / "promises.json"
        self._promises = self._load_promises()
        self._promised_by: dict[str, dict[str, int]] = {}  # peer -> service -> epoch
        # Anything this controller vouched for before a restart, it vouched for before now.
        self._started_at = time.time()
        self._session: aiohttp.ClientSession | None = None
        self._tls = tls

    def _load_promises(self) -> dict[str, tuple[int, str, str]]:
        try:
            return PROMISES.validate_json(self._promises_path.read_bytes())
        except FileNotFoundError:
            return {}

    def _load_records(self) -> dict[str, ServiceRecord]:
        try:
            raw = self._records_path.read_bytes()
        except FileNotFoundError:
            return {}
        return {r.service: r for r in RECORDS.validate_json(raw)}

    def _save_records(self) -> None:
        self._records_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(self._records_path,
                          RECORDS.dump_json(sorted(self._records.values(), key=lambda r: r.service)))

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---------------------------------------------------------- exchange

    def payload(self) -> dict[str, Any]:
        """What this controller tells a peer: its own observations and its records."""
        mine = [o for (observer, _), o in sorted(self._latest.items()) if observer == self.me]
        return {
            "observer": self.me,
            "observations": OBSERVATIONS.dump_python(mine, mode="json"),
            "records": RECORDS.dump_python(list(self._records.values()), mode="json"),
            "promises": {service: promise[0] for service, promise in self._promises.items()},
        }

    def ingest(self, payload: Any) -> bool:
        """Take a peer's payload; ValueError for anything malformed or not its own.

        True when it changed what this controller knows of a region's health or of a
        service record: worth deciding again at once.
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("observer"), str):
            raise ValueError("payload must be an object with an observer")
        sender = payload["observer"]
        if sender == self.me or sender not in self._peers:
            raise ValueError(f"observer {sender!r} is not a peer of {self.me!r}")
        observations = OBSERVATIONS.validate_python(payload.get("observations", []))
        records = RECORDS.validate_python(payload.get("records", []))
        promised = self._promised_by.setdefault(sender, {})
        for service, epoch in EPOCHS.validate_python(payload.get("promises", {})).items():
            promised[service] = max(epoch, promised.get(service, 0))
        if any(o.observer != sender for o in observations):
            raise ValueError(f"{sender!r} sent observations made by another observer")
        news = False
        for observation in observations:
            key = (observation.observer, observation.target)
            held = self._latest.get(key)
            if held is None or observation.observed_at >= held.observed_at:
                self._latest[key] = observation
                news = news or held is None or held.health is not observation.health
        merged, changed = merge_records(self._records, records)
        if changed:
            self._records = merged
            self._save_records()
        return news or changed

    async def _exchange_with(self, name: str, url: str, body: bytes) -> None:
        assert self._session is not None, "start() first"
        headers = {"Content-Type": "application/json",
                   **sign(self._key, "POST", EXCHANGE_PATH, body)}
        try:
            async with self._session.post(url + EXCHANGE_PATH, data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=(await resp.text())[:200])
                if self.ingest(await resp.json()) and self._on_news is not None:
                    self._on_news()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self._on_error is not None:
                self._on_error(name, f"{type(exc).__name__}: {exc}")

    async def exchange(self, mine: Sequence[Observation]) -> None:
        for observation in mine:
            self._latest[(observation.observer, observation.target)] = observation
        body = json.dumps(self.payload()).encode()
        await asyncio.gather(*(self._exchange_with(name, url, body)
                               for name, url in sorted(self._peers.items())))

    def observations(self) -> list[Observation]:
        return list(self._latest.values())

    # ---------------------------------------------------------- records and leadership

    def records(self) -> dict[str, ServiceRecord]:
        return dict(self._records)

    async def put_record(self, record: ServiceRecord) -> None:
        held = self._records.get(record.service)
        if not record.newer_than(held):
            raise ConflictError(
                f"service {record.service!r}: the fleet already holds epoch {held.epoch} version "
                f"{held.version}, not older than epoch {record.epoch} version {record.version}"
                if held else f"service {record.service!r}: record not newer"
            )
        self._records[record.service] = record
        self._save_records()

    # ---------------------------------------------------------- epochs claimed once

    def promise(self, service: str, epoch: int, claimant: str, target: str) -> dict[str, Any]:
        """Answer a claim: promise `epoch` to `claimant` (for `target`) unless a higher epoch,
        or the same one to someone else, was promised. Report how far this controller vouched
        for every region (a writer's lease cannot outlast that by more than its TTL), and the
        target of the promise it held before: that region may have become a writer the
        claimant has not heard of yet."""
        held = self._promises.get(service)
        if held is not None and not may_promise((held[0], held[1]), epoch, claimant):
            return {"granted": False, "promised": held[0], "claimant": held[1]}
        if held != (epoch, claimant, target):
            self._promises[service] = (epoch, claimant, target)
            self._promises_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(self._promises_path, PROMISES.dump_json(self._promises))
        vouched = {}
        for region in (self.me, *self._peers):
            seen = self._latest.get((self.me, region))
            ok = seen.last_ok_at if seen is not None and seen.last_ok_at is not None else None
            # Anything it vouched for before a restart, it vouched for before it started.
            vouched[region] = max(ok if ok is not None else -math.inf, self._started_at)
        return {"granted": True, "vouched": vouched,
                "previous": held[2] if held is not None and held[0] < epoch else None}

    async def _ask_promise(self, url: str, body: bytes) -> dict[str, Any] | None:
        assert self._session is not None, "start() first"
        headers = {"Content-Type": "application/json",
                   **sign(self._key, "POST", CLAIM_PATH, body)}
        try:
            async with self._session.post(url + CLAIM_PATH, data=body, headers=headers) as resp:
                answer = await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    async def _gather_promises(self, body: bytes) -> dict[str, dict[str, Any]]:
        """Every peer's answer, except that once a quorum has promised (this controller
        included), the rest get `PROMISE_GRACE` more: a peer that is cut off would otherwise
        hold the promotion up for the whole request timeout. Any quorum of promises bounds
        the old writer's lease (a peer that did not answer counts as vouching for ever)."""
        tasks = {asyncio.ensure_future(self._ask_promise(url, body)): name
                 for name, url in sorted(self._peers.items())}
        answers: dict[str, dict[str, Any]] = {}
        pending = set(tasks)
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while pending:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(pending, timeout=left,
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # the grace is over
                for task in done:
                    if (reply := task.result()) is not None:
                        answers[tasks[task]] = reply
                promised = 1 + sum(1 for a in answers.values() if a.get("granted") is True)
                if deadline is None and promised >= self._quorum:
                    deadline = loop.time() + PROMISE_GRACE
        finally:
            for task in pending:
                task.cancel()
        return answers

    async def claim(self, service: str, epoch: int, target: str, writer: str,
                    lease_ttl: float) -> Claim:
        answers = {self.me: self.promise(service, epoch, self.me, target)}
        if answers[self.me]["granted"]:
            body = json.dumps({"service": service, "epoch": epoch, "claimant": self.me,
                               "target": target}).encode()
            answers.update(await self._gather_promises(body))
        granted = {name: a for name, a in answers.items() if a.get("granted") is True}
        refusals = sorted(f"{name} promised epoch {a.get('promised')} to {a.get('claimant')}"
                          for name, a in answers.items() if a.get("granted") is False)
        if len(granted) < self._quorum:
            return Claim(service, epoch, self.me, False, math.inf,
                         f"epoch {epoch}: {len(granted)} promise(s), {self._quorum} needed"
                         + (f" ({'; '.join(refusals)})" if refusals else ""))
        # Whoever may hold a lease: the writer this plan replaces, and any region a
        # lower epoch was promised for (it may have been promoted meanwhile).
        holders = ({writer} | {a["previous"] for a in granted.values()
                               if isinstance(a.get("previous"), str)}) - {target}
        ends_by = max((old_lease_ends_by(
            {name: _moment((a.get("vouched") or {}).get(holder)) for name, a in granted.items()},
            [self.me, *self._peers], self._quorum, lease_ttl) for holder in holders),
            default=-math.inf)
        return Claim(service, epoch, self.me, True, ends_by,
                     f"epoch {epoch} promised by {', '.join(sorted(granted))}")

    def highest_claimed(self, service: str) -> int:
        return max([self._promises.get(service, (0, "", ""))[0],
                    *(by.get(service, 0) for by in self._promised_by.values())])

    def vouching(self, service: str, epoch: int) -> tuple[list[Observation], frozenset[str]]:
        promised = {name: by.get(service, 0) for name, by in self._promised_by.items()}
        promised[self.me] = self._promises.get(service, (0, "", ""))[0]
        return self.observations(), frozenset(n for n, e in promised.items() if e > epoch)

    def _heard(self, now: float) -> int:
        fresh = {observer for (observer, _), o in self._latest.items()
                 if o.observed_at >= now - self._max_age}
        return len(fresh | {self.me})

    async def lead(self, decision: Decision) -> Leadership | None:
        if not decision.executes:
            return None
        epochs = [action.epoch for action in decision.plan.changes()]
        return Leadership(self.me, max(epochs, default=0), needs_quorum=decision.has_quorum)

    async def still_leading(self, leadership: Leadership) -> bool:
        return leadership.holder == self.me and (not leadership.needs_quorum
                                                 or self.hears_quorum())

    async def resign(self) -> None:
        """Nothing to give back: with peers, the executor is recomputed at every decision."""

    def hears_quorum(self, now: float | None = None) -> bool:
        return self._heard(time.time() if now is None else now) >= self._quorum

    def problem(self) -> str | None:
        return None


def _moment(value: Any) -> float | None:
    """A reported moment: a number, or None for never (anything else counts as for ever)."""
    if value is None:
        return None
    return float(value) if isinstance(value, int | float) else math.inf
