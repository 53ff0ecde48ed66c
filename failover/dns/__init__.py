"""DNS re-routing (the GSLB): read and compare-and-set the records that send
clients to a service's writer and readers, on RFC 2136 servers or Route 53."""

from failover.dns.errors import DnsRejected, DnsUnavailable, RecordConflict, VisibilityTimeout
from failover.dns.provider import Change, DnsProvider
from failover.dns.records import RecordKey, RecordSet, Routing

__all__ = [
    "Change",
    "DnsProvider",
    "DnsRejected",
    "DnsUnavailable",
    "RecordConflict",
    "RecordKey",
    "RecordSet",
    "Routing",
    "VisibilityTimeout",
]
