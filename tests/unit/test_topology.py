"""The topology loader: the example validates, and every user mistake is named precisely."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from failover.errors import UserError
from failover.topology import PostgresCheck, load_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "regions" / "example"


@pytest.fixture
def topo_dir(tmp_path: Path) -> Path:
    target = tmp_path / "topology"
    shutil.copytree(EXAMPLE, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        load_topology(path)
    return info.value.problems


def test_example_validates() -> None:
    topo = load_topology(EXAMPLE)
    assert list(topo.regions) == ["eu-west-1", "us-east-1", "us-west-2"]
    assert topo.quorum == 2
    assert topo.services["app"].writer_record == "app.example.test."
    assert topo.services["app"].max_lag_seconds == 10.0
    assert topo.services["app"].cooldown == 300.0
    check = topo.regions["us-east-1"].checks[0]
    assert isinstance(check, PostgresCheck)
    assert (check.interval, check.timeout) == (1.0, 0.5)


def test_unknown_region_in_a_service(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", 'app_roles = ["app"]', 'app_roles = ["app"]\nregions = ["us-east-1", "mars-1"]')
    [problem] = problems_of(topo_dir)
    assert "fleet.toml: services[0].regions: unknown region 'mars-1'" in problem


def test_duplicate_region_names(topo_dir: Path) -> None:
    edit(topo_dir / "eu-west-1.toml", 'name = "eu-west-1"', 'name = "us-east-1"')
    problems = problems_of(topo_dir)
    assert any("us-east-1.toml: name: region 'us-east-1' is already defined in" in p
               and "eu-west-1.toml" in p for p in problems), problems


def test_quorum_larger_than_the_fleet(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", "# quorum = 2", "quorum = 4")
    [problem] = problems_of(topo_dir)
    assert "fleet.toml: quorum: 4 is larger than the fleet (3 regions)" in problem


def test_quorum_below_a_majority(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", "# quorum = 2", "quorum = 1")
    [problem] = problems_of(topo_dir)
    assert "not a strict majority" in problem


def test_threshold_of_zero(topo_dir: Path) -> None:
    edit(topo_dir / "us-west-2.toml", "unhealthy_threshold = 3", "unhealthy_threshold = 0")
    [problem] = problems_of(topo_dir)
    assert "us-west-2.toml: checks[0].unhealthy_threshold:" in problem
    assert "greater than or equal to 1" in problem


def test_timeout_not_shorter_than_interval(topo_dir: Path) -> None:
    edit(topo_dir / "us-east-1.toml", 'timeout = "500ms"', 'timeout = "1s"')
    [problem] = problems_of(topo_dir)
    assert "us-east-1.toml: checks[0]: timeout (1 s) must be shorter than interval (1 s)" in problem


def test_malformed_toml_names_the_line(topo_dir: Path) -> None:
    edit(topo_dir / "eu-west-1.toml", "priority = 10", "priority = = 10")
    [problem] = problems_of(topo_dir)
    assert "eu-west-1.toml: malformed TOML:" in problem
    assert "line 2" in problem


def test_every_problem_is_reported_at_once(topo_dir: Path) -> None:
    edit(topo_dir / "us-east-1.toml", 'timeout = "500ms"', 'timeout = "2s"')
    edit(topo_dir / "us-west-2.toml", "healthy_threshold = 2", "healthy_threshold = 0")
    edit(topo_dir / "fleet.toml", "# quorum = 2", "quorum = 9")
    assert len(problems_of(topo_dir)) == 3


def test_unknown_field_and_check_kind(topo_dir: Path) -> None:
    edit(topo_dir / "us-east-1.toml", 'kind = "postgres"', 'kind = "ping"')
    edit(topo_dir / "us-west-2.toml", "priority = 50", "priority = 50\npriorty = 1")
    problems = problems_of(topo_dir)
    assert any("us-east-1.toml: checks[0]: unknown check kind" in p for p in problems), problems
    assert any("us-west-2.toml: priorty: unknown field" in p for p in problems), problems


def test_record_outside_the_zone(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", 'writer_record = "app.example.test."', 'writer_record = "app.other.test."')
    [problem] = problems_of(topo_dir)
    assert "services[0].writer_record: app.other.test. is outside the zone example.test." in problem


def test_self_fence_must_beat_detection(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", 'self_fence_after = "2s"', 'self_fence_after = "3s"')
    [problem] = problems_of(topo_dir)
    assert "self_fence_after: 3 s must be shorter than the 3 s" in problem


def test_region_without_address(topo_dir: Path) -> None:
    edit(topo_dir / "eu-west-1.toml", 'address = "127.0.3.1"', 'address = "eu.example"')
    [problem] = problems_of(topo_dir)
    assert "eu-west-1.toml: address: expected the IPv4 or IPv6 address" in problem


def test_missing_password_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_PG_PASSWORD", raising=False)
    endpoint = load_topology(EXAMPLE).endpoint("us-east-1", "app")
    with pytest.raises(UserError) as info:
        endpoint.conninfo()
    assert "us-east-1.toml: postgres.app.password_env: the PostgreSQL password comes from the " \
           "environment variable FAILOVER_PG_PASSWORD, which is not set" in str(info.value)
    monkeypatch.setenv("FAILOVER_PG_PASSWORD", "s3cret")
    assert "password=s3cret" in endpoint.conninfo()
    assert "s3cret" not in repr(endpoint) and "s3cret" not in endpoint.describe()


def test_validate_cli_exit_codes(topo_dir: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "failover", "topology", "validate", str(topo_dir)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    edit(topo_dir / "fleet.toml", "# quorum = 2", "quorum = 4")
    bad = subprocess.run([sys.executable, "-m", "failover", "topology", "validate", str(topo_dir)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "quorum: 4 is larger than the fleet" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_relative_files_are_relative_to_the_topology_folder(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", 'key_env = "FAILOVER_FLEET_KEY"', 'key_file = "secrets/fleet.key"')
    topo = load_topology(topo_dir)
    assert topo.fleet.dns.rfc2136 is not None
    assert topo.fleet.dns.rfc2136.key_file == topo_dir / "tsig.key"
    assert topo.fleet.coordination.key_file == topo_dir / "secrets" / "fleet.key"


def test_durability_defaults_to_async_with_one_standby_and_degrading() -> None:
    service = load_topology(EXAMPLE).services["app"]
    assert (service.durability, service.sync_count, service.sync_strict) == ("async", 1, False)


def test_sync_count_is_at_most_the_other_regions(topo_dir: Path) -> None:
    edit(topo_dir / "fleet.toml", 'app_roles = ["app"]',
         'app_roles = ["app"]\ndurability = "sync"\nsync_count = 3')
    [problem] = problems_of(topo_dir)
    assert "fleet.toml: services[0].sync_count: 3 is more than the 2 other regions" in problem
    edit(topo_dir / "fleet.toml", "sync_count = 3", "sync_count = 2\nsync_strict = true")
    service = load_topology(topo_dir).services["app"]
    assert (service.durability, service.sync_count, service.sync_strict) == ("sync", 2, True)
    edit(topo_dir / "fleet.toml", "sync_count = 2", "sync_count = 0")
    [problem] = problems_of(topo_dir)
    assert "services[0].sync_count: Input should be greater than or equal to 1" in problem


def _second_service_on_the_same_servers(topo_dir: Path, first: str, second: str) -> None:
    """A service `billing` beside `app`, its database on the same server in every region."""
    edit(topo_dir / "fleet.toml", 'app_roles = ["app"]', f'app_roles = ["app"]\n{first}')
    with (topo_dir / "fleet.toml").open("a") as fleet:
        fleet.write('\n[[services]]\nname = "billing"\ndatabase = "billing"\n'
                    f'writer_record = "billing.example.test."\n{second}\n')
    for region, host in (("us-east-1", "127.0.1.1"), ("us-west-2", "127.0.2.1"),
                         ("eu-west-1", "127.0.3.1")):
        edit(topo_dir / f"{region}.toml", "[postgres.app]",
             f'[postgres.billing]\nhost = "{host}"\nport = 5432\ndbname = "billing"\n'
             'user = "failover"\n\n[postgres.app]')


def test_a_sync_service_refuses_an_async_neighbour_on_its_server(topo_dir: Path) -> None:
    _second_service_on_the_same_servers(topo_dir, 'durability = "sync"', "")
    [problem] = problems_of(topo_dir)  # once, though they share a server in every region
    assert "fleet.toml: services[1].durability: service 'billing' asks durability = \"async\" " \
           "and service 'app' durability = \"sync\", and they share the PostgreSQL server " \
           "127.0.3.1:5432 (region eu-west-1)" in problem
    assert "synchronous_standby_names is server-wide" in problem


def test_two_sync_services_cannot_share_a_server_even_alike(topo_dir: Path) -> None:
    _second_service_on_the_same_servers(topo_dir, 'durability = "sync"', 'durability = "sync"')
    [problem] = problems_of(topo_dir)
    assert "services[1].durability: services 'app' and 'billing' both ask durability = " \
           "\"sync\" and share the PostgreSQL server 127.0.3.1:5432" in problem


def test_async_services_may_share_a_server_whatever_their_sync_fields(topo_dir: Path) -> None:
    _second_service_on_the_same_servers(topo_dir, "sync_count = 2", "sync_strict = true")
    assert sorted(load_topology(topo_dir).services) == ["app", "billing"]


def test_validate_says_what_a_cut_off_writer_may_cost(topo_dir: Path) -> None:
    """The lease (self_fence_after + self_fence_duration) bounds what an isolated async writer
    acknowledges that no subscriber receives; a sync service loses none while it is sync."""
    edit(topo_dir / "fleet.toml", "self_fence_after = ", "self_fence_duration = \"1500ms\"\n"
                                                         "self_fence_after = ")
    done = subprocess.run([sys.executable, "-m", "failover", "topology", "validate",
                           str(topo_dir), "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    isolation = json.loads(done.stdout)["isolation"]
    topo = load_topology(topo_dir)
    lease = topo.fleet.self_fence_after + 1.5
    assert isolation["lease_s"] == lease
    assert isolation["loss_bound_s"] == {"app": lease}
    assert isolation["detection_s"] == min(c.detection_time for r in topo.regions.values()
                                           for c in r.liveness_checks)
    edit(topo_dir / "fleet.toml", 'app_roles = ["app"]', 'app_roles = ["app"]\ndurability = "sync"')
    text = subprocess.run([sys.executable, "-m", "failover", "topology", "validate",
                           str(topo_dir)], capture_output=True, text=True, check=False)
    assert text.returncode == 0, text.stderr
    assert "app: loses no acknowledged write on isolation" in text.stdout
    assert f"stops taking writes {lease:g} s after" in text.stdout


def test_the_fingerprint_changes_with_any_file_and_only_then(topo_dir: Path) -> None:
    first = load_topology(topo_dir).fingerprint
    assert len(first) == 16
    assert load_topology(topo_dir).fingerprint == first
    elsewhere = topo_dir.parent / "elsewhere"
    shutil.copytree(topo_dir, elsewhere)
    assert load_topology(elsewhere).fingerprint == first  # the same files on another host
    edit(topo_dir / "us-west-2.toml", "interval = ", "# slower here\ninterval = ")
    assert load_topology(topo_dir).fingerprint != first
