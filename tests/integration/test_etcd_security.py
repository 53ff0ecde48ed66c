"""The etcd coordinator against a cluster that requires TLS client certificates and a password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Health, Observation
from failover.lab.etcd import EtcdCluster
from failover.topology import EtcdSettings
from tests.support.etcd import (
    OBSERVERS,
    REQUEST_TIMEOUT,
    enable_auth,
    failover_decision,
    new_prefix,
    running_cluster,
)

pytestmark = pytest.mark.integration

PASSWORD_ENV = "FAILOVER_TEST_ETCD_PASSWORD"
PASSWORD = "correct horse battery staple"
TOKEN_TTL = 2  # seconds an idle auth token lives, so a test can outlive one


@pytest.fixture(scope="module")
def secure_cluster() -> Iterator[EtcdCluster]:
    with running_cluster(tls=True, extra_args=["--auth-token-ttl", str(TOKEN_TTL)]) as cluster:
        enable_auth(cluster, PASSWORD)
        yield cluster


def secure_settings(cluster: EtcdCluster, prefix: str, *, client_cert: bool = True,
                    user: str = "root") -> EtcdSettings:
    tls = cluster.members[0].tls
    assert tls is not None
    return EtcdSettings(
        endpoints=cluster.endpoints, prefix=prefix, lease_ttl=3, ca_file=tls.ca_file,
        cert_file=tls.client_cert_file if client_cert else None,
        key_file=tls.client_key_file if client_cert else None,
        user=user, password_env=PASSWORD_ENV)


def exchange_once(settings: EtcdSettings, me: str = "a") -> tuple[str | None, list[Observation]]:
    async def scenario() -> tuple[str | None, list[Observation]]:
        c = EtcdCoordinator(me, settings, timeout=REQUEST_TIMEOUT, observers=OBSERVERS, quorum=2)
        await c.start()
        try:
            await c.exchange([Observation(me, "b", Health.HEALTHY, 2, time.time())])
            return c.problem(), c.observations()
        finally:
            await c.close()

    return asyncio.run(scenario())


def test_tls_with_a_client_certificate_and_a_password_works(
        secure_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    prefix = new_prefix()

    async def scenario() -> None:
        a = EtcdCoordinator("a", secure_settings(secure_cluster, prefix), timeout=REQUEST_TIMEOUT,
                            observers=OBSERVERS, quorum=2)
        b = EtcdCoordinator("b", secure_settings(secure_cluster, prefix), timeout=REQUEST_TIMEOUT,
                            observers=OBSERVERS, quorum=2)
        await a.start()
        await b.start()
        try:
            await a.exchange([Observation("a", "c", Health.HEALTHY, 2, time.time())])
            await b.exchange([])
            assert b.problem() is None
            assert [o.observer for o in b.observations()] == ["a"]
            assert await b.lead(failover_decision("b")) is not None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_an_expired_auth_token_is_renewed(secure_cluster: EtcdCluster,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)

    async def scenario() -> list[str | None]:
        # No start(): without the lease keepalive nothing uses the token meanwhile.
        a = EtcdCoordinator("a", secure_settings(secure_cluster, new_prefix()),
                            timeout=REQUEST_TIMEOUT, observers=OBSERVERS, quorum=2)
        try:
            await a.exchange([])
            first = a.problem()
            await asyncio.sleep(TOKEN_TTL + 1.5)
            await a.exchange([])
            return [first, a.problem()]
        finally:
            await a.close()

    assert asyncio.run(scenario()) == [None, None]


def test_without_a_client_certificate_no_automatic_action(
        secure_cluster: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    problem, observations = exchange_once(
        secure_settings(secure_cluster, new_prefix(), client_cert=False))
    assert problem is not None and "no etcd endpoint answered" in problem, problem
    assert [o.observer for o in observations] == ["a"]  # its own, never lost


def test_a_wrong_password_says_so(secure_cluster: EtcdCluster,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    problem, _ = exchange_once(secure_settings(secure_cluster, new_prefix()))
    assert problem is not None and "authentication failed" in problem
