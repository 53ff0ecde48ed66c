"""The embedded default: controllers exchange observations over signed HTTP.

Every exchange is one signed POST to each peer carrying this controller's
observations and its copy of the service records; the answer carries the
peer's. A controller relays only its own observations, so a peer cannot speak
for a third. Who executes is the engine's deterministic rule, which every
controller computes the same from the same observations; the epoch recorded
in the databases fences a leader that acts on a stale view.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from failover.coordination.base import (
    OBSERVATIONS,
    RECORDS,
    Leadership,
    ServiceRecord,
    merge_records,
)
from failover.coordination.signing import sign
from failover.engine import Decision, Observation
from failover.errors import ConflictError

EXCHANGE_PATH = "/v1/observations"


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
    ) -> None:
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
        self._session: aiohttp.ClientSession | None = None

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
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))

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
