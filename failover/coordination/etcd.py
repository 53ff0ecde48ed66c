"""Coordination through an etcd cluster: a drop-in for the peer exchange.

Keys under the configured prefix:

- `observations/<controller>`: that controller's latest observations, attached
  to its lease, so a dead controller's votes vanish when its lease expires.
- `leader`: the controller executing plans, attached to its lease, created
  only where no leader key exists. Its create revision is the plan's fencing
  token, and every step checks, in a transaction, that the key still carries it.
- `records/<service>`: the fleet's record of the service, written only where
  its mod revision is still the one this controller read (compare-and-swap).
- `claims/<service>`: the highest epoch claimed for a promotion and by whom,
  written by compare-and-swap only upwards (or again by the same claimant), so
  an epoch is claimed once. It is read with the observations in one
  transaction: a writer's controller that sees a higher claim stops renewing
  its lease, and one that does not read it before the claim's revision renewed
  on observations no newer than what the claimant reads after it.

A controller that cannot reach etcd takes no automatic action: `problem()`
says why and `lead()` refuses, except to fence its own region, which needs no
one's leave (the engine decides that from observations going stale, so the
last ones read are kept with their own timestamps, never refreshed).

The lease is renewed by a task of its own, not by the exchange, so that a
leader busy with a long step keeps its leadership. Leadership is for one plan:
the controller calls `resign()` when the plan ends (so that whoever the engine
picks next can lead), and a campaign fails when the records it decided on
changed since they were read (a plan another leader just finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import SecretStr, TypeAdapter, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from failover.coordination.base import OBSERVATIONS, Claim, Leadership, ServiceRecord
from failover.coordination.etcd_client import (
    EtcdClient,
    EtcdRefused,
    EtcdUnavailable,
    KeyValue,
    TxnResult,
    created_at,
    delete,
    get,
    get_prefix,
    modified_at,
    put,
)
from failover.coordination.promises import may_promise
from failover.engine import Decision, Observation
from failover.engine.lease import old_lease_ends_by
from failover.errors import ConflictError, FailoverError, UserError
from failover.topology import EtcdSettings

RECORD = TypeAdapter(ServiceRecord)
CLAIM = TypeAdapter(tuple[int, str, str])  # (epoch, claimant, target)
_LEASE_NOT_FOUND = 5  # gRPC NOT_FOUND: a put named a lease that already expired


def _parse_claim(value: bytes) -> tuple[int, str, str] | None:
    try:
        return CLAIM.validate_json(value)
    except ValidationError:
        return None


def _parse_record(value: bytes) -> ServiceRecord | None:
    try:
        return RECORD.validate_json(value)
    except ValidationError:
        return None  # written by a controller of another version; its own logs say more


def request_timeout(lease_ttl: float) -> float:
    """Long enough for a loaded cluster, short enough to try every endpoint within a lease."""
    return min(2.0, max(0.5, lease_ttl / 4))


def etcd_password(settings: EtcdSettings, where: str) -> SecretStr | None:
    """The etcd password from `password_env`; `where` is the fleet file, for the message."""
    if settings.password_env is None:
        return None
    value = os.environ.get(settings.password_env)
    if value is None:
        raise UserError(f"{where}: coordination.etcd.password_env names {settings.password_env}, "
                        "which is not set in the environment")
    return SecretStr(value)


class EtcdCoordinator:
    backend = "etcd"

    def __init__(self, me: str, settings: EtcdSettings, *, timeout: float | None = None,
                 where: str = "fleet.toml", on_news: Callable[[], None] | None = None,
                 observers: Sequence[str], quorum: int) -> None:
        self.me = me
        self._on_news = on_news  # another controller's view changed: decide again at once
        self._poll_interval = settings.poll_interval
        self._follower: asyncio.Task[None] | None = None
        self._applied_revision = 0  # the store revision of the newest read taken in
        self._ttl = max(1, math.ceil(settings.lease_ttl))
        self._client = EtcdClient(
            settings.endpoints, timeout=timeout or request_timeout(settings.lease_ttl),
            ca_file=str(settings.ca_file) if settings.ca_file else None,
            cert_file=str(settings.cert_file) if settings.cert_file else None,
            key_file=str(settings.key_file) if settings.key_file else None,
            user=settings.user, password=etcd_password(settings, where),
        )
        prefix = settings.prefix.rstrip("/")
        self._observations_prefix = f"{prefix}/observations/"
        self._records_prefix = f"{prefix}/records/"
        self._claims_prefix = f"{prefix}/claims/"
        self._claims: dict[str, tuple[int, str, str]] = {}  # service -> (epoch, claimant, target)
        self._observers = tuple(observers)
        self._quorum = quorum
        # This controller's own observations as etcd holds them (the last exchange that
        # landed), so that its lease rests on what a claimant can read too.
        self._mine_stored: dict[str, Observation] = {}
        self._leader_key = f"{prefix}/leader"
        self._lease: int | None = None
        self._lease_valid_until = 0.0  # monotonic; what etcd promised at the last renewal
        self._lease_lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None
        self._mine: dict[str, Observation] = {}
        self._others: dict[tuple[str, str], Observation] = {}
        self._records: dict[str, ServiceRecord] = {}
        self._revisions: dict[str, int] = {}  # mod revision of each record as last read
        self._leadership: Leadership | None = None
        self._problem: str | None = "no exchange with etcd yet"

    # ---------------------------------------------------------- lifecycle

    async def start(self) -> None:
        # etcd may be down when the controller starts: the controller must run
        # anyway (it may have to fence its region), and the keepalive retries.
        with contextlib.suppress(FailoverError):
            await self._ensure_lease()
        self._keepalive = asyncio.create_task(self._keep_lease_alive(), name="etcd-lease")
        if self._on_news is not None:
            self._follower = asyncio.create_task(self._follow(), name="etcd-follow")

    async def close(self) -> None:
        for task in (self._keepalive, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keepalive = self._follower = None
        await self.resign()
        if self._lease is not None:
            # A clean stop withdraws this controller's votes now rather than at expiry.
            with contextlib.suppress(FailoverError):
                await asyncio.to_thread(self._client.revoke, self._lease)
            self._lease = None
        self._client.close()

    # ---------------------------------------------------------- lease

    def _lease_alive(self) -> bool:
        return self._lease is not None and time.monotonic() < self._lease_valid_until

    def _lost_lease(self) -> None:
        self._lease, self._lease_valid_until = None, 0.0
        self._leadership = None  # the leader key went with the lease

    async def _ensure_lease(self) -> int:
        async with self._lease_lock:
            if self._lease is not None and time.monotonic() < self._lease_valid_until:
                return self._lease
            if self._lease is not None:
                self._lost_lease()
            sent = time.monotonic()
            lease = await asyncio.to_thread(self._client.grant, self._ttl)
            self._lease, self._lease_valid_until = lease, sent + self._ttl
            return lease

    async def _renew(self) -> None:
        async with self._lease_lock:
            if self._lease is None:
                return
            sent = time.monotonic()
            remaining = await asyncio.to_thread(self._client.keepalive, self._lease)
            if remaining <= 0:
                self._lost_lease()
                self._problem = "this controller's etcd lease expired; taking a new one"
            else:
                self._lease_valid_until = sent + remaining

    async def _keep_lease_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                if self._lease is None:
                    await self._ensure_lease()
                else:
                    await self._renew()
            except FailoverError as exc:
                self._unreachable(exc)
            except Exception as exc:  # a dead renewal task would let the lease expire unseen
                self._problem = f"renewing the etcd lease failed: {type(exc).__name__}: {exc}"

    def _unreachable(self, exc: FailoverError) -> None:
        if isinstance(exc, EtcdRefused) and exc.code == _LEASE_NOT_FOUND:
            self._lost_lease()
        self._problem = f"{exc}; no automatic action until etcd answers"

    # ---------------------------------------------------------- exchange

    async def exchange(self, mine: Sequence[Observation]) -> None:
        for observation in mine:
            self._mine[observation.target] = observation
        written = dict(self._mine)
        body = OBSERVATIONS.dump_json(sorted(written.values(), key=lambda o: o.target))
        try:
            lease = await self._ensure_lease()
            result = await asyncio.to_thread(
                self._client.txn, [],
                [put(self._observations_prefix + self.me, body, lease), *self._reads()])
        except FailoverError as exc:
            self._unreachable(exc)
            return
        self._problem = None
        self._mine_stored = written
        self._take_in(result)

    def _take_in(self, result: TxnResult) -> bool:
        """Adopt what a read of the observations and records found, unless a newer read was
        taken in already; True when a region's health or a record changed."""
        if result.revision < self._applied_revision:
            return False
        self._applied_revision = result.revision
        observations, records, claims = result.ranges[-3:]
        self._claims = {kv.key.removeprefix(self._claims_prefix): claim
                        for kv in claims if (claim := _parse_claim(kv.value)) is not None}
        held, self._others = self._others, self._read_observations(observations)
        news = any(key not in held or held[key].health is not seen.health
                   for key, seen in self._others.items())
        revisions = self._revisions
        self._records, self._revisions = self._read_records(records)
        return news or revisions != self._revisions

    async def _follow(self) -> None:
        """Read the others' observations between exchanges, so that a peer's news reaches this
        controller's decision within `poll_interval` rather than at its next exchange (the
        peer exchange pushes news; etcd is read). Reads only: nothing is written here."""
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                result = await asyncio.to_thread(self._client.txn, [], self._reads())
            except FailoverError:
                continue  # the exchange reports etcd's problems; this only speeds news up
            if self._take_in(result) and self._on_news is not None:
                self._on_news()

    def _reads(self) -> list[dict[str, Any]]:
        return [get_prefix(self._observations_prefix), get_prefix(self._records_prefix),
                get_prefix(self._claims_prefix)]

    def _read_observations(self, kvs: Sequence[KeyValue]) -> dict[tuple[str, str], Observation]:
        """Everyone else's latest observations, each taken only from its observer's own key."""
        others: dict[tuple[str, str], Observation] = {}
        for kv in kvs:
            owner = kv.key.removeprefix(self._observations_prefix)
            if owner == self.me:
                continue
            try:
                parsed = OBSERVATIONS.validate_json(kv.value)
            except ValidationError:
                continue  # a controller of another version; its own logs say more
            others.update({(o.observer, o.target): o for o in parsed if o.observer == owner})
        return others

    def _read_records(self, kvs: Sequence[KeyValue]
                      ) -> tuple[dict[str, ServiceRecord], dict[str, int]]:
        records: dict[str, ServiceRecord] = {}
        revisions: dict[str, int] = {}
        for kv in kvs:
            record = _parse_record(kv.value)
            if record is not None:
                records[record.service] = record
                revisions[record.service] = kv.mod_revision
        return records, revisions

    def observations(self) -> list[Observation]:
        return [*self._mine.values(), *self._others.values()]

    # ---------------------------------------------------------- epochs claimed once

    def _vouched_for(self, region: str) -> dict[str, float | None]:
        """How far each observer vouched for `region`, as etcd holds it now."""
        reports = {o.observer: o.last_ok_at for o in self._others.values() if o.target == region}
        mine = self._mine_stored.get(region)
        if mine is not None:
            reports[self.me] = mine.last_ok_at
        return reports

    def vouching(self, service: str, epoch: int) -> tuple[list[Observation], frozenset[str]]:
        claimed = self.highest_claimed(service)
        void = frozenset(self._observers) | {self.me} if claimed > epoch else frozenset()
        return [*self._mine_stored.values(), *self._others.values()], void

    def highest_claimed(self, service: str) -> int:
        return self._claims.get(service, (0, "", ""))[0]

    async def claim(self, service: str, epoch: int, target: str, writer: str,
                    lease_ttl: float) -> Claim:
        key = self._claims_prefix + service
        try:
            async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5),
                    wait=wait_random_exponential(multiplier=0.05, max=0.5), reraise=True):
                with attempt:
                    read = await asyncio.to_thread(self._client.txn, [], [get(key)])
                    (stored,) = read.ranges[0] or (None,)
                    held = _parse_claim(stored.value) if stored is not None else None
                    if held is not None and not may_promise(held[:2], epoch, self.me):
                        return Claim(service, epoch, self.me, False, math.inf,
                                     f"etcd holds epoch {held[0]} claimed by {held[1]}")
                    written = await asyncio.to_thread(
                        self._client.txn,
                        [modified_at(key, stored.mod_revision if stored is not None else 0)],
                        [put(key, CLAIM.dump_json((epoch, self.me, target)))])
                    if not written.succeeded:
                        raise ConflictError(f"{key} changed while claiming epoch {epoch}")
            # A writer that renewed on a read from before the claim saw observations no
            # newer than these, and took them no later than now.
            committed_by = time.time()
            after = await asyncio.to_thread(self._client.txn, [], self._reads())
        except FailoverError as exc:
            self._unreachable(exc)
            return Claim(service, epoch, self.me, False, math.inf, f"etcd: {exc}")
        self._take_in(after)
        # Whoever may hold a lease: the writer this plan replaces, and the target of the
        # lower epoch claimed before this one (it may have been promoted meanwhile).
        holders = ({writer} | ({held[2]} if held is not None and held[0] < epoch else set())
                   ) - {target}
        ends_by = max((min(old_lease_ends_by(self._vouched_for(holder),
                                             {*self._observers, self.me}, self._quorum,
                                             lease_ttl), committed_by + lease_ttl)
                       for holder in holders), default=-math.inf)
        return Claim(service, epoch, self.me, True, ends_by, f"epoch {epoch} claimed in etcd")

    def problem(self) -> str | None:
        return self._problem

    # ---------------------------------------------------------- records

    def records(self) -> dict[str, ServiceRecord]:
        return dict(self._records)

    async def put_record(self, record: ServiceRecord) -> None:
        held = self._records.get(record.service)
        if held is not None and not record.newer_than(held):
            raise ConflictError(
                f"service {record.service!r}: etcd already holds epoch {held.epoch} version "
                f"{held.version}, not older than epoch {record.epoch} version {record.version}")
        key = self._records_prefix + record.service
        try:
            result = await asyncio.to_thread(
                self._client.txn, [modified_at(key, self._revisions.get(record.service, 0))],
                [put(key, RECORD.dump_json(record))], [get(key)])
        except FailoverError as exc:
            self._unreachable(exc)
            raise
        if result.succeeded:
            self._records[record.service], self._revisions[record.service] = record, result.revision
            return
        (stored,) = result.ranges[0] or (None,)
        current = _parse_record(stored.value) if stored is not None else None
        self._revisions[record.service] = stored.mod_revision if stored is not None else 0
        if current == record:  # our own write, applied before a timeout hid its answer
            self._records[record.service] = record
            return
        if current is None:
            self._records.pop(record.service, None)
            raise ConflictError(f"service {record.service!r}: its record in etcd was deleted or "
                                "rewritten unreadably since this controller read it")
        self._records[record.service] = current
        raise ConflictError(
            f"service {record.service!r}: its record in etcd changed since this controller read "
            f"it (now writer {current.writer}, epoch {current.epoch} version {current.version})")

    # ---------------------------------------------------------- leadership

    async def lead(self, decision: Decision) -> Leadership | None:
        if not decision.executes:
            await self.resign()  # let the controller the engine chose take the leader key
            return None
        if not decision.has_quorum:
            # Cut off: the only plan is fencing this controller's own region, as with peers.
            epochs = [action.epoch for action in decision.plan.changes()]
            return Leadership(self.me, max(epochs, default=0), needs_quorum=False)
        # The decision stands on the records as last read: a plan another
        # leader finished since then (its record written) must not run again.
        read = {service: self._revisions.get(service, 0)
                for service in sorted({action.service for action in decision.plan.changes()})}
        try:
            lease = await self._ensure_lease()
            result = await asyncio.to_thread(
                self._client.txn,
                [created_at(self._leader_key, 0),
                 *(modified_at(self._records_prefix + s, rev) for s, rev in read.items())],
                [put(self._leader_key, self.me.encode(), lease)],
                [get(self._leader_key), *(get(self._records_prefix + s) for s in read)])
        except FailoverError as exc:
            self._unreachable(exc)
            return None
        if result.succeeded:
            self._leadership = Leadership(self.me, result.revision)
            return self._leadership
        held, *stored = result.ranges
        # A leader key on our own lease is ours: an earlier campaign, or this
        # one applied before a timeout hid its answer.
        if not held or held[0].lease != lease:
            return None
        self._leadership = Leadership(self.me, held[0].create_revision)
        if any((kvs[0].mod_revision if kvs else 0) != read[service]
               for service, kvs in zip(read, stored, strict=True)):
            await self.resign()
            return None
        return self._leadership

    async def still_leading(self, leadership: Leadership) -> bool:
        if leadership.holder != self.me:
            return False
        if not leadership.needs_quorum:
            return True
        # Ride out an etcd election, but never past the moment our lease may
        # have expired (the renewal task moves it on): then another may lead.
        if not self._lease_alive():
            return False
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(EtcdUnavailable),
                stop=lambda _: not self._lease_alive(),
                wait=wait_random_exponential(multiplier=0.05, max=0.5), reraise=True,
            ):
                with attempt:
                    # The read makes etcd confirm the answer with its quorum: a
                    # transaction of compares alone is served from the local copy
                    # of whichever member answers, even one cut off from the rest.
                    result = await asyncio.to_thread(
                        self._client.txn, [created_at(self._leader_key, leadership.token)],
                        [get(self._leader_key)], [get(self._leader_key)])
        except FailoverError as exc:
            self._unreachable(exc)
            return False
        if not result.succeeded and self._leadership == leadership:
            self._leadership = None
        return result.succeeded

    async def resign(self) -> None:
        """Give the leader key back after a plan, so that whoever the engine picks next can lead."""
        leadership, self._leadership = self._leadership, None
        if leadership is None:
            return
        with contextlib.suppress(FailoverError):
            await asyncio.to_thread(
                self._client.txn, [created_at(self._leader_key, leadership.token)],
                [delete(self._leader_key)])
