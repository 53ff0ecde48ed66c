"""Build the DNS provider a topology configures (the controller and the CLI use this)."""

from __future__ import annotations

from failover.dns.provider import DnsProvider
from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.route53 import Route53Provider
from failover.dns.tsig import TsigKey, key_from_env, load_key_file
from failover.dns.wire import Endpoint
from failover.errors import UserError
from failover.topology import FLEET_FILE, Rfc2136Settings, Topology


def tsig_key(rfc: Rfc2136Settings, *, where: str) -> TsigKey:
    """The key that signs updates: from key_file, else key_secret_env (`where`: [dns])."""
    if rfc.key_file is not None:
        return load_key_file(rfc.key_file, key_name=rfc.key_name, algorithm=rfc.algorithm,
                             field=f"{where}.rfc2136")
    if rfc.key_secret_env is not None:
        return key_from_env(rfc.key_secret_env, rfc.key_name, rfc.algorithm,
                            field=f"{where}.rfc2136")
    raise UserError(f"{where}.rfc2136: no TSIG key: set key_file (a tsig-keygen file) "
                    "or key_secret_env and key_name")


def provider_from_topology(topo: Topology) -> DnsProvider:
    """The provider of `[dns]` in fleet.toml; UserError when it is "none" or incomplete.

    Nothing is sent: key files and names are checked here, the servers are
    only contacted by the provider's calls.
    """
    settings = topo.fleet.dns
    where = f"{topo.path / FLEET_FILE}: dns"
    if settings.provider == "none" or settings.zone is None:
        raise UserError(f"{where}.provider: is \"none\", so failover does not manage DNS; set "
                        "provider = \"rfc2136\" or \"route53\" with a zone to use DNS verbs")
    if settings.provider == "rfc2136" and settings.rfc2136 is not None:
        rfc = settings.rfc2136
        key = tsig_key(rfc, where=where)
        server = Endpoint.parse(rfc.server, default_port=rfc.port,
                                field_name=f"{where}.rfc2136.server")
        authoritative = [Endpoint.parse(entry, default_port=rfc.port,
                                        field_name=f"{where}.rfc2136.authoritative")
                         for entry in rfc.authoritative]
        return Rfc2136Provider(settings.zone, server, key, authoritative=authoritative,
                               timeout=rfc.timeout)
    if settings.provider == "route53" and settings.route53 is not None:
        r53 = settings.route53
        # An endpoint_url means an emulator or a proxy, which may not enforce
        # Route 53's exact-match DELETE: check the record first there.
        return Route53Provider(settings.zone, r53.hosted_zone_id, endpoint_url=r53.endpoint_url,
                               region_name=r53.region_name,
                               requests_per_second=r53.requests_per_second, timeout=r53.timeout,
                               verify_before_change=r53.endpoint_url is not None)
    raise UserError(f"{where}.{settings.provider}: missing table [dns.{settings.provider}]")
