"""Real three-member etcd clusters for the coordination tests, and controllers to drive them.

`etcd_cluster` is shared by a test module (tests keep apart by key prefix);
`fresh_etcd_cluster` is a test's own, for tests that kill, pause or partition
members. Import the fixtures into a test module with
`pytest_plugins = ["tests.support.etcd"]`.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import etcd3gw
import pytest

from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Decision, Plan, PromoteSubscriber
from failover.lab.etcd import EtcdCluster, ensure_installed, start_cluster
from failover.topology import EtcdSettings
from tests.support.loopback import allocate_block

# Long enough to ride out an etcd election on a loaded two-core machine.
LEASE_TTL = 3.0
REQUEST_TIMEOUT = 0.75
_prefixes = itertools.count()


@contextmanager
def running_cluster() -> Iterator[EtcdCluster]:
    ensure_installed()
    block = allocate_block()
    workdir = Path(tempfile.mkdtemp(prefix="failover-etcd-"))
    cluster = start_cluster(workdir, [block.address(i) for i in (1, 2, 3)])
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


def coordinator(cluster: EtcdCluster, me: str, prefix: str, *,
                lease_ttl: float = LEASE_TTL) -> EtcdCoordinator:
    return EtcdCoordinator(me, settings(cluster, prefix, lease_ttl=lease_ttl),
                           timeout=REQUEST_TIMEOUT)


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
