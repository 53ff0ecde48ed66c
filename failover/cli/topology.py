"""`failover topology ...`: validate a topology folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from failover.cli import app
from failover.cli.common import JsonOption, console, print_json
from failover.engine import Durability, isolation_loss_bound
from failover.engine.policy import policy_from_topology
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


@dataclass(frozen=True)
class IsolationCost:
    """What a writer cut off from every other region costs: when the others declare it DOWN,
    how long past the last probe that found it healthy it may still take writes (its lease,
    which a promotion waits out), and what each service may lose meanwhile."""

    detection_s: float | None
    lease_s: float
    loss_bound_s: dict[str, float]

    @classmethod
    def of(cls, topo: Topology) -> IsolationCost:
        lease = policy_from_topology(topo).lease_ttl
        liveness = [check for region in topo.regions.values()
                    for check in region.liveness_checks]
        return cls(
            detection_s=min((check.detection_time for check in liveness), default=None),
            lease_s=lease,
            loss_bound_s={name: isolation_loss_bound(
                Durability.SYNC if service.durability == "sync" else Durability.ASYNC, lease)
                for name, service in sorted(topo.services.items())})

    def lines(self) -> list[str]:
        declared = (f"the others declare it DOWN after {self.detection_s:g} s and promote once "
                    "the lease is over" if self.detection_s is not None
                    else "no liveness check declares it DOWN")
        return [
            f"a writer cut off from the others stops taking writes {self.lease_s:g} s after the "
            "last probe that found it healthy (its lease: self_fence_after + "
            f"self_fence_duration); {declared}",
            *(f"  {name}: " + (
                "loses no acknowledged write on isolation while sync_count subscribers are "
                f"healthy (degraded to async: up to {self.lease_s:g} s)" if bound == 0 else
                f"may lose up to {bound:g} s of acknowledged writes on isolation, plus what "
                "its subscribers lagged at the cut (durability async)")
              for name, bound in self.loss_bound_s.items())]


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
    isolation = IsolationCost.of(topo)
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
        "isolation": asdict(isolation),
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
    for line in isolation.lines():
        console.print(line)
