"""`failover lab ...`: the three-region (or five-region) lab on this machine, its faults and its drill."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from failover.cli import app
from failover.cli.common import JsonOption, console, console_err, print_json
from failover.lab import state as lab

lab_app = typer.Typer(help="Three (or five) local regions: PostgreSQL, BIND9 and controllers.",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")

DirOption = Annotated[Path, typer.Option(
    "--dir", default_factory=lab.default_dir,
    help=f"The lab's folder; its servers' users must be able to reach it. Default: "
         f"{lab.DEFAULT_DIR} here, or {lab.SHARED_DIR} when this folder is closed to them "
         "(a checkout under /root).", show_default=False)]
RegionArg = Annotated[str, typer.Argument(
    help="us-east-1, us-west-2 or eu-west-1 (with --regions 5: also ap-south-1, sa-east-1).")]
FAULT_KINDS = ("crash | hang | isolate | controller-crash | dns-down | db-partition | restart | "
               "pause-controller | partition")


def _progress(message: str) -> None:
    console_err.print(f"[dim]lab:[/dim] {message}", highlight=False)


@lab_app.command("up")
def up(
    lab_dir: DirOption,
    *,
    coordination: Annotated[str, typer.Option(
        "--coordination", help="peers (default) or etcd (a three-member etcd cluster).")]
    = "peers",
    regions: Annotated[int, typer.Option(
        "--regions", help="3 (default) or 5 regions (quorum: a majority).")] = 3,
    rejoin: Annotated[str, typer.Option(
        "--rejoin", help="auto (default): the fleet rejoins a returning old writer; manual: "
                         "it stays fenced until `failover rejoin` (the drill runs it).")]
    = "auto",
    durability: Annotated[str, typer.Option(
        "--durability", help="async (default), or sync: the writer's commits wait for "
                             "--sync-count of its healthy subscribers.")] = "async",
    sync_count: Annotated[int, typer.Option(
        "--sync-count", help="With --durability sync: how many subscribers confirm a commit "
                             "(default 1).")] = 1,
    sync_strict: Annotated[bool, typer.Option(
        "--sync-strict", help="With --durability sync: when fewer than --sync-count subscribers "
                              "are healthy, writes wait rather than the writer degrading to "
                              "asynchronous commits.")] = False,
    tls: Annotated[bool, typer.Option(
        "--tls", help="TLS from a throwaway CA in DIR/tls: PostgreSQL over TLS only (one built "
                      "with OpenSSL: FAILOVER_PG_BINDIR, else Debian's 15), https:// "
                      "controllers, every connection verified (etcd stays plain).")] = False,
    timings: Annotated[str, typer.Option(
        "--timings", help="default (a probe a second, 3 failures, a 2 s lease: robust on a "
                          "loaded machine) or fast (a probe every 500 ms re-probed every 200 ms "
                          "after a failure, 5 failures, a 1 s lease).")] = "default",
    json_out: JsonOption = False,
) -> None:
    """Start the regions and return when the fleet is healthy."""
    from failover.errors import UserError
    from failover.lab.build import up as build_up

    if coordination not in ("peers", "etcd"):
        raise UserError(f"--coordination: {coordination!r}; use peers or etcd")
    state = build_up(lab_dir, coordination=coordination, regions=regions, progress=_progress,
                     rejoin=rejoin, durability=durability, sync_count=sync_count,
                     sync_strict=sync_strict, tls=tls, timings=timings)
    if json_out:
        print_json(state.model_dump(mode="json"))
        return
    console.print(f"lab up in {state.dir}: topology {state.topology}")
    _print_status(state)


def _print_status(state: lab.LabState) -> None:
    from rich.table import Table

    from failover.lab.faults import describe
    from failover.lab.processes import alive

    table = Table(title="failover lab")
    for column in ("region", "address", "postgres pid", "controller", "fault"):
        table.add_column(column)
    for region in state.regions:
        pg = (f"{region.postmaster_pid}" if alive(region.postmaster_pid) else "down")
        ctl = (f"{region.controller_url} ({region.controller_pid})"
               if alive(region.controller_pid) else "down")
        table.add_row(region.name, region.address, pg, ctl,
                      ", ".join(map(describe, state.faults.get(region.name, []))))
    console.print(table)
    dns = "up" if alive(state.dns.pid) else "down"
    console.print(f"DNS {state.dns.address}:{state.dns.port} zone {state.dns.zone} ({dns}); "
                  f"service {state.service.name}: writer record {state.service.writer_record}, "
                  f"reader record {state.service.reader_record}, TTL {state.service.ttl} s")
    if state.tls:
        console.print(f"TLS: PostgreSQL and the controllers, verified with the CA {state.ca_file()}")


@lab_app.command("status")
def status(lab_dir: DirOption, json_out: JsonOption = False) -> None:
    """What runs in the lab, by PID, and which faults are in force."""
    from failover.lab.processes import alive

    state = lab.load(lab_dir)
    if json_out:
        data = state.model_dump(mode="json")
        for region in data["regions"]:
            region["postgres_running"] = alive(region["postmaster_pid"])
            region["controller_running"] = alive(region["controller_pid"])
        data["dns"]["running"] = alive(state.dns.pid)
        print_json(data)
        return
    _print_status(state)


@lab_app.command("down")
def down(
    lab_dir: DirOption,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the lab's folder.")] = False,
) -> None:
    """Stop everything the lab started, by PID."""
    from failover.lab.build import down as build_down

    build_down(lab_dir, purge=purge, progress=_progress)


@lab_app.command("fault")
def fault(
    region: RegionArg,
    kind: Annotated[str, typer.Option("--kind", help=FAULT_KINDS)],
    lab_dir: DirOption,
    peer: Annotated[str | None, typer.Option(
        "--peer", help="--kind partition: the region cut off from REGION.")] = None,
    one_way: Annotated[bool, typer.Option(
        "--one-way", help="--kind partition: drop only what REGION sends to the peer.")] = False,
) -> None:
    """Inject a fault into REGION (heal it with `failover lab heal`)."""
    from failover.lab.faults import fault as inject

    console.print(inject(lab_dir, region, kind, peer=peer, one_way=one_way))


@lab_app.command("heal")
def heal(
    region: RegionArg,
    lab_dir: DirOption,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="Undo only this fault (default: every fault of REGION).")] = None,
    peer: Annotated[str | None, typer.Option(
        "--peer", help="--kind partition: only the partition with this region.")] = None,
) -> None:
    """Undo REGION's faults (after crash or hang, an old primary comes back fenced)."""
    from failover.lab.faults import heal as undo

    console.print(undo(lab_dir, region, kind, peer=peer))


@lab_app.command("drill")
def drill(
    lab_dir: DirOption,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of each kind.")] = 1,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="crash | hang | isolate | db-partition | crash-partition (the writer "
                       "crashes and the link between two other regions is cut) | restart | "
                       "pause-controller | writer-partition (the writer cut off from one "
                       "region) | blip-300ms | blip-800ms (the writer's database unreachable "
                       "from the other regions that long: no failover is due) | "
                       "controller-crash | dns-down | switchover (repeatable); default crash")]
    = None,
    settle: Annotated[float, typer.Option(
        "--settle", help="Seconds the fleet has after each fault's end before every region "
                         "is asked whether it takes a write.")] = 20.0,
    json_out: JsonOption = False,
) -> None:
    """Inject faults into the writer region under a client workload; print what they cost."""
    from failover.lab.drill import drill as run_drill

    def show_round(result: Any) -> None:
        if not json_out:
            console_err.print(
                f"[dim]drill:[/dim] {result.kind} round {result.round}: "
                + (f"{result.old_writer} -> {result.new_writer}, RTO {_secs(result.rto_s)}, "
                   f"detection {_secs(result.detection_s)}, DNS flip {_secs(result.dns_flip_s)}"
                   if result.failed_over else "no failover")
                + f", lost {result.lost}, split-brain writes {result.split_brain_writes}, "
                f"duplicate keys {result.duplicate_keys}", highlight=False)

    report = run_drill(lab_dir, kind or ["crash"], rounds, _progress, after_round=show_round,
                       settle=settle)
    # A long drill's figures must outlive a scrolled-away or squeezed terminal.
    saved = lab_dir / "drills" / f"drill-{time.strftime('%Y%m%dT%H%M%S')}.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(report, indent=2) + "\n")
    if json_out:
        print_json(report)
        return
    _print_drill(report)
    console.print(f"the report as JSON: {saved}", highlight=False)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _print_drill(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="failover lab drill (median / p99)")
    for column in ("kind", "rounds", "failovers", "detection", "RTO (TTL)", "DNS flip",
                   "write pause", "acked", "lost (DNS client / checker)", "split-brain",
                   "dup keys", "false failovers", "writable after", "DNS = record after end",
                   "run twice"):
        table.add_column(column)

    def pair(figures: dict[str, float | None]) -> str:
        return f"{_secs(figures['median'])} / {_secs(figures['p99'])}"

    for kind, k in report["kinds"].items():
        table.add_row(kind, str(k["rounds"]), str(k["failovers"]), pair(k["detection_s"]),
                      f"{pair(k['rto_s'])} (TTL {k['ttl_s']} s)", pair(k["dns_flip_s"]),
                      pair(k["write_pause_s"]), str(k["acknowledged"]),
                      f"{k['lost']} / {_count(k['lost_acknowledged'])}",
                      str(k["split_brain_writes"]),
                      str(k["duplicate_keys"]), str(k["false_failovers"]),
                      _span(k["writable_regions_after"]),
                      f"{pair(k['dns_converged_s'])}, {k['dns_disagreeing_at_end']} not at the end",
                      _count(k["plans_run_twice"]))
    # Fifteen columns: wider than a default 80-column pipe, and squeezed figures are unreadable.
    Console(width=max(console.width, 220)).print(table)


def _count(value: int | None) -> str:
    return "not measured" if value is None else str(value)


def _span(figures: dict[str, int | None]) -> str:
    low, high = figures["min"], figures["max"]
    return "-" if low is None else str(low) if low == high else f"{low}-{high}"
