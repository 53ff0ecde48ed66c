"""The controllers' API over HTTPS: two real controllers (`failover controller run`) serve TLS
with certificates from a private CA, hear each other through verified exchanges, and answer
the CLI that verifies them with `fleet.toml`'s `api.ca_file`; a client that does not trust
that CA is refused, and says it was the certificate."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.controller.client import ControllerUnreachable, call, fleet_statuses
from failover.coordination.peers import PeerCoordinator
from failover.lab.pki import Authority
from failover.tls import client_context
from failover.topology import Topology, load_topology
from tests.support.loopback import allocate_block

pytestmark = pytest.mark.integration

REGIONS = ("alpha", "bravo")
KEY = "tls-test-fleet-key"
ENV = {**os.environ, "FAILOVER_FLEET_KEY": KEY}


@dataclass(frozen=True)
class Fleet:
    topology: Path
    topo: Topology
    stranger: Authority  # a CA that signed none of the controllers' certificates


def write_topology(folder: Path, hosts: dict[str, str], authority: Authority) -> None:
    folder.mkdir()
    shutil.copy(authority.cert_file, folder / "api-ca.crt")
    (folder / "fleet.toml").write_text("""
name = "tls"
observation_max_age = "3s"
self_fence_after = "2s"
[coordination]
exchange_interval = "500ms"
[api]
ca_file = "api-ca.crt"
""")
    for name, host in hosts.items():
        authority.issue(name, addresses=[host], folder=folder)
        (folder / f"{name}.toml").write_text(f"""
name = "{name}"
controller_url = "https://{host}:8700"
address = "{host}"
[api]
cert_file = "{name}.crt"
key_file = "{name}.key"
[[checks]]
name = "controller"
kind = "tcp"
host = "{host}"
port = 8700
interval = "1s"
timeout = "500ms"
""")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "failover", *args], env=ENV, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("controller-tls")
    block = allocate_block()
    hosts = {name: block.address(index) for index, name in enumerate(REGIONS, start=1)}
    topology = root / "topology"
    write_topology(topology, hosts, Authority(root / "pki"))
    topo = load_topology(topology)
    controllers = []
    try:
        for name in REGIONS:
            with (root / f"{name}.log").open("w") as log:
                controllers.append(subprocess.Popen(
                    [sys.executable, "-m", "failover", "controller", "run", "-t", str(topology),
                     "--region", name, "--state-dir", str(root / f"state-{name}")],
                    env=ENV, cwd=root, stdout=log, stderr=subprocess.STDOUT))
        urls = {name: region.controller_url for name, region in topo.regions.items()}
        deadline = time.monotonic() + 60
        while True:
            statuses = fleet_statuses(urls, timeout=1.0, tls=topo.api_client_tls())
            if all(isinstance(s, dict) and s.get("has_quorum") for s in statuses.values()):
                break
            for process in controllers:
                assert process.poll() is None, (root / f"{REGIONS[controllers.index(process)]}"
                                                ".log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"the controllers never heard each other: {statuses}"
            time.sleep(0.2)
        yield Fleet(topology, topo, Authority(root / "stranger", "stranger"))
    finally:
        for process in controllers:
            process.terminate()
        for process in controllers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_peers_hear_each_other_over_verified_https(fleet: Fleet) -> None:
    """Quorum is both of two: each controller hears the other only through exchanges, which
    each makes over HTTPS, verifying the other's certificate with api.ca_file."""
    urls = {name: region.controller_url for name, region in fleet.topo.regions.items()}
    statuses = fleet_statuses(urls, tls=fleet.topo.api_client_tls())
    for region, status in statuses.items():
        assert isinstance(status, dict), status
        assert status["region"] == region and status["has_quorum"]


def test_the_cli_verifies_the_controllers_with_the_fleet_ca(fleet: Fleet) -> None:
    status = cli("status", "--json", "-t", str(fleet.topology))
    assert status.returncode == 0, status.stderr
    answered = json.loads(status.stdout)["controllers"]
    assert {name: c["answered"] for name, c in answered.items()} == {"alpha": True, "bravo": True}
    history = cli("history", "--json", "-t", str(fleet.topology))  # signed requests
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)["unreachable"] == {}


def test_a_client_that_does_not_trust_the_ca_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    other = tmp_path / "topology"
    shutil.copytree(fleet.topology, other)
    shutil.copy(fleet.stranger.cert_file, other / "api-ca.crt")
    status = cli("status", "-t", str(other))
    assert status.returncode == 1
    assert "no controller answered" in status.stderr
    assert status.stderr.count("certificate verify failed") == 2, status.stderr
    url = fleet.topo.regions["alpha"].controller_url
    with pytest.raises(ControllerUnreachable, match="certificate verify failed"):
        call(url, "GET", "/v1/status", key=None)  # the system's store: no private CA in it


def test_a_peer_that_does_not_trust_the_ca_cannot_exchange(fleet: Fleet, tmp_path: Path) -> None:
    url = fleet.topo.regions["alpha"].controller_url
    errors: dict[str, list[str]] = {"trusted": [], "stranger": []}

    async def exchange(ca: Path, seen: list[str]) -> None:
        peer = PeerCoordinator("bravo", {"alpha": url}, KEY.encode(), tmp_path / ca.stem,
                               quorum=2, observation_max_age=3, timeout=5,
                               on_exchange_error=lambda _, error: seen.append(error),
                               tls=client_context(ca, where="test"))
        await peer.start()
        try:
            await peer.exchange([])
        finally:
            await peer.close()

    asyncio.run(exchange(fleet.topology / "api-ca.crt", errors["trusted"]))
    asyncio.run(exchange(fleet.stranger.cert_file, errors["stranger"]))
    assert errors["trusted"] == []
    [refused] = errors["stranger"]
    assert "certificate verify failed" in refused


def test_a_controller_whose_certificate_cannot_be_read_stops_with_exit_2(
        fleet: Fleet, tmp_path: Path) -> None:
    broken = tmp_path / "topology"
    shutil.copytree(fleet.topology, broken)
    (broken / "alpha.key").unlink()
    run = cli("controller", "run", "-t", str(broken), "--region", "alpha",
              "--state-dir", str(tmp_path / "state"))
    assert run.returncode == 2
    assert "alpha.toml: api.key_file: cannot read" in run.stderr, run.stderr
