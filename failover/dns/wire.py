"""Plain DNS queries to one server: what the record sets and the zone serial are there."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from failover.errors import UserError


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, default_port: int, field_name: str) -> Endpoint:
        """'host', 'host:port' or '[v6]:port'; a UserError names `field_name` otherwise."""
        host, port = text.strip(), str(default_port)
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif host.count(":") == 1:
            host, port = host.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or (
                ":" in host and not _is_ipv6(host)):
            raise UserError(f"{field_name}: {text!r} is not host:port (e.g. 192.0.2.53:53)")
        return cls(host, int(port))


# Errors a query may meet on a healthy network that is slow or restarting.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    dns.exception.Timeout, EOFError, OSError,
)


class ServerAnswerError(Exception):
    """The server answered with an error code to a plain query."""

    def __init__(self, server: Endpoint, rcode: dns.rcode.Rcode, question: str) -> None:
        super().__init__(f"{server} answered {dns.rcode.to_text(rcode)} for {question}")
        self.rcode = rcode


def rdata(rtype: str, value: str, *, where: str) -> dns.rdata.Rdata:
    """One value as wire data; a value that does not parse is the user's to fix."""
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rtype, value, origin=dns.name.root)
    except (dns.exception.SyntaxError, ValueError) as exc:
        raise UserError(f"{where}: {value!r} is not a valid {rtype} value ({exc})") from None


def canonical(rtype: str, values: frozenset[str], *, where: str) -> frozenset[str]:
    """Values spelled the way servers print them, so that sets compare equal."""
    return frozenset(rdata(rtype, value, where=where).to_text() for value in values)


def ask(server: Endpoint, name: str, rtype: str, timeout: float) -> dns.message.Message:
    """One non-recursive query (UDP, TCP when truncated); raises on transport errors."""
    query = dns.message.make_query(name, rtype)
    query.flags &= ~dns.flags.RD
    response, _ = dns.query.udp_with_fallback(query, server.host, timeout=timeout,
                                              port=server.port)
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise ServerAnswerError(server, rcode, f"{name} {rtype}")
    return response


def answer(server: Endpoint, name: str, rtype: str,
           timeout: float) -> tuple[int, frozenset[str]] | None:
    """(TTL, values) of the record set `server` answers for `name`/`rtype`, or None."""
    response = ask(server, name, rtype, timeout)
    found = response.get_rrset(response.answer, dns.name.from_text(name), dns.rdataclass.IN,
                               dns.rdatatype.from_text(rtype))
    if found is None:
        return None
    return found.ttl, frozenset(item.to_text() for item in found)


def soa_serial(server: Endpoint, zone: str, timeout: float) -> int:
    """The zone's SOA serial as `server` serves it now."""
    response = ask(server, zone, "SOA", timeout)
    found = response.get_rrset(response.answer, dns.name.from_text(zone), dns.rdataclass.IN,
                               dns.rdatatype.SOA)
    if found is None:
        raise ServerAnswerError(server, response.rcode(), f"{zone} SOA (no SOA: not authoritative)")
    serial: int = found[0].serial
    return serial


def serial_reached(serial: int, target: int) -> bool:
    """RFC 1982 serial arithmetic: has `serial` reached `target`, across a wrap at 2**32."""
    return serial == target or 0 < (serial - target) % 2**32 < 2**31
