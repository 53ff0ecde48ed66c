"""The fleet as configured: a folder with `fleet.toml` and one `<region>.toml` per region.

`models` holds what a topology is, `loader` reads and validates a folder,
`terraform` writes one from Terraform outputs. Which region holds a service's
primary is deliberately absent: that is state, discovered from the databases and DNS.
"""

from failover.topology.loader import load_topology
from failover.topology.models import (
    CHECK_KINDS,
    FLEET_FILE,
    Check,
    CommandCheck,
    CoordinationSettings,
    DnsCheck,
    DnsSettings,
    EtcdSettings,
    Fleet,
    HttpCheck,
    PostgresCheck,
    PostgresEndpoint,
    Region,
    Rfc2136Settings,
    Route53Settings,
    Service,
    TcpCheck,
    Topology,
)

__all__ = [
    "CHECK_KINDS",
    "FLEET_FILE",
    "Check",
    "CommandCheck",
    "CoordinationSettings",
    "DnsCheck",
    "DnsSettings",
    "EtcdSettings",
    "Fleet",
    "HttpCheck",
    "PostgresCheck",
    "PostgresEndpoint",
    "Region",
    "Rfc2136Settings",
    "Route53Settings",
    "Service",
    "TcpCheck",
    "Topology",
    "load_topology",
]
