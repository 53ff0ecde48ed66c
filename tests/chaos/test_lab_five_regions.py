"""A five-region lab whose service is synchronous (ANY 2 of the writer's subscribers, strict).

First each nemesis fault kind, injected and healed, checked from outside. The lab only
injects and removes: these tests look at what a fault does to the machine (packets from
one region's group to another's ports, processes and their state), on regions that do
not hold the writer, and keep their faults short.

Then what synchronous durability promises, judged by the checker (clients pinned to every
region, then every database read): a subscriber restarted under writes costs no write and
no failover; with fewer than sync_count subscribers left, strict mode makes writes wait
(none acknowledged, none lost, no failover) until they are back; and a failover of the
crashed writer promotes a subscriber that holds every acknowledged write.
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
from failover.lab.checker import SafetyWatch
from failover.lab.drill import RoundResult, drill
from failover.lab.faults import fault, heal
from failover.lab.launch import in_region_group
from failover.lab.unprivileged import region_user
from failover.lab.writers import RATE, Write
from failover.topology import load_topology
from tests.chaos.safety import QUIET_SETTLE, SETTLE, assert_safe
from tests.chaos.test_lab_chaos import wait_for
from tests.support.lab import running_lab, say

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

SYNC_COUNT = 2

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
    with running_lab(Path("/tmp/failover-chaos-lab"), "peers", regions=5, durability="sync",
                     sync_count=SYNC_COUNT, sync_strict=True) as directory:
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
                         user=lab.SUPERUSER, connect_timeout=3, **state.pg_tls()) as conn:
        started = conn.execute("SELECT extract(epoch FROM pg_postmaster_start_time())").fetchone()
    assert started is not None and time.time() - float(started[0]) < 60
    assert "nothing to heal" in heal(lab_dir, region, "restart")


def test_pause_controller_stops_the_process_until_heal(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    region = state.region(bystanders(state)[0])
    assert region.controller_pid is not None
    controller = psutil.Process(region.controller_pid)
    ca = state.ca_file()
    verify: str | bool = str(ca) if ca is not None else True  # the lab's CA with --tls
    say(fault(lab_dir, region.name, "pause-controller"))
    try:
        assert controller.status() == psutil.STATUS_STOPPED
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(f"{region.controller_url}/healthz", timeout=1.5, verify=verify)
    finally:
        say(heal(lab_dir, region.name))
    assert controller.status() != psutil.STATUS_STOPPED
    assert requests.get(f"{region.controller_url}/healthz", timeout=5, verify=verify).ok


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


# ---------------------------------------------------------------- synchronous durability


def durability(lab_dir: Path) -> str:
    return str(service_view(lab.load(lab_dir))["durability"])


def acknowledged_between(writes: list[Write], start: float, end: float) -> list[Write]:
    return [w for w in writes if w.outcome == "acked" and start <= w.done_at <= end]


def test_a_subscriber_restarted_under_sync_writes_costs_no_write_and_no_failover(
        lab_dir: Path) -> None:
    """Three of four subscribers are still healthy, more than sync_count: writes go on."""
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    victim = bystanders(state)[0]
    wait_for(lambda: durability(lab_dir) == "sync", 30, "the service to be sync")
    with SafetyWatch(lab_dir) as watch:
        time.sleep(1)
        start = time.time()
        say(fault(lab_dir, victim, "restart"))
        time.sleep(5)
        end = time.time()
        watch.finish(QUIET_SETTLE)
    during = acknowledged_between(watch.stop(), start, end)
    assert len(during) >= 5 * RATE / 2, f"only {len(during)} writes acknowledged in 5 s"
    assert {w.server_region for w in during} == {writer}
    assert service_view(lab.load(lab_dir))["writer"] == writer
    assert_safe(watch.report())
    wait_for(lambda: durability(lab_dir) == "sync", 30, f"{victim} back among the standbys")


def test_too_few_subscribers_in_strict_mode_make_writes_wait_without_failover_or_loss(
        lab_dir: Path) -> None:
    """Three of four subscribers crash: one is left, fewer than sync_count. Writes wait
    (none acknowledged, none lost), the writer stays; once they are back, writes go on."""
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    victims = bystanders(state)[:3]
    wait_for(lambda: durability(lab_dir) == "sync", 30, "the service to be sync")
    with SafetyWatch(lab_dir) as watch:
        time.sleep(1)
        for victim in victims:
            say(fault(lab_dir, victim, "crash"))
        # A commit in flight when the last standby died may still be acknowledged.
        start = time.time() + 1
        wait_for(lambda: durability(lab_dir) == "waiting", 30, "the service to wait")
        time.sleep(3)
        end = time.time()
        assert service_view(lab.load(lab_dir))["writer"] == writer
        for victim in victims:
            say(heal(lab_dir, victim))
        wait_for(lambda: durability(lab_dir) == "sync", 60, "the service to be sync again")
        resumed = time.time()
        time.sleep(3)
        watch.finish(QUIET_SETTLE)
    writes = watch.stop()
    waited = acknowledged_between(writes, start, end)
    assert waited == [], f"{len(waited)} writes acknowledged with one standby, e.g. {waited[:3]}"
    assert acknowledged_between(writes, resumed, time.time()), "writes did not resume"
    assert service_view(lab.load(lab_dir))["writer"] == writer
    assert_safe(watch.report())


def test_a_crashed_sync_writer_fails_over_to_a_subscriber_with_every_acknowledged_write(
        lab_dir: Path) -> None:
    """Last in this module: it moves the writer."""
    report = drill(lab_dir, ["crash"], 1, say, settle=SETTLE)
    [result] = [RoundResult(**r) for r in report["rounds"]]
    assert result.failed_over and result.rto_s is not None, f"no failover: {result}"
    assert not result.false_failover and result.duplicate_keys == 0
    assert_safe(result.checker)
