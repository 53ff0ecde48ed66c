"""Dynamic DNS updates (RFC 2136) signed with TSIG, sent over TCP, with dnspython.

Compare-and-set is one UPDATE whose prerequisite is the old record set
("RRset exists, value dependent"): if anyone changed the record meanwhile the
server answers NXRRSET and changes nothing, so two controllers racing for the
writer record cannot both win.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from failover.dns.errors import DnsRejected, DnsUnavailable, RecordConflict
from failover.dns.provider import Change
from failover.dns.records import RecordKey, RecordSet, absolute_name
from failover.dns.retrying import transient_retries
from failover.dns.tsig import TsigKey
from failover.dns.visibility import wait_until_served
from failover.dns.wire import (
    TRANSIENT_ERRORS,
    Endpoint,
    ServerAnswerError,
    answer,
    canonical,
    rdata,
    soa_serial,
)
from failover.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


class _ServerFailure(Exception):
    """SERVFAIL: the server could not process the update now (e.g. zone reloading)."""


class _PrerequisiteFailed(Exception):
    """NXRRSET/YXRRSET: the record is not what the update's prerequisite said."""


# What the server's TSIG error says about our key.
_PEER_ERRORS: dict[type[Exception], str] = {
    dns.tsig.PeerBadKey: "BADKEY: it knows no key named {key!r} with this algorithm",
    dns.tsig.PeerBadSignature: "BADSIG: its secret for {key!r} differs from ours",
    dns.tsig.PeerBadTime: "BADTIME: our clocks differ by more than the allowed fudge",
}

_UNANSWERED: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, _ServerFailure)


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, ServerAnswerError):
        return error.rcode == dns.rcode.SERVFAIL
    return isinstance(error, _UNANSWERED)


class Rfc2136Provider:
    """A zone on a primary server that accepts TSIG-signed dynamic updates."""

    def __init__(self, zone: str, server: Endpoint, key: TsigKey, *,
                 authoritative: Sequence[Endpoint] = (), timeout: float = 2.0,
                 attempts: int = 4) -> None:
        self._zone = absolute_name(zone, zone, field_name="dns.zone")
        self.server = server
        self._key = key
        self._configured_servers = tuple(authoritative)
        self._discovered_servers: tuple[Endpoint, ...] | None = None
        self.timeout = timeout
        self._attempts = attempts

    def __repr__(self) -> str:  # the key's secret never shows, only its name
        return f"Rfc2136Provider(zone={self._zone!r}, server={self.server}, key={self._key.name!r})"

    @property
    def zone(self) -> str:
        return self._zone

    # ------------------------------------------------------------ reads

    def _checked(self, key: RecordKey) -> RecordKey:
        if key.set_identifier is not None:
            raise UserError(f"{key}: set identifiers are a Route 53 feature; "
                            "RFC 2136 records have none")
        return RecordKey(absolute_name(key.name, self._zone, field_name=str(key)),
                         key.rtype.upper())

    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        """`call`, retried on transient errors; what is left becomes a FailoverError."""
        retrying = transient_retries(f"{what} on {self.server}", worth_retrying=_worth_retrying,
                                     attempts=self._attempts, within=self.timeout * 4)
        try:
            return retrying(call)
        except ServerAnswerError as exc:
            raise DnsRejected(f"{what}: {exc}") from None
        except _UNANSWERED as exc:
            raise DnsUnavailable(f"{what}: {self.server} did not answer after "
                                 f"{self._attempts} attempts ({type(exc).__name__}: {exc})") from None

    def _serial(self) -> int:
        return self._with_retries(f"read the SOA serial of {self._zone}",
                                  lambda: soa_serial(self.server, self._zone, self.timeout))

    def read(self, key: RecordKey) -> RecordSet | None:
        key = self._checked(key)
        found = self._with_retries(f"read {key}", lambda: answer(self.server, key.name,
                                                                 key.rtype, self.timeout))
        if found is None:
            return None
        ttl, values = found
        return RecordSet(key, ttl, values)

    # ------------------------------------------------------------ writes

    def _new_update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(self._zone, keyring=self._key.dnspython_key())

    def _send(self, update: dns.update.UpdateMessage, key: RecordKey) -> int:
        """Send `update`; return the zone serial right after it was applied."""
        self._with_retries(f"update {key}", lambda: self._send_once(update, key))
        log.info("dns: updated %s on %s", key, self.server)
        return self._serial()

    def _send_once(self, update: dns.update.UpdateMessage, key: RecordKey) -> None:
        key_hint = (f"the server does not accept TSIG key {self._key.name!r} "
                    f"({self._key.algorithm}): check the key name, secret and algorithm "
                    "against the server's, and that both clocks agree within 5 minutes")
        try:
            response = dns.query.tcp(update, self.server.host, port=self.server.port,
                                     timeout=self.timeout)
        except dns.tsig.PeerError as exc:  # the server says why the signature failed
            reason = _PEER_ERRORS.get(type(exc), type(exc).__name__).format(key=self._key.name)
            raise DnsRejected(f"{self.server} refused the update of {key} (NOTAUTH, {reason}); "
                              f"{key_hint}") from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET):
            raise _PrerequisiteFailed()
        if rcode == dns.rcode.SERVFAIL:
            raise _ServerFailure(f"{self.server} answered SERVFAIL to the update of {key}")
        if rcode == dns.rcode.NOTAUTH:  # signature fine (else PeerError above): wrong server
            raise DnsRejected(
                f"{self.server} refused the update of {key} (NOTAUTH): it is not the primary "
                f"of {self._zone}; check dns.zone and dns.rfc2136.server")
        if rcode == dns.rcode.REFUSED:
            raise DnsRejected(
                f"{self.server} refused the update of {key} (REFUSED): the zone {self._zone} "
                f"is not dynamic there, or its update-policy does not let key "
                f"{self._key.name!r} change this name; grant it, e.g. "
                f"`update-policy {{ grant {self._key.name} zonesub ANY; }};`"
            )
        if rcode == dns.rcode.NOTZONE:
            raise DnsRejected(f"{self.server} says {key.name} is not in {self._zone} (NOTZONE)")
        raise DnsRejected(f"{self.server} refused the update of {key}: "
                          f"{dns.rcode.to_text(rcode)}")

    def compare_and_set(self, expected: RecordSet | None, desired: RecordSet) -> Change:
        key = self._checked(desired.key)
        if not desired.routing.is_simple:
            raise UserError(f"{key}: weights and failover roles are Route 53 features; "
                            "RFC 2136 records are simple")
        if expected is not None and self._checked(expected.key) != key:
            raise ValueError(f"compare_and_set of {key} given the old record of {expected.key}")
        where = str(key)
        old = canonical(key.rtype, expected.values, where=where) if expected else frozenset()
        new = canonical(key.rtype, desired.values, where=where)
        update = self._new_update()
        name = dns.name.from_text(key.name)
        if old:
            for value in sorted(old):
                update.present(name, rdata(key.rtype, value, where=where))
        else:
            update.absent(name, key.rtype)
        if new:
            update.replace(name, desired.ttl,
                           *(rdata(key.rtype, value, where=where) for value in sorted(new)))
        else:
            update.delete(name, key.rtype)
        try:
            serial = self._send(update, key)
        except _PrerequisiteFailed:
            found = self.read(key)
            # Already as desired: our own earlier attempt landed (its answer was
            # lost) or another writer wanted the same thing. Either way: done.
            if (found.values if found else frozenset()) != new:
                raise RecordConflict(key, old or None, found) from None
            serial = self._serial()
        return Change(key, present=new, absent=old - new, ticket=str(serial))

    def add_value(self, key: RecordKey, value: str, ttl: int) -> Change:
        key = self._checked(key)
        item = rdata(key.rtype, value, where=str(key))
        update = self._new_update()
        update.add(dns.name.from_text(key.name), ttl, item)
        serial = self._send(update, key)
        return Change(key, present=frozenset({item.to_text()}), absent=frozenset(),
                      ticket=str(serial))

    def remove_value(self, key: RecordKey, value: str) -> Change:
        key = self._checked(key)
        item = rdata(key.rtype, value, where=str(key))
        update = self._new_update()
        update.delete(dns.name.from_text(key.name), item)
        serial = self._send(update, key)
        return Change(key, present=frozenset(), absent=frozenset({item.to_text()}),
                      ticket=str(serial))

    # ------------------------------------------------------------ visibility

    def authoritative_servers(self) -> tuple[Endpoint, ...]:
        """The configured list, or the zone's NS hosts (on the update server's port)."""
        if self._configured_servers:
            return self._configured_servers
        if self._discovered_servers is None:
            self._discovered_servers = self._with_retries(
                f"find the authoritative servers of {self._zone}", self._discover_servers)
        return self._discovered_servers

    def _discover_servers(self) -> tuple[Endpoint, ...]:
        found = answer(self.server, self._zone, "NS", self.timeout)
        hosts: list[Endpoint] = []
        for target in sorted(found[1]) if found else []:
            addresses = (answer(self.server, target, "A", self.timeout)
                         or answer(self.server, target, "AAAA", self.timeout))
            if addresses is None:
                raise UserError(
                    f"dns.rfc2136.authoritative: cannot find the address of {target} (an NS of "
                    f"{self._zone}) on {self.server}; list the zone's servers as host:port"
                )
            hosts.extend(Endpoint(address, self.server.port) for address in sorted(addresses[1]))
        return tuple(hosts) or (self.server,)

    def wait_visible(self, change: Change, timeout: float) -> None:
        if not change.pending:
            return
        wait_until_served(self.authoritative_servers(), self._zone, change, int(change.ticket),
                          timeout=timeout, query_timeout=self.timeout)
