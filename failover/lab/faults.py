"""`failover lab fault` and `failover lab heal`: break one region the way production does.

- crash: SIGKILL the region's postmaster and every backend (a machine dying);
- hang: SIGSTOP them all (connections hang, nothing refuses);
- isolate: iptables drops (never refuses) every packet between the region's
  processes and the other regions, matched by the region's own user, while the
  region's controller still reaches its own database;
- controller-crash: SIGKILL the region's controller;
- dns-down: stop the DNS server.

`heal` undoes the fault; an old primary that comes back is fenced before any
client can reach it, unless it is still the fleet's writer.
"""

from __future__ import annotations

import pwd
import signal
from pathlib import Path

from failover.controller.client import acting_view, fleet_statuses
from failover.dns.wire import Endpoint
from failover.errors import UserError
from failover.lab import netfilter, processes
from failover.lab import state as lab
from failover.lab.bind import restart as restart_named
from failover.lab.launch import region_server, start_controller
from failover.lab.unprivileged import region_user
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps
from failover.postgres.steps import run_steps
from failover.topology import load_topology

KINDS = ("crash", "hang", "isolate", "controller-crash", "dns-down")


def _signal_tree(pid: int | None, sig: signal.Signals) -> None:
    if pid is not None:
        processes.signal_all(processes.tree(pid), sig)


def _isolation_rules(state: lab.LabState, region: str) -> list[list[str]]:
    # Every process of a region (its PostgreSQL as the region's user, its
    # controller as root) runs in the region's group: match packets by it.
    me = state.region(region)
    mine = pwd.getpwnam(me.user).pw_gid

    def addresses(name: str) -> list[str]:
        # A region's etcd member, if the lab runs etcd, is part of the region.
        return [state.region(name).address,
                *(member.address for member in state.etcd if member.region == name)]

    rules = []
    for other in state.regions:
        if other.name == region:
            continue
        gid = pwd.getpwnam(other.user).pw_gid
        rules += [["-m", "owner", "--gid-owner", str(mine), "-d", address]
                  for address in addresses(other.name)]
        rules += [["-m", "owner", "--gid-owner", str(gid), "-d", address]
                  for address in addresses(region)]
    return rules


def _fence_unless_writer(state: lab.LabState, region: str) -> str:
    """Fence a region's database that comes back, unless the fleet still has it as writer."""
    view = acting_view(fleet_statuses(state.controllers()))
    writer = (view or {}).get("services", {}).get(state.service.name, {}).get("writer")
    if writer == region:
        return f"{region} is still the writer: left writable"
    topo = load_topology(Path(state.topology))
    with ServiceDatabases.from_topology(topo, state.service.name).opened() as db:
        run_steps(fence_steps(db, region))
    return f"{region} fenced (the writer is {writer or 'unknown'})"


def fault(lab_dir: Path, region_name: str, kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"--kind: {kind!r} is not a fault; use one of {', '.join(KINDS)}")
    state = lab.load(lab_dir)
    region = state.region(region_name)
    if kind in state.faults.get(region_name, []):
        raise UserError(f"REGION: {region_name} already has the fault {kind!r}; "
                        f"`failover lab heal {region_name}` first")
    if kind == "crash":
        if not processes.alive(region.postmaster_pid):
            raise UserError(f"REGION: {region_name}'s PostgreSQL is not running")
        assert region.postmaster_pid is not None
        processes.kill_tree(region.postmaster_pid)
        region.postmaster_pid = None
        what = f"{region_name}: PostgreSQL killed (SIGKILL)"
    elif kind == "hang":
        _signal_tree(region.postmaster_pid, signal.SIGSTOP)
        what = f"{region_name}: PostgreSQL stopped (SIGSTOP): connections hang"
    elif kind == "isolate":
        netfilter.drop(netfilter.tag(kind, region_name), _isolation_rules(state, region_name),
                       why="--kind isolate")
        what = f"{region_name}: isolated from the other regions (packets dropped)"
    elif kind == "controller-crash":
        processes.stop(region.controller_pid, signal.SIGKILL, 10.0)
        region.controller_pid = None
        what = f"{region_name}: controller killed (SIGKILL)"
    else:
        processes.stop(state.dns.pid, signal.SIGTERM, 10.0)
        state.dns.pid = None
        what = "DNS server stopped"
    state.faults.setdefault(region_name, []).append(kind)
    lab.save(state, lab_dir)
    return what


def heal(lab_dir: Path, region_name: str, kind: str | None = None) -> str:
    """Undo `kind`, or every fault of the region (newest first)."""
    state = lab.load(lab_dir)
    state.region(region_name)
    kinds = state.faults.get(region_name, [])
    if not kinds or (kind is not None and kind not in kinds):
        raise UserError(f"REGION: {region_name} has no {kind or 'fault'} to heal")
    done = []
    for undo in reversed([kind] if kind is not None else list(kinds)):
        done.append(_heal(state, lab_dir, region_name, undo))
        kinds.remove(undo)
        if not kinds:
            del state.faults[region_name]
        lab.save(state, lab_dir)
    return "; ".join(done)


def _heal(state: lab.LabState, lab_dir: Path, region_name: str, kind: str) -> str:
    region = state.region(region_name)
    if kind == "crash":
        server = region_server(region)
        server.start()
        region.postmaster_pid = server.pid
        return f"{region_name}: PostgreSQL restarted; {_fence_unless_writer(state, region_name)}"
    if kind == "hang":
        _signal_tree(region.postmaster_pid, signal.SIGCONT)
        return f"{region_name}: PostgreSQL resumed; {_fence_unless_writer(state, region_name)}"
    if kind == "isolate":
        netfilter.undrop(netfilter.tag(kind, region_name))
        return f"{region_name}: reconnected"
    if kind == "controller-crash":
        topo = Path(state.topology)
        region.controller_pid = start_controller(lab_dir, topo, region_name,
                                                 region_user(region_name))
        return f"{region_name}: controller restarted"
    named = restart_named(Path(state.dns.key_file).parent,
                          Endpoint(state.dns.address, state.dns.port), state.dns.zone)
    state.dns.pid = named.pid
    return "DNS server restarted"
