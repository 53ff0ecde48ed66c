"""`failover dns ...`: show where a service's DNS records point, and move its writer record."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from failover.cli import app
from failover.cli.common import (
    DryRunOption,
    JsonOption,
    TopologyOption,
    YesOption,
    confirm_or_abort,
    console,
    print_json,
)
from failover.dns.factory import provider_from_topology
from failover.dns.records import RecordKey, RecordSet, rtype_for_address
from failover.durations import parse_duration
from failover.errors import UserError
from failover.topology import Service, Topology, load_topology

dns_app = typer.Typer(help="Inspect and move the DNS records of services.", no_args_is_help=True)
app.add_typer(dns_app, name="dns")

ServiceArgument = Annotated[
    str, typer.Argument(metavar="SERVICE", help="The service, as named in fleet.toml.")]


def _record_types(topo: Topology, service: Service) -> list[str]:
    """The record types that can publish the service's regions (A, AAAA or both)."""
    return sorted({rtype_for_address(region.address) for region in topo.service_regions(service)})


def _describe(topo: Topology, role: str, key: RecordKey, record: RecordSet | None) -> dict[str, Any]:
    values = sorted(record.values) if record else []
    return {
        "role": role,
        "name": key.name,
        "type": key.rtype,
        "ttl": record.ttl if record else None,
        "values": [{"value": value,
                    "region": region.name if (region := topo.region_by_address(value)) else None}
                   for value in values],
    }


def _shown_values(entry: dict[str, Any]) -> str:
    if not entry["values"]:
        return "(absent)"
    return ", ".join(f"{item['value']} ({item['region'] or 'no region has this address'})"
                     for item in entry["values"])


@dns_app.command("show")
def show(service_name: ServiceArgument, topology: TopologyOption,
         json_out: JsonOption = False) -> None:
    """The writer and reader records of SERVICE: values, TTL, and the region of each value."""
    topo = load_topology(topology)
    service = topo.service(service_name)
    provider = provider_from_topology(topo)
    roles = [("writer", service.writer_record)]
    if service.reader_record is not None:
        roles.append(("reader", service.reader_record))
    records = []
    for role, name in roles:
        for rtype in _record_types(topo, service):
            key = RecordKey(name, rtype)
            records.append(_describe(topo, role, key, provider.read(key)))
    if json_out:
        print_json({"service": service.name, "zone": provider.zone,
                    "provider": topo.fleet.dns.provider, "records": records})
        return
    table = Table(title=f"DNS of service {service.name} (zone {provider.zone})")
    for column in ("role", "record", "TTL", "values (region)"):
        table.add_column(column)
    for entry in records:
        ttl = "-" if entry["ttl"] is None else str(entry["ttl"])
        table.add_row(entry["role"], f"{entry['name']} {entry['type']}", ttl, _shown_values(entry))
    console.print(table)


@dns_app.command("set-writer")
def set_writer(
    service_name: ServiceArgument,
    *,
    topology: TopologyOption,
    to: Annotated[str, typer.Option("--to", help="The region whose address becomes the writer.")],
    timeout: Annotated[float, typer.Option(
        "--timeout", parser=parse_duration, metavar="DURATION", show_default="2m",
        help="How long to wait until every authoritative server (or Route 53) serves it, "
             "e.g. 90s or 2m.")] = 120.0,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Point SERVICE's writer record at region --to (compare-and-set), then wait until served.

    This changes DNS only: it neither promotes nor fences a database. Use it to
    repair the record after a failover, or with databases you moved yourself.
    """
    topo = load_topology(topology)
    service = topo.service(service_name)
    region = topo.region(to, flag="--to")
    members = [member.name for member in topo.service_regions(service)]
    if region.name not in members:
        raise UserError(f"--to: region {region.name!r} has no copy of service {service.name!r} "
                        f"(its regions: {', '.join(members)})")
    if len(_record_types(topo, service)) > 1:
        raise UserError(f"service {service.name!r}: its regions mix IPv4 and IPv6 addresses, so "
                        "one writer record cannot hold any of them; give them one family")
    provider = provider_from_topology(topo)
    key = RecordKey(service.writer_record, rtype_for_address(region.address))
    desired = RecordSet(key, service.ttl, frozenset({region.address}))
    current = provider.read(key)
    before = _describe(topo, "writer", key, current)
    after = _describe(topo, "writer", key, desired)
    report: dict[str, Any] = {"service": service.name, "record": key.name, "type": key.rtype,
                              "before": before, "after": after, "dry_run": dry_run}
    if current == desired:
        report["changed"] = False
        if json_out:
            print_json(report)
        else:
            console.print(f"{key} already points at {region.name} ({region.address}), "
                          f"TTL {service.ttl}: nothing to do")
        return
    plan = (f"{key}: {_shown_values(before)} -> {_shown_values(after)}, TTL {service.ttl}")
    if dry_run:
        report["changed"] = False
        if json_out:
            print_json(report)
        else:
            console.print(f"would change {plan}", markup=False)
        return
    if not json_out:
        console.print(plan, markup=False)
    confirm_or_abort(f"Move the writer record of {service.name} to {region.name}? "
                     "(DNS only: no database is promoted or fenced)", yes=yes)
    started = time.monotonic()
    change = provider.compare_and_set(current, desired)
    provider.wait_visible(change, timeout)
    elapsed = time.monotonic() - started
    report.update(changed=True, seconds_until_served=round(elapsed, 3))
    if json_out:
        print_json(report)
    else:
        console.print(f"[green]done[/green]: {key} -> {region.address} ({region.name}), served by "
                      f"every authoritative server after {elapsed:.3f} s; clients may keep the "
                      f"old answer for up to the TTL ({service.ttl} s)")
