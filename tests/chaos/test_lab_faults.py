"""Each nemesis fault kind, injected and healed on a five-region lab, checked from outside.

The lab only injects and removes: whatever the controllers do about a fault is
the other chaos modules' business. So these tests look at what a fault does to
the machine (packets from one region's group to another's ports, processes and
their state), on regions that do not hold the writer, and keep their faults short.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import requests

from failover.lab import processes
from failover.lab import state as lab
from failover.lab.build import service_view
from failover.lab.faults import fault, heal
from failover.lab.launch import in_region_group
from failover.lab.unprivileged import region_user
from failover.topology import load_topology
from tests.support.lab import running_lab, say

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

# A TCP connect as a region's process makes it: in the region's group.
_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(f"failed: {exc}")
"""


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    with running_lab(Path("/tmp/failover-chaos-lab"), "peers", regions=5) as directory:
        yield directory


def connect(state: lab.LabState, sender: str, receiver: str, port: int) -> str:
    """`connected`, `timeout` (packets dropped) or `failed: ...`, for a connection that
    `sender`'s processes open to `receiver`'s address."""
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, state.region(receiver).address, str(port), "1.5"],
        preexec_fn=in_region_group(region_user(sender)), capture_output=True, text=True,
        timeout=30, check=True)
    return probe.stdout.strip()


def lab_rules() -> list[str]:
    listed = subprocess.run(["iptables", "-w", "5", "-S", "FAILOVER-LAB"], capture_output=True,
                            text=True, check=False, timeout=30)
    return [line for line in listed.stdout.splitlines() if line.startswith("-A")]


def bystanders(state: lab.LabState) -> list[str]:
    """The regions without the writer, lowest priority first."""
    writer = service_view(state)["writer"]
    return sorted((r.name for r in state.regions if r.name != writer),
                  key=lambda name: lab.PRIORITIES[name])


def test_five_regions_on_their_addresses_with_a_majority_quorum(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    assert {r.name: r.address for r in state.regions} == lab.FIVE_REGIONS
    assert load_topology(Path(state.topology)).quorum == 3
    assert service_view(state)["writer"] == lab.FIRST_WRITER


def test_db_partition_cuts_only_the_database_port(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    region, other = bystanders(state)[0], lab.FIRST_WRITER
    before = lab_rules()
    assert connect(state, other, region, lab.PG_PORT) == "connected"
    say(fault(lab_dir, region, "db-partition"))
    try:
        assert lab.load(lab_dir).faults[region] == ["db-partition"]
        assert connect(state, other, region, lab.PG_PORT) == "timeout"
        assert connect(state, other, region, lab.CONTROLLER_PORT) == "connected"
        assert connect(state, region, region, lab.PG_PORT) == "connected"  # its own controller
        assert connect(state, region, other, lab.PG_PORT) == "connected"  # its subscription
    finally:
        say(heal(lab_dir, region, "db-partition"))
    assert connect(state, other, region, lab.PG_PORT) == "connected"
    assert lab_rules() == before
    assert region not in lab.load(lab_dir).faults


def test_restart_kills_postgres_and_starts_it_again_outside_the_controller(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    region = bystanders(state)[0]
    old = state.region(region).postmaster_pid
    assert old is not None
    say(fault(lab_dir, region, "restart"))
    after = lab.load(lab_dir)
    new = after.region(region).postmaster_pid
    assert new is not None and new != old
    assert not processes.alive(old)
    postmaster = psutil.Process(new)
    assert postmaster.ppid() != psutil.Process().pid  # started by pg_ctl, not by us
    assert postmaster.username() == state.region(region).user
    assert region not in after.faults  # over as soon as it is done
    with psycopg.connect(host=state.region(region).address, port=lab.PG_PORT, dbname="postgres",
                         user=lab.SUPERUSER, connect_timeout=3) as conn:
        started = conn.execute("SELECT extract(epoch FROM pg_postmaster_start_time())").fetchone()
    assert started is not None and time.time() - float(started[0]) < 60
    assert "nothing to heal" in heal(lab_dir, region, "restart")


def test_pause_controller_stops_the_process_until_heal(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    region = state.region(bystanders(state)[0])
    assert region.controller_pid is not None
    controller = psutil.Process(region.controller_pid)
    say(fault(lab_dir, region.name, "pause-controller"))
    try:
        assert controller.status() == psutil.STATUS_STOPPED
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(f"{region.controller_url}/healthz", timeout=1.5)
    finally:
        say(heal(lab_dir, region.name))
    assert controller.status() != psutil.STATUS_STOPPED
    assert requests.get(f"{region.controller_url}/healthz", timeout=5).ok


def test_partition_cuts_both_ways_on_every_port_and_no_one_else(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    a, b = bystanders(state)[:2]
    before = lab_rules()
    say(fault(lab_dir, a, "partition", peer=b))
    try:
        for sender, receiver in ((a, b), (b, a)):
            for port in (lab.PG_PORT, lab.CONTROLLER_PORT):
                assert connect(state, sender, receiver, port) == "timeout", (sender, receiver, port)
        for region in (a, b):
            assert connect(state, lab.FIRST_WRITER, region, lab.PG_PORT) == "connected"
    finally:
        say(heal(lab_dir, a, "partition", peer=b))
    assert connect(state, a, b, lab.PG_PORT) == connect(state, b, a, lab.PG_PORT) == "connected"
    assert lab_rules() == before


def test_one_way_partition_from_the_command_line(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    a, b = bystanders(state)[:2]
    before = lab_rules()

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "failover", "lab", *args, "--dir", str(lab_dir)],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "COLUMNS": "200"})  # a table row on one line
        assert done.returncode == 0, done.stderr
        say(done.stdout.strip())
        return done.stdout

    cli("fault", a, "--kind", "partition", "--peer", b, "--one-way")
    try:
        assert connect(state, a, b, lab.CONTROLLER_PORT) == "timeout"
        assert connect(state, b, a, lab.CONTROLLER_PORT) == "connected"
        assert lab.load(lab_dir).faults[a] == [f"partition:{b}:one-way"]
        assert f"partition -> {b}" in cli("status")
    finally:
        cli("heal", a, "--kind", "partition", "--peer", b)
    assert connect(state, a, b, lab.CONTROLLER_PORT) == "connected"
    assert lab_rules() == before
