"""The lab's faults without a lab: what lab.json records, which packets each kind drops,
and the five-region lab's topology (tests/chaos/test_lab_faults.py runs them for real)."""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import Any

import pytest

from failover.errors import UserError
from failover.lab import faults
from failover.lab import state as lab
from failover.lab.build import _write_topology, up
from failover.topology import Topology, load_topology

# Every region's user must exist for the owner matches: root stands in for them all,
# so regions are told apart by the addresses in the rules.
ROOT_GID = str(pwd.getpwnam("root").pw_gid)


def _state(regions: dict[str, str], *, etcd: bool = False) -> lab.LabState:
    return lab.LabState(
        dir="/nonexistent", topology="/nonexistent", coordination="etcd" if etcd else "peers",
        pg_version=18,
        regions=[lab.RegionState(name=name, address=address, pg_port=lab.PG_PORT,
                                 data_dir="/nonexistent", postmaster_pid=None,
                                 controller_url=f"http://{address}:{lab.CONTROLLER_PORT}",
                                 controller_pid=None, user="root")
                 for name, address in regions.items()],
        dns=lab.DnsState(address=lab.DNS_ADDRESS, port=lab.DNS_PORT, zone=lab.ZONE,
                         key_file="/nonexistent", pid=None),
        service=lab.ServiceState(name=lab.SERVICE, database=lab.SERVICE,
                                 writer_record=lab.WRITER_RECORD, reader_record=lab.READER_RECORD,
                                 ttl=lab.TTL, app_role=lab.APP_ROLE),
        etcd=[lab.EtcdMember(name=f"etcd{i}", region=name, address=lab.ETCD_ADDRESSES[name],
                             client_url="", pid=None)
              for i, name in enumerate(regions, start=1)] if etcd else [])


def _destinations(rules: list[list[str]]) -> list[str]:
    return [rule[rule.index("-d") + 1] for rule in rules]


@pytest.mark.parametrize("fault", [
    faults.Fault("crash"), faults.Fault("partition", "us-west-2"),
    faults.Fault("partition", "sa-east-1", one_way=True)])
def test_a_fault_survives_lab_json(fault: faults.Fault) -> None:
    assert faults.Fault.parse(fault.label) == fault


def test_old_kinds_are_recorded_as_before_and_partitions_read_well() -> None:
    assert faults.Fault("isolate").label == "isolate"
    assert faults.describe("partition:us-west-2") == "partition <-> us-west-2"
    assert faults.describe("partition:us-west-2:one-way") == "partition -> us-west-2"


def test_db_partition_drops_only_what_other_regions_send_to_the_database_port() -> None:
    state = _state(lab.REGIONS)
    rules = faults._rules(state, "us-west-2", faults.Fault("db-partition"))
    assert len(rules) == 2  # one per other region's group
    for rule in rules:
        assert rule[:6] == ["-d", "127.0.2.1", "-p", "tcp", "--dport", "5432"]
        assert rule[-2:] == ["--gid-owner", ROOT_GID]


def test_a_partition_cuts_every_address_of_both_sides_or_one() -> None:
    state = _state(lab.FIVE_REGIONS, etcd=True)
    both = faults._rules(state, "ap-south-1", faults.Fault("partition", "sa-east-1"))
    assert _destinations(both) == ["127.0.5.1", "127.0.5.2", "127.0.4.1", "127.0.4.2"]
    assert not any("--dport" in rule for rule in both)  # all ports
    one_way = faults._rules(state, "ap-south-1", faults.Fault("partition", "sa-east-1", one_way=True))
    assert _destinations(one_way) == ["127.0.5.1", "127.0.5.2"]


def test_isolation_is_a_partition_from_every_other_region() -> None:
    state = _state(lab.REGIONS)
    isolated = faults._rules(state, "us-east-1", faults.Fault("isolate"))
    partitions = [rule for other in ("us-west-2", "eu-west-1")
                  for rule in faults._rules(state, "us-east-1", faults.Fault("partition", other))]
    assert isolated == partitions


def test_bad_fault_arguments_are_refused_before_the_lab_is_read(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--peer"):
        faults.fault(tmp_path, "us-east-1", "partition")
    with pytest.raises(UserError, match="--peer and --one-way"):
        faults.fault(tmp_path, "us-east-1", "crash", one_way=True)
    with pytest.raises(UserError, match="--kind"):
        faults.heal(tmp_path, "us-east-1", "reboot")


def _lab_topology(folder: Path, **service: Any) -> Topology:
    """The topology `lab up --regions 5` writes, with the service settings given."""
    key = folder / "fleet.key"
    key.write_text("00" * 32 + "\n")
    tsig = folder / "tsig.key"
    tsig.write_text('key "lab-key" { algorithm hmac-sha256; secret "AAAA"; };\n')
    return load_topology(_write_topology(folder, lab.lab_regions(5), key_file=key, tsig_file=tsig,
                                         tsig_name="lab-key", coordination={"backend": "peers"},
                                         **service))


def test_the_five_region_lab_needs_three_regions_for_a_quorum(tmp_path: Path) -> None:
    topo = _lab_topology(tmp_path, rejoin="auto", durability="async", sync_count=1,
                         sync_strict=False)
    assert sorted(topo.regions) == sorted(lab.FIVE_REGIONS)
    assert topo.services["app"].rejoin == "auto"
    assert topo.services["app"].durability == "async"
    assert topo.quorum == 3
    assert [r for r in lab.FIVE_REGIONS if r in lab.REGIONS] == list(lab.REGIONS)  # 3 stays as it was
    with pytest.raises(UserError, match="--regions"):
        lab.lab_regions(4)


def test_the_lab_topology_and_lab_json_take_the_durability(tmp_path: Path) -> None:
    topo = _lab_topology(tmp_path, rejoin="auto", durability="sync", sync_count=2,
                         sync_strict=True)
    service = topo.services["app"]
    assert (service.durability, service.sync_count, service.sync_strict) == ("sync", 2, True)
    recorded = lab.ServiceState(name="app", database="app", writer_record="app.lab.test.",
                                reader_record="app-ro.lab.test.", ttl=1, app_role="app",
                                durability="sync", sync_count=2, sync_strict=True)
    assert lab.ServiceState.model_validate_json(recorded.model_dump_json()) == recorded
    older = lab.ServiceState.model_validate({k: v for k, v in recorded.model_dump().items()
                                             if k not in ("durability", "sync_count",
                                                          "sync_strict")})
    assert (older.durability, older.sync_count, older.sync_strict) == ("async", 1, False)  # older


@pytest.mark.parametrize(("durability", "sync_count", "flag"), [
    ("semi", 1, "--durability"), ("sync", 0, "--sync-count"), ("sync", 3, "--sync-count")])
def test_lab_up_refuses_a_durability_it_cannot_build_before_starting_anything(
        tmp_path: Path, durability: str, sync_count: int, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        up(tmp_path / "lab", durability=durability, sync_count=sync_count,
           progress=lambda message: None)
    assert not (tmp_path / "lab").exists()


def test_the_fast_lab_rides_out_its_min_outage_and_keeps_its_lease_above_a_probe_and_two_exchanges(
        tmp_path: Path) -> None:
    fast = _lab_topology(tmp_path, rejoin="auto", durability="async", sync_count=1,
                         sync_strict=False, timings=lab.TIMINGS["fast"])
    (tmp_path / "default").mkdir()
    default = _lab_topology(tmp_path / "default", rejoin="auto", durability="async",
                            sync_count=1, sync_strict=False)
    [check] = [c for c in fast.regions["us-east-1"].liveness_checks]
    assert check.fast_interval is not None
    assert (check.unhealthy_threshold - 1) * check.fast_interval >= check.min_outage
    # A blip that only times probes out (a dropped packet) fails one probe per timeout: one
    # of 800 ms fails at most four, one short of unhealthy.
    assert (check.unhealthy_threshold - 1) * check.timeout > 0.8
    [slow] = default.regions["us-east-1"].liveness_checks
    assert check.detection_time < slow.detection_time / 2
    lease = fast.fleet.self_fence_after + fast.fleet.self_fence_duration
    assert lease >= check.interval + 2 * fast.fleet.coordination.exchange_interval
    with pytest.raises(UserError, match="--timings"):
        up(tmp_path / "lab", timings="fastest", progress=lambda message: None)
    assert not (tmp_path / "lab").exists()
