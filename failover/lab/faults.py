"""`failover lab fault` and `failover lab heal`: break one region the way production does.

- crash: SIGKILL the region's postmaster and every backend (a machine dying);
- hang: SIGSTOP them all (connections hang, nothing refuses);
- isolate: iptables drops (never refuses) every packet between the region's
  processes and the other regions, matched by the region's own group, while the
  region's controller still reaches its own database;
- controller-crash: SIGKILL the region's controller;
- dns-down: stop the DNS server;
- db-partition: only the region's database port is cut off from the other regions'
  processes; its controller is still heard, and its own outgoing connections pass;
- restart: SIGKILL the region's PostgreSQL and start it again at once with
  `pg_ctl start` as the region's user, as systemd or a VM reboot would: nothing is
  left to heal;
- pause-controller: SIGSTOP the region's controller (a paused VM, a long GC);
- partition (with a peer region): drop every packet each region's processes send
  to the other's addresses (region and etcd member, all ports); one-way, only
  what the region sends to its peer, so connections it opens to the peer hang while
  the peer's connections to it still work (on loopback the answers go to 127.0.0.1
  and cannot be told apart), as behind a stateful firewall.

A fault only injects and heal only removes what it injected: whatever an old
primary that comes back needs is the controllers' doing, never the lab's, or the
lab would hide what the product fails to do.
"""

from __future__ import annotations

import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from failover.dns.wire import Endpoint
from failover.errors import UserError
from failover.lab import netfilter, processes
from failover.lab import state as lab
from failover.lab.bind import restart as restart_named
from failover.lab.launch import boot_postgres, start_controller, start_postgres
from failover.lab.unprivileged import region_user

KINDS = ("crash", "hang", "isolate", "controller-crash", "dns-down", "db-partition", "restart",
         "pause-controller", "partition")
_FILTERED = ("isolate", "db-partition", "partition")
_ONE_WAY = "one-way"


@dataclass(frozen=True)
class Fault:
    kind: str
    peer: str | None = None  # the other side of a partition
    one_way: bool = False

    @property
    def label(self) -> str:
        """How lab.json records it: the kind, then a partition's peer and `one-way`."""
        return ":".join([self.kind, *([self.peer] if self.peer else []),
                         *([_ONE_WAY] if self.one_way else [])])

    @classmethod
    def parse(cls, label: str) -> Fault:
        kind, *rest = label.split(":")
        return cls(kind, rest[0] if rest else None, _ONE_WAY in rest[1:])


def describe(label: str) -> str:
    """A recorded fault for people: `partition <-> us-west-2`, `partition -> us-west-2`."""
    fault = Fault.parse(label)
    if fault.peer is None:
        return fault.kind
    return f"{fault.kind} {'->' if fault.one_way else '<->'} {fault.peer}"


def _signal_tree(pid: int | None, sig: signal.Signals) -> None:
    if pid is not None:
        processes.signal_all(processes.tree(pid), sig)


def _link(state: lab.LabState, sender: str, receiver: str, *, db_only: bool = False) -> list[list[str]]:
    """iptables matches for the packets `sender`'s processes send to `receiver`'s addresses
    (only to its database port with `db_only`)."""
    # Every process of a region (its PostgreSQL as the region's user, its controller as
    # root, its etcd member under a uid of its own) runs in the region's group.
    owner = ["-m", "owner", "--gid-owner", str(pwd.getpwnam(state.region(sender).user).pw_gid)]
    target = state.region(receiver)
    if db_only:
        return [["-d", target.address, "-p", "tcp", "--dport", str(target.pg_port), *owner]]
    # A region's etcd member, if the lab runs etcd, is part of the region.
    addresses = [target.address, *(m.address for m in state.etcd if m.region == receiver)]
    return [["-d", address, *owner] for address in addresses]


def _rules(state: lab.LabState, region: str, fault: Fault) -> list[list[str]]:
    others = [r.name for r in state.regions if r.name != region]
    if fault.kind == "isolate":
        return [rule for other in others
                for rule in (*_link(state, region, other), *_link(state, other, region))]
    if fault.kind == "db-partition":
        return [rule for other in others for rule in _link(state, other, region, db_only=True)]
    assert fault.peer is not None
    return [*_link(state, region, fault.peer),
            *([] if fault.one_way else _link(state, fault.peer, region))]


def _check(state: lab.LabState, region_name: str, fault: Fault) -> None:
    """Refuse a fault that cannot be injected now, saying why (before anything changes)."""
    region = state.region(region_name)
    in_force = state.faults.get(region_name, [])
    if fault.label in in_force:
        raise UserError(f"REGION: {region_name} already has the fault {describe(fault.label)!r}; "
                        f"`failover lab heal {region_name}` first")
    if fault.kind == "partition":
        names = [r.name for r in state.regions]
        if fault.peer not in names or fault.peer == region_name:
            raise UserError(f"--peer: {fault.peer!r}; name another region of the lab "
                            f"({', '.join(n for n in names if n != region_name)})")
    if fault.kind in ("crash", "restart") and not processes.alive(region.postmaster_pid):
        raise UserError(f"REGION: {region_name}'s PostgreSQL is not running")
    if fault.kind == "restart" and "hang" in in_force:
        raise UserError(f"REGION: {region_name}'s PostgreSQL is stopped by a hang fault; "
                        f"`failover lab heal {region_name} --kind hang` first")
    if fault.kind == "pause-controller" and not processes.alive(region.controller_pid):
        raise UserError(f"REGION: {region_name}'s controller is not running")


def fault(lab_dir: Path, region_name: str, kind: str, *, peer: str | None = None,
          one_way: bool = False) -> str:
    if kind not in KINDS:
        raise UserError(f"--kind: {kind!r} is not a fault; use one of {', '.join(KINDS)}")
    if kind == "partition" and peer is None:
        raise UserError("--peer: --kind partition needs the region on the other side")
    if kind != "partition" and (peer is not None or one_way):
        raise UserError("--peer and --one-way go with --kind partition only")
    state = lab.load(lab_dir)
    this = Fault(kind, peer, one_way)
    _check(state, region_name, this)
    try:
        what = _INJECT[kind](state, state.region(region_name), this)
    except BaseException:
        lab.save(state, lab_dir)  # what did happen (a PostgreSQL killed but not restarted)
        raise
    if kind != "restart":  # over as soon as it is done: nothing stays in force
        state.faults.setdefault(region_name, []).append(this.label)
    lab.save(state, lab_dir)
    return what


def _crash(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    assert region.postmaster_pid is not None
    processes.kill_tree(region.postmaster_pid)
    region.postmaster_pid = None
    return f"{region.name}: PostgreSQL killed (SIGKILL)"


def _hang(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    _signal_tree(region.postmaster_pid, signal.SIGSTOP)
    return f"{region.name}: PostgreSQL stopped (SIGSTOP): connections hang"


def _filter(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    netfilter.drop(netfilter.tag(region.name, fault.label), _rules(state, region.name, fault),
                   why=f"--kind {fault.kind}")
    if fault.kind == "isolate":
        return f"{region.name}: isolated from the other regions (packets dropped)"
    if fault.kind == "db-partition":
        return (f"{region.name}: its database port {region.address}:{region.pg_port} is cut off "
                "from the other regions (packets dropped); its controller is still heard")
    return (f"{region.name}: packets to {fault.peer} dropped"
            + (" (one-way)" if fault.one_way else f", and from {fault.peer}"))


def _controller_crash(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    processes.stop(region.controller_pid, signal.SIGKILL, 10.0)
    region.controller_pid = None
    return f"{region.name}: controller killed (SIGKILL)"


def _dns_down(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    processes.stop(state.dns.pid, signal.SIGTERM, 10.0)
    state.dns.pid = None
    return "DNS server stopped"


def _restart(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    assert region.postmaster_pid is not None
    old = region.postmaster_pid
    processes.kill_tree(old)
    region.postmaster_pid = None
    region.postmaster_pid = boot_postgres(state, region.name)
    return (f"{region.name}: PostgreSQL killed (SIGKILL, PID {old}) and started again by "
            f"pg_ctl (PID {region.postmaster_pid}); nothing to heal")


def _pause_controller(state: lab.LabState, region: lab.RegionState, fault: Fault) -> str:
    _signal_tree(region.controller_pid, signal.SIGSTOP)
    return f"{region.name}: controller paused (SIGSTOP)"


_INJECT: dict[str, Callable[[lab.LabState, lab.RegionState, Fault], str]] = {
    "crash": _crash, "hang": _hang, "isolate": _filter, "controller-crash": _controller_crash,
    "dns-down": _dns_down, "db-partition": _filter, "restart": _restart,
    "pause-controller": _pause_controller, "partition": _filter,
}


def heal(lab_dir: Path, region_name: str, kind: str | None = None, *,
         peer: str | None = None) -> str:
    """Undo `kind` (a partition: with `peer` only, else all of them), or every fault of
    the region (newest first)."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind: {kind!r} is not a fault; use one of {', '.join(KINDS)}")
    if peer is not None and kind != "partition":
        raise UserError("--peer goes with --kind partition only")
    state = lab.load(lab_dir)
    state.region(region_name)
    if kind == "restart":
        return (f"{region_name}: a restart leaves nothing to heal (PostgreSQL was started "
                "again when it was injected)")
    in_force = state.faults.get(region_name, [])
    chosen = [label for label in in_force
              if kind is None or (Fault.parse(label).kind == kind
                                  and peer in (None, Fault.parse(label).peer))]
    if not chosen:
        what = f"partition with {peer}" if peer else kind or "fault"
        raise UserError(f"REGION: {region_name} has no {what} to heal")
    done = []
    for label in reversed(chosen):
        done.append(_heal(state, lab_dir, state.region(region_name), Fault.parse(label)))
        in_force.remove(label)
        if not in_force:
            del state.faults[region_name]
        lab.save(state, lab_dir)
    return "; ".join(done)


def _heal(state: lab.LabState, lab_dir: Path, region: lab.RegionState, fault: Fault) -> str:
    if fault.kind in _FILTERED:
        removed = netfilter.undrop(netfilter.tag(region.name, fault.label))
        return f"{region.name}: {describe(fault.label)} healed ({removed} packet filter rules removed)"
    if fault.kind == "crash":
        region.postmaster_pid = start_postgres(state, region.name)
        return f"{region.name}: PostgreSQL restarted"
    if fault.kind == "hang":
        _signal_tree(region.postmaster_pid, signal.SIGCONT)
        return f"{region.name}: PostgreSQL resumed (SIGCONT)"
    if fault.kind == "pause-controller":
        _signal_tree(region.controller_pid, signal.SIGCONT)
        return f"{region.name}: controller resumed (SIGCONT)"
    if fault.kind == "controller-crash":
        region.controller_pid = start_controller(lab_dir, Path(state.topology), region.name,
                                                 region_user(region.name))
        return f"{region.name}: controller restarted"
    named = restart_named(Path(state.dns.key_file).parent,
                          Endpoint(state.dns.address, state.dns.port), state.dns.zone)
    state.dns.pid = named.pid
    return "DNS server restarted"
