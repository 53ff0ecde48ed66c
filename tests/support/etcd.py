"""Real three-member etcd clusters for the coordination tests, and controllers to drive them.

`etcd_cluster` is shared by a test module (tests keep apart by key prefix);
`fresh_etcd_cluster` is a test's own, for tests that kill, pause or partition
members. Import the fixtures into a test module with
`pytest_plugins = ["tests.support.etcd"]`.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import etcd3gw
import pytest

from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Decision, Plan, PromoteSubscriber
from failover.lab.etcd import ClientTls, EtcdCluster, ensure_installed, start_cluster
from failover.lab.pki import key_and_cert, write_pem
from failover.topology import EtcdSettings
from tests.support.loopback import allocate_block

# The production default: a leader checks its key through an etcd election
# (1 to 2 s with the kit's timeouts, more on a loaded machine) only while its
# lease surely lives, so a shorter lease deposes leaders for nothing.
LEASE_TTL = 5.0
REQUEST_TIMEOUT = 0.75
_prefixes = itertools.count()


@contextmanager
def running_cluster(*, tls: bool = False, extra_args: Sequence[str] = ()
                    ) -> Iterator[EtcdCluster]:
    """Three members on this session's own loopback block; with `tls`, the client port
    serves TLS and asks for a client certificate (files in `cluster.workdir / "pki"`)."""
    ensure_installed()
    block = allocate_block()
    workdir = Path(tempfile.mkdtemp(prefix="failover-etcd-"))
    addresses = [block.address(i) for i in (1, 2, 3)]
    client_tls = make_pki(workdir / "pki", addresses) if tls else None
    cluster = start_cluster(workdir, addresses, tls=client_tls, extra_args=extra_args)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def fresh_etcd_cluster() -> Iterator[EtcdCluster]:
    with running_cluster() as cluster:
        yield cluster


def new_prefix() -> str:
    """A key prefix no other test of the session uses."""
    return f"/failover-test/{next(_prefixes)}"


def settings(cluster: EtcdCluster, prefix: str, *, lease_ttl: float = LEASE_TTL) -> EtcdSettings:
    return EtcdSettings(endpoints=cluster.endpoints, prefix=prefix, lease_ttl=lease_ttl)


OBSERVERS = ("a", "b", "c")  # the simulated controllers of the coordination tests


def coordinator(cluster: EtcdCluster, me: str, prefix: str, *,
                lease_ttl: float = LEASE_TTL) -> EtcdCoordinator:
    return EtcdCoordinator(me, settings(cluster, prefix, lease_ttl=lease_ttl),
                           timeout=REQUEST_TIMEOUT, observers=OBSERVERS, quorum=2)


def admin_client(cluster: EtcdCluster) -> etcd3gw.Etcd3Client:
    """A plain client on a running member, to look at etcd from outside the coordinator."""
    member = next(m for m in cluster.members if m.running and not m.partitioned)
    return member.client(timeout=5.0)


def failover_decision(me: str, *, executes: bool = True, has_quorum: bool = True,
                      epoch: int = 2) -> Decision:
    """A decision to promote region `b`, as the engine of controller `me` would make it.

    Tests build it by hand to give several controllers the same belief that
    they execute: the worst case the etcd election must settle.
    """
    promote = PromoteSubscriber("app", epoch, "b", "a", "region a is DOWN")
    return Decision(now=0.0, me=me, quorum=2, heard=(me,), has_quorum=has_quorum,
                    isolated_for=0.0, executor=me if executes else "someone-else",
                    executor_reason="test", verdicts=(), plan=Plan(0.0, (promote,)), ignored=())


def make_pki(directory: Path, addresses: Sequence[str]) -> ClientTls:
    """A throwaway CA, a server certificate for the members and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = key_and_cert("failover test CA", issuer=None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    write_pem(directory / "ca", ca_key, ca_cert)
    write_pem(directory / "server", *key_and_cert("", issuer=issuer, addresses=addresses))
    # No common name: etcd refuses gateway requests from a client certificate
    # that has one (it could not use it as the user name).
    write_pem(directory / "client", *key_and_cert("", issuer=issuer))
    return ClientTls(ca_file=directory / "ca.crt", cert_file=directory / "server.crt",
                     key_file=directory / "server.key",
                     client_cert_file=directory / "client.crt",
                     client_key_file=directory / "client.key")


def enable_auth(cluster: EtcdCluster, root_password: str) -> None:
    """Create the root user and turn authentication on, with etcd's own etcdctl."""
    tls = cluster.members[0].tls
    flags = [f"--endpoints={','.join(cluster.endpoints)}"]
    if tls is not None:
        flags += [f"--cacert={tls.ca_file}", f"--cert={tls.client_cert_file}",
                  f"--key={tls.client_key_file}"]
    for command in (["user", "add", "root", f"--new-user-password={root_password}"],
                    ["user", "grant-role", "root", "root"], ["auth", "enable"]):
        subprocess.run(["etcdctl", *flags, *command], check=True, capture_output=True,
                       timeout=30)
