"""`dns` checks: a name resolves, optionally to exactly the expected values."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver

from failover.health.probe import TIMEOUT_REASON, BoundedProbe, Outcome
from failover.topology import DnsCheck


def _normalise(value: str) -> str:
    # Names compare case-insensitively and with or without the root dot.
    return value.strip().lower().rstrip(".")


class DnsProbe(BoundedProbe):
    def __init__(self, check: DnsCheck) -> None:
        super().__init__(check.timeout)
        self.check = check
        if check.server is None:
            self.resolver = dns.asyncresolver.Resolver()  # the system's /etc/resolv.conf
        else:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [check.server]
            self.resolver.port = check.port
        # No cache: each probe must ask the server again, or it would not notice a change.
        self.resolver.cache = None
        self.resolver.lifetime = check.timeout

    async def attempt(self) -> Outcome:
        name, rdtype = self.check.query, self.check.record_type.upper()
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return Outcome(False, f"NXDOMAIN: {name} does not exist")
        except dns.resolver.NoAnswer:
            return Outcome(False, f"{name} has no {rdtype} record")
        except dns.resolver.NoNameservers as exc:
            return Outcome(False, f"no server answered for {name}: {exc}")
        except dns.exception.Timeout:
            return Outcome(False, TIMEOUT_REASON)
        values = sorted(rdata.to_text() for rdata in answer)
        details = {"answers": values, "ttl": answer.rrset.ttl if answer.rrset else None}
        got = ", ".join(values)
        if self.check.expect is not None:
            expected = {_normalise(value) for value in self.check.expect}
            if {_normalise(value) for value in values} != expected:
                return Outcome(False, f"expected {', '.join(sorted(self.check.expect))}, got {got}",
                               details)
        return Outcome(True, f"{rdtype} {got}", details)
