"""What a DNS record set is, independent of the provider that stores it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from failover.errors import UserError

FailoverRole = Literal["PRIMARY", "SECONDARY"]


def absolute_name(name: str, zone: str, *, field_name: str) -> str:
    """`name` as a lowercase absolute name inside `zone`, or a UserError naming `field_name`.

    Relative names are taken relative to the zone, as in a zone file.
    """
    zone = zone.lower()
    if not zone.endswith("."):
        raise UserError(f"{field_name}: the zone {zone!r} must be absolute (end with a dot)")
    text = name.strip().lower()
    if not text:
        raise UserError(f"{field_name}: the record name is empty")
    if not text.endswith("."):
        text = f"{text}.{zone}"
    if text != zone and not text.endswith("." + zone):
        raise UserError(
            f"{field_name}: {name!r} is outside the zone {zone!r}; "
            f"use a name that ends in .{zone} or change the zone"
        )
    return text


def rtype_for_address(address: str) -> str:
    """The record type that publishes `address`: A, AAAA, or CNAME for a host name."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "CNAME"
    return "A" if parsed.version == 4 else "AAAA"


@dataclass(frozen=True)
class RecordKey:
    """Which record set: name and type, plus the Route 53 set identifier of a
    weighted or failover record (None for a simple record)."""

    name: str
    rtype: str = "A"
    set_identifier: str | None = None

    def __str__(self) -> str:
        suffix = f" [{self.set_identifier}]" if self.set_identifier else ""
        return f"{self.name} {self.rtype}{suffix}"


@dataclass(frozen=True)
class Routing:
    """Route 53 routing-policy fields; all None for a simple record (and for RFC 2136)."""

    weight: int | None = None
    failover: FailoverRole | None = None
    health_check_id: str | None = None

    @property
    def is_simple(self) -> bool:
        return self.weight is None and self.failover is None and self.health_check_id is None


@dataclass(frozen=True)
class RecordSet:
    key: RecordKey
    ttl: int
    values: frozenset[str]
    routing: Routing = field(default_factory=Routing)

    def describe(self) -> str:
        shown = ", ".join(sorted(self.values)) or "(no values)"
        return f"{shown} (TTL {self.ttl})"


def describe_values(record: RecordSet | None) -> str:
    """How a conflict message shows what is there: the values, or that nothing is."""
    return "absent" if record is None else record.describe()
