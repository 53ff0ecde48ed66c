"""The one interface the controller and the CLI use to move DNS records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from failover.dns.records import RecordKey, RecordSet


@dataclass(frozen=True)
class Change:
    """A change the provider accepted, and what clients must see once it is visible.

    `present` values must be in the answer and `absent` ones must not; checking
    the values instead of the whole answer lets add/remove of one value of a
    multi-value record coexist with other writers' values. `ticket` is the
    provider's handle on the change (the zone serial after an RFC 2136 update,
    the Route 53 change id); `pending` is False when there is nothing left to
    wait for (Route 53 answered INSYNC, or the record already was as desired).
    """

    key: RecordKey
    present: frozenset[str]
    absent: frozenset[str]
    ticket: str
    pending: bool = True


class DnsProvider(Protocol):
    """A zone whose records can be read and changed with compare-and-set.

    Every method has a timeout (set when the provider is built) and retries
    only errors worth retrying; a record outside the zone is a UserError and
    nothing is sent.
    """

    @property
    def zone(self) -> str: ...

    def read(self, key: RecordKey) -> RecordSet | None:
        """The record set with its values and TTL as the zone's primary serves it, or None."""

    def compare_and_set(self, expected: RecordSet | None, desired: RecordSet) -> Change:
        """Replace `expected` (None: the record must not exist) with `desired`.

        Raises RecordConflict naming what is there instead when the record is
        not `expected` (its values; Route 53 also compares TTL and routing,
        as its DELETE must match exactly); an empty `desired.values` deletes
        the record. Already being `desired` counts as success.
        """

    def add_value(self, key: RecordKey, value: str, ttl: int) -> Change:
        """Add one value to a multi-value record (creating it with `ttl` if absent)."""

    def remove_value(self, key: RecordKey, value: str) -> Change:
        """Remove one value from a multi-value record (deleting it with its last value)."""

    def wait_visible(self, change: Change, timeout: float) -> None:
        """Return once clients get the changed answer; VisibilityTimeout at the deadline."""
