"""`failover topology ...`: validate a topology folder."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from failover.cli import app
from failover.cli.common import JsonOption, console, print_json
from failover.errors import UserError
from failover.tls import client_context
from failover.topology import FLEET_FILE, HttpCheck, Topology, load_topology

topology_app = typer.Typer(help="Validate and generate topology folders.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")


def _read_file(path: Path, *, field: str) -> None:
    try:
        path.read_bytes()
    except OSError as exc:
        raise UserError(f"{field}: cannot read {path}: {exc.strerror}") from None


def _secret_problems(topo: Topology) -> list[str]:
    """What a controller would fail to read when it first needs it: every key file is
    opened and every environment variable the topology names looked up, as the
    controller reads them. Nothing is sent anywhere; each problem names its field."""
    fleet_file = topo.path / FLEET_FILE
    reads: list[Callable[[], object]] = [topo.signing_key, topo.api_client_tls]
    reads += [read for region in topo.regions.values() for endpoint in region.postgres.values()
              for read in (endpoint.password, endpoint.tls_files)]
    reads += [partial(client_context, check.ca_file, check.cert_file, check.key_file,
                      where=f"{topo.region_files[name]}: checks[{index}]")
              for name, region in topo.regions.items()
              for index, check in enumerate(region.checks)
              if isinstance(check, HttpCheck) and (check.ca_file or check.cert_file)]
    dns = topo.fleet.dns
    if dns.provider == "rfc2136" and dns.rfc2136 is not None:
        from failover.dns.factory import tsig_key

        reads.append(partial(tsig_key, dns.rfc2136, where=f"{fleet_file}: dns"))
    etcd = topo.fleet.coordination.etcd
    if topo.fleet.coordination.backend == "etcd" and etcd is not None:
        from failover.coordination.etcd import etcd_password

        reads.append(partial(etcd_password, etcd, str(fleet_file)))
        reads += [partial(_read_file, path, field=f"{fleet_file}: coordination.etcd.{name}")
                  for name, path in (("ca_file", etcd.ca_file), ("cert_file", etcd.cert_file),
                                     ("key_file", etcd.key_file)) if path is not None]
    problems: list[str] = []
    for read in reads:
        try:
            read()
        except UserError as exc:
            problems += exc.problems
    return problems


@topology_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="The topology folder.")],
    strict: Annotated[bool, typer.Option(
        "--strict", help="Also open every key, password and TLS file and check that every "
        "environment variable the topology names is set, as a controller on this host would "
        "(a region's own api.cert_file and api.key_file are read by its controller at start).")]
    = False,
    json_out: JsonOption = False,
) -> None:
    """Check a topology folder; exit 2 with one line per problem."""
    topo = load_topology(path, flag="PATH")
    if strict and (problems := _secret_problems(topo)):
        raise UserError(f"{topo.path}: {len(problems)} secret(s) cannot be read", problems)
    summary = {
        "topology": str(topo.path),
        "fleet": topo.fleet.name,
        "quorum": topo.quorum,
        "regions": {name: {"priority": r.priority, "address": r.address, "checks": len(r.checks)}
                    for name, r in topo.regions.items()},
        "services": sorted(topo.services),
        "dns_provider": topo.fleet.dns.provider,
        "coordination": topo.fleet.coordination.backend,
        "secrets_checked": strict,
    }
    if json_out:
        print_json({"valid": True, **summary})
        return
    console.print(
        f"[green]valid[/green]: fleet {topo.fleet.name!r}, {len(topo.regions)} regions "
        f"({', '.join(topo.regions)}), quorum {topo.quorum}, services: "
        f"{', '.join(topo.services) or 'none'}, DNS {topo.fleet.dns.provider}, "
        f"coordination {topo.fleet.coordination.backend}"
        + ("; every secret it names can be read here" if strict else "")
    )
