"""How a DNS change can fail, each with a message that says what to do next."""

from __future__ import annotations

from failover.dns.records import RecordKey, RecordSet, describe_values
from failover.errors import ConflictError, FailoverError


class RecordConflict(ConflictError):
    """A compare-and-set found something else than what the caller expected."""

    def __init__(self, key: RecordKey, expected: frozenset[str] | None,
                 found: RecordSet | None) -> None:
        wanted = "absent" if expected is None else ", ".join(sorted(expected)) or "(no values)"
        super().__init__(
            f"{key} changed under us: expected {wanted}, found {describe_values(found)}; "
            "someone else changed it: read it again and decide again"
        )
        self.key = key
        self.expected = expected
        self.found = found


class DnsRejected(FailoverError):
    """The DNS server or API refused the change for a reason that retrying cannot fix."""


class DnsUnavailable(FailoverError):
    """The DNS server or API did not answer, even after retries: worth trying again later."""


class VisibilityTimeout(FailoverError):
    """A change was made but not every server showed it before the deadline."""
