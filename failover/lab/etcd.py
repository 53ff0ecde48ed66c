"""A real three-member etcd cluster on loopback, for tests and `lab up --coordination etcd`.

Every member listens on its own loopback address with etcd's standard ports
(clients 2379, peers 2380), keeps its own data directory, runs in the
foreground and is stopped by PID. Faults: `kill` (SIGKILL), `pause` (SIGSTOP:
the member holds its sockets and answers nothing) and `partition` (iptables
drops everything sent to the member and everything it sends, or only its
traffic with its peers).

A partition needs to tell the member's own packets apart, and on loopback a
member dials its peers from 127.0.0.1 like everyone else; so when we are root
each member runs under a uid of its own, derived from its address, and the
partition matches that uid (and marks the connections it dials). The uid
needs no passwd entry: etcd only writes its data directory, handed to that uid.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from failover.coordination.etcd_client import gateway_client
from failover.errors import FailoverError
from failover.lab import daemons
from failover.lab.unprivileged import RunAs, server_user

APT_PACKAGES = ("etcd-server",)
CLIENT_PORT = 2379
PEER_PORT = 2380
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_STATUS_TIMEOUT = 1.0
# Member uids live above the range useradd hands out, one per loopback address.
_UID_BASE = 3_000_000
_RULE_TAG = "failover-etcd-partition-{address}"  # heal finds a member's rules by it


def etcd_binary() -> Path:
    """Where `etcd` is; a UserError says which package to install when it is missing."""
    return daemons.installed_binary("etcd", "/usr/bin/etcd", APT_PACKAGES, what="etcd")


def ensure_installed() -> Path:
    """Install etcd with apt when it is missing (test runners call this); its path."""
    return daemons.ensure_installed(etcd_binary, APT_PACKAGES)


def _member_user(address: str, gid: int | None = None) -> RunAs:
    """A uid of the member's own when we are root (see the module docstring), else ourselves;
    `gid` puts the member in a lab region's group, so the region's isolation cuts it off too."""
    if os.geteuid() != 0:
        return server_user()
    offset = int(ipaddress.IPv4Address(address)) - int(ipaddress.IPv4Address("127.0.0.0"))
    lab = server_user()
    return RunAs(uid=_UID_BASE + offset, gid=lab.gid if gid is None else gid,
                 name=f"etcd@{address}")


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                          check=False, timeout=15)


@dataclass(frozen=True)
class ClientTls:
    """TLS for the client port: members serve `cert_file` and ask clients for a
    certificate signed by `ca_file`. Peers still talk plain HTTP on loopback."""

    ca_file: Path
    cert_file: Path  # its subject alternative names cover every member's address
    key_file: Path
    client_cert_file: Path  # what the kit itself presents to ask a member's status
    client_key_file: Path


@dataclass
class EtcdMember:
    name: str
    address: str
    datadir: Path
    run_as: RunAs
    initial_cluster: str
    cluster_token: str
    heartbeat_ms: int
    election_ms: int
    tls: ClientTls | None = None
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    partitioned: bool = field(default=False, init=False)

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{PEER_PORT}"

    @property
    def log_file(self) -> Path:
        return self.datadir.parent / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise FailoverError(f"etcd member {self.name} is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart after a stop or a kill, on the same data) this member."""
        if self.running:
            return
        self.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_as.chown(self.datadir)
        argv = [
            str(etcd_binary()), "--name", self.name, "--data-dir", str(self.datadir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token, "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            # A member back from a partition must not depose a healthy leader: 3.4 (Debian's)
            # holds elections without a pre-vote by default, and each cost the fleet seconds
            # without its coordination store after every heal (3.5+ pre-votes by default).
            "--pre-vote=true",
            "--logger", "zap", "--log-outputs", "stderr", *self._tls_args(), *self.extra_args,
        ]
        self.process = daemons.spawn(argv, cwd=self.datadir.parent, log_file=self.log_file,
                                     run_as=self.run_as,
                                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        # The member runs as another uid: it gets its own readable copies.
        tls_dir = self.datadir.parent / f"{self.name}-tls"
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        for source in (self.tls.ca_file, self.tls.cert_file, self.tls.key_file):
            shutil.copyfile(source, tls_dir / source.name)
        self.run_as.chown(tls_dir)
        return ["--cert-file", str(tls_dir / self.tls.cert_file.name),
                "--key-file", str(tls_dir / self.tls.key_file.name),
                "--trusted-ca-file", str(tls_dir / self.tls.ca_file.name), "--client-cert-auth"]

    def client(self, timeout: float = _STATUS_TIMEOUT) -> etcd3gw.Etcd3Client:
        if self.tls is None:
            return gateway_client(self.client_url, timeout=timeout)
        return gateway_client(self.client_url, timeout=timeout, ca_file=str(self.tls.ca_file),
                              cert_file=str(self.tls.client_cert_file),
                              key_file=str(self.tls.client_key_file))

    def status(self) -> dict[str, str] | None:
        """This member's view: its id, its leader's id and the Raft term; None when it does
        not answer."""
        try:
            answer = self.client().status()
        except etcd_errors.Etcd3Exception:
            return None
        return {"member_id": str(answer["header"]["member_id"]),
                "leader": str(answer.get("leader", 0)), "term": str(answer.get("raftTerm", 0))}

    def kill(self) -> None:
        """SIGKILL: the member dies at once, as in a crash."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait(timeout=_STOP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the member keeps its sockets open and answers nothing (a hung member)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def partition(self, *, from_clients: bool = True) -> None:
        """Drop every packet sent to this member and every packet it sends (needs root).

        With `from_clients=False` only the peer traffic is dropped: clients still
        reach a member cut off from its cluster, as clients on its side of a split would.
        Every loopback packet passes OUTPUT once, so OUTPUT rules cut both ways.
        """
        if self.run_as.uid is None or os.geteuid() != 0:
            raise FailoverError("partitioning an etcd member needs root (iptables, own uid)")
        uid = str(self.run_as.uid)
        peer_port = str(PEER_PORT)
        mine = ["-m", "owner", "--uid-owner", uid]
        # Connections the member dials come from 127.0.0.1, not from its own
        # address: they are recognised by the mark its first packet puts on them.
        marked = ["-m", "connmark", "--mark", uid, "-j", "DROP"]
        if from_clients:
            rules = [[*mine, "-j", "CONNMARK", "--set-mark", uid], marked,
                     ["-d", f"{self.address}/32", "-j", "DROP"]]
        else:
            tcp = ["-p", "tcp"]
            rules = [[*mine, *tcp, "--dport", peer_port, "-j", "CONNMARK", "--set-mark", uid],
                     marked, [*mine, *tcp, "--sport", peer_port, "-j", "DROP"],
                     ["-d", f"{self.address}/32", *tcp, "--dport", peer_port, "-j", "DROP"]]
        self.partitioned = True
        tag = ["-m", "comment", "--comment", _RULE_TAG.format(address=self.address)]
        for rule in reversed(rules):  # each goes first in the chain: keep their order
            result = _iptables("-I", "OUTPUT", *tag, *rule)
            if result.returncode != 0:
                self.heal()
                raise FailoverError(f"iptables refused the partition of {self.name}: "
                                    f"{result.stderr.strip()}")

    def heal(self) -> None:
        """Remove this member's partition rules, found by their tag: safe to repeat, and
        from another process than the one that partitioned it."""
        listed = _iptables("-S", "OUTPUT")
        tag = _RULE_TAG.format(address=self.address)
        for line in listed.stdout.splitlines():
            spec = shlex.split(line)
            if spec[:2] == ["-A", "OUTPUT"] and tag in spec:
                _iptables("-D", *spec[1:])
        self.partitioned = False

    def stop(self) -> None:
        """Heal, then SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.partitioned:
            self.heal()
        if self.process is not None:
            daemons.stop(self.process, _STOP_TIMEOUT)


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    workdir: Path

    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def leader(self, *, timeout: float = _START_TIMEOUT) -> EtcdMember:
        """The member the running members agree leads the cluster; waits for an election."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {m.name: m.status() for m in self.members if m.running and not m.partitioned}
            answers = [s for s in seen.values() if s is not None]
            leaders = {s["leader"] for s in answers}
            if answers and len(leaders) == 1 and leaders != {"0"}:
                (leader_id,) = leaders
                for name, status in seen.items():
                    if status is not None and status["member_id"] == leader_id:
                        return self.member(name)
            if time.monotonic() > deadline:
                raise FailoverError(f"no etcd leader agreed within {timeout:g} s: {seen}; "
                                    f"logs in {self.workdir}")
            time.sleep(0.05)

    def wait_ready(self, *, timeout: float = _START_TIMEOUT) -> None:
        """Every running member answers and they agree on one leader."""
        deadline = time.monotonic() + timeout
        while True:
            crashed = [m.name for m in self.members
                       if m.process is not None and m.process.poll() is not None]
            if crashed:
                raise FailoverError(f"etcd members {crashed} exited; see {self.workdir}/*.log")
            statuses = [m.status() for m in self.members if m.running]
            if statuses and all(s is not None and s["leader"] != "0" for s in statuses):
                self.leader(timeout=max(0.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise FailoverError(f"etcd cluster not ready within {timeout:g} s; "
                                    f"see {self.workdir}/*.log")
            time.sleep(0.05)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_cluster(workdir: Path, addresses: Sequence[str], *, heartbeat_ms: int = 100,
                  election_ms: int = 1000, name_prefix: str = "etcd",
                  tls: ClientTls | None = None, extra_args: Sequence[str] = (),
                  groups: Sequence[int | None] | None = None) -> EtcdCluster:
    """Start one member per address under `workdir` and wait until they elect a leader.

    The defaults elect within about a second after a member dies, so tests stay fast;
    `extra_args` go to every member's command line as they are.
    """
    ensure_installed()
    workdir.mkdir(parents=True, exist_ok=True)
    # Members run as other uids and must reach their data through `workdir`.
    workdir.chmod(0o755)
    names = [f"{name_prefix}{index}" for index in range(1, len(addresses) + 1)]
    initial = ",".join(f"{name}=http://{address}:{PEER_PORT}"
                       for name, address in zip(names, addresses, strict=True))
    members = [
        EtcdMember(name=name, address=address, datadir=workdir / name,
                   run_as=_member_user(address, groups[index] if groups else None),
                   initial_cluster=initial, cluster_token=f"{name_prefix}-{workdir.name}",
                   heartbeat_ms=heartbeat_ms, election_ms=election_ms, tls=tls,
                   extra_args=tuple(extra_args))
        for index, (name, address) in enumerate(zip(names, addresses, strict=True))
    ]
    cluster = EtcdCluster(members=members, workdir=workdir)
    try:
        for member in members:
            member.start()
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster
