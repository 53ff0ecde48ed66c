"""`failover topology from-terraform --outputs-file`: the topology it writes, and
what it refuses. Runs without terraform: the input is the JSON `terraform
output -json` printed for terraform/test-regions (the apply itself is tested
in test_terraform_moto.py)."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from failover.cli import main
from failover.topology import HttpCheck, PostgresCheck, load_topology

pytestmark = pytest.mark.integration

ADDRESSES = {"us-east-1": "10.10.0.10", "us-west-2": "10.20.0.10", "eu-west-1": "10.30.0.10"}


def terraform_outputs() -> dict[str, Any]:
    """What `terraform output -json` prints for test-regions with two services."""
    def output(value: Any) -> dict[str, Any]:
        return {"sensitive": False, "type": "(elided)", "value": value}

    return {
        "controller_policy_arn": output("arn:aws:iam::123456789012:policy/x"),
        "failover_fleet": output({"name": "failover-test", "dns": {
            "zone": "db.failover.internal.", "hosted_zone_id": "Z0ABCDEF123",
            "endpoint_url": None, "region_name": "us-east-1"}}),
        "failover_regions": output({
            name: {"aws_region": name, "priority": priority, "address": address,
                   "controller_url": f"http://{address}:8700",
                   "postgres": {"host": address, "port": 5432, "user": "failover"}}
            for (name, address), priority in zip(ADDRESSES.items(), (100, 50, 10), strict=True)
        }),
        "failover_services": output({
            "orders": {"database": "orders", "ttl": 30,
                       "writer_record": "orders.db.failover.internal.",
                       "reader_record": "orders-ro.db.failover.internal."},
            "billing": {"database": "billing", "ttl": 15,
                        "writer_record": "billing.db.failover.internal.",
                        "reader_record": "billing-ro.db.failover.internal."},
        }),
    }


@dataclass
class Outcome:
    code: int
    out: str
    err: str  # rich's line wrapping undone


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def invoke(*args: str) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["failover", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return Outcome(int(exited.value.code or 0), captured.out, " ".join(captured.err.split()))
    return invoke


@pytest.fixture
def outputs_file(tmp_path: Path) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(terraform_outputs()))
    return path


def test_writes_a_topology_that_validates(run: Any, outputs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology"
    made = run("topology", "from-terraform", "--outputs-file", str(outputs_file), "--out", str(out))
    assert made.code == 0, made.err
    assert sorted(p.name for p in out.iterdir()) == [
        "eu-west-1.toml", "fleet.toml", "us-east-1.toml", "us-west-2.toml"]
    assert run("topology", "validate", str(out)).code == 0

    topo = load_topology(out)
    assert topo.fleet.name == "failover-test"
    assert topo.fleet.dns.provider == "route53"
    assert topo.fleet.dns.zone == "db.failover.internal."
    assert topo.fleet.dns.route53 is not None
    assert topo.fleet.dns.route53.hosted_zone_id == "Z0ABCDEF123"
    assert topo.fleet.dns.route53.endpoint_url is None  # real AWS: no emulator
    assert {name: (s.writer_record, s.reader_record, s.ttl, s.database)
            for name, s in topo.services.items()} == {
        "orders": ("orders.db.failover.internal.", "orders-ro.db.failover.internal.", 30,
                   "orders"),
        "billing": ("billing.db.failover.internal.", "billing-ro.db.failover.internal.", 15,
                    "billing")}
    assert {name: (r.address, r.priority) for name, r in topo.regions.items()} == {
        "us-east-1": ("10.10.0.10", 100), "us-west-2": ("10.20.0.10", 50),
        "eu-west-1": ("10.30.0.10", 10)}
    east = topo.regions["us-east-1"]
    assert east.controller_url == "http://10.10.0.10:8700"
    endpoint = east.postgres["billing"]
    assert (endpoint.host, endpoint.port, endpoint.dbname, endpoint.user) == (
        "10.10.0.10", 5432, "billing", "failover")
    assert (endpoint.password_env, endpoint.password_file) == ("FAILOVER_PG_PASSWORD", None)
    # The region module's servers take TCP logins over TLS only: never libpq's `prefer`.
    assert (endpoint.sslmode, endpoint.sslrootcert) == ("require", None)
    # Each service's database is a liveness check; the controller is shown only.
    assert sorted((c.service, c.purpose) for c in east.checks if isinstance(c, PostgresCheck)) == [
        ("billing", "liveness"), ("orders", "liveness")]
    [controller] = [c for c in east.checks if isinstance(c, HttpCheck)]
    assert (controller.url, controller.purpose) == ("http://10.10.0.10:8700/healthz", "info")


def test_verified_tls_names_the_ca_on_both_sides(run: Any, outputs_file: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "topology"
    made = run("topology", "from-terraform", "--outputs-file", str(outputs_file), "--out",
               str(out), "--sslmode", "verify-full", "--sslrootcert", "ca.crt",
               "--subscription-sslrootcert", "/var/lib/pgsql/tls/ca.crt")
    assert made.code == 0, made.err
    for region in load_topology(out).regions.values():
        for endpoint in region.postgres.values():
            assert endpoint.sslmode == "verify-full"
            assert endpoint.sslrootcert == out / "ca.crt"
            assert str(endpoint.subscription_sslrootcert) == "/var/lib/pgsql/tls/ca.crt"


def test_emulator_endpoint_is_kept(run: Any, tmp_path: Path) -> None:
    outputs = terraform_outputs()
    outputs["failover_fleet"]["value"]["dns"]["endpoint_url"] = "http://127.0.0.1:5000"
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    assert run("topology", "from-terraform", "--outputs-file", str(path),
               "--out", str(tmp_path / "t")).code == 0
    route53 = load_topology(tmp_path / "t").fleet.dns.route53
    assert route53 is not None and route53.endpoint_url == "http://127.0.0.1:5000"


def test_password_file_instead_of_env(run: Any, outputs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology"
    made = run("topology", "from-terraform", "--outputs-file", str(outputs_file), "--out",
               str(out), "--password-file", "/run/secrets/pg-password")
    assert made.code == 0, made.err
    for region in load_topology(out).regions.values():
        for endpoint in region.postgres.values():
            assert endpoint.password_env is None
            assert endpoint.password_file == Path("/run/secrets/pg-password")


@pytest.mark.parametrize(("flags", "message"), [
    (["--password-env", "PG", "--password-file", "/x"],
     "give exactly one of --password-env and --password-file"),
    (["--password-env", "PG-PASSWORD"], "--password-env: 'PG-PASSWORD' is not an environment"),
    (["--sslmode", "prefer"], "--sslmode: 'prefer'"),
    (["--sslmode", "verify-full", "--sslrootcert", "ca.crt"], "--subscription-sslrootcert"),
    (["--sslrootcert", "ca.crt"], "--sslrootcert and --subscription-sslrootcert are for"),
    (["--sslmode", "verify-ca", "--sslrootcert", "ca.crt", "--subscription-sslrootcert",
      "ca.crt"], "give an absolute path"),
])
def test_bad_password_and_tls_flags_exit_2(run: Any, outputs_file: Path, tmp_path: Path,
                                          flags: list[str], message: str) -> None:
    out = tmp_path / "topology"
    done = run("topology", "from-terraform", "--outputs-file", str(outputs_file), "--out",
               str(out), *flags)
    assert done.code == 2
    assert message in done.err
    assert not out.exists()


def test_needs_exactly_one_source(run: Any, outputs_file: Path, tmp_path: Path) -> None:
    neither = run("topology", "from-terraform", "--out", str(tmp_path / "t"))
    both = run("topology", "from-terraform", "--out", str(tmp_path / "t"), "--state-dir",
               str(tmp_path), "--outputs-file", str(outputs_file))
    for done in (neither, both):
        assert done.code == 2
        assert "give exactly one of --state-dir and --outputs-file" in done.err


def test_missing_outputs_are_named(run: Any, tmp_path: Path) -> None:
    outputs = terraform_outputs()
    del outputs["failover_regions"], outputs["failover_services"]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    done = run("topology", "from-terraform", "--outputs-file", str(path), "--out",
               str(tmp_path / "t"))
    assert done.code == 2
    assert f"{path}: missing output failover_regions" in done.err
    assert f"{path}: missing output failover_services" in done.err
    assert not (tmp_path / "t").exists()


def test_bad_fields_are_named_and_nothing_is_written(run: Any, tmp_path: Path) -> None:
    outputs = terraform_outputs()
    del outputs["failover_fleet"]["value"]["dns"]["hosted_zone_id"]
    outputs["failover_regions"]["value"]["us-west-2"]["priority"] = "high"
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    done = run("topology", "from-terraform", "--outputs-file", str(path), "--out",
               str(tmp_path / "t"))
    assert done.code == 2
    assert "output failover_fleet.dns.hosted_zone_id: Field required" in done.err
    assert "output failover_regions.us-west-2.priority:" in done.err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("region", ["../escape", "fleet"])
def test_region_names_that_are_not_file_names_are_refused(run: Any, tmp_path: Path,
                                                          region: str) -> None:
    outputs = terraform_outputs()
    regions = outputs["failover_regions"]["value"]
    regions[region] = regions.pop("eu-west-1")
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    done = run("topology", "from-terraform", "--outputs-file", str(path), "--out",
               str(tmp_path / "deep" / "t"))
    assert done.code == 2
    assert f"output failover_regions.{region}: region name {region!r} must be" in done.err
    assert sorted(p.name for p in tmp_path.rglob("*.toml")) == []


def test_outputs_the_loader_refuses_write_nothing(run: Any, tmp_path: Path) -> None:
    outputs = terraform_outputs()
    outputs["failover_regions"]["value"]["eu-west-1"]["address"] = "eu.example.com"
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    done = run("topology", "from-terraform", "--outputs-file", str(path), "--out",
               str(tmp_path / "t"))
    assert done.code == 2
    assert "the outputs make an invalid topology" in done.err
    assert "eu-west-1.toml: address: expected the IPv4 or IPv6 address" in done.err
    assert not (tmp_path / "t").exists()


def test_dry_run_writes_nothing(run: Any, outputs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology"
    done = run("topology", "from-terraform", "--outputs-file", str(outputs_file), "--out",
               str(out), "--dry-run", "--json")
    assert done.code == 0, done.err
    shown = json.loads(done.out)
    assert shown["dry_run"] is True
    assert 'hosted_zone_id = "Z0ABCDEF123"' in shown["contents"]["fleet.toml"]
    assert not out.exists()


def test_replacing_a_topology_needs_yes_and_drops_gone_regions(
        run: Any, outputs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology"
    assert run("topology", "from-terraform", "--outputs-file", str(outputs_file),
               "--out", str(out)).code == 0
    gone = out / "ap-south-1.toml"  # a region an earlier apply had
    gone.write_text((out / "eu-west-1.toml").read_text().replace("eu-west-1", "ap-south-1"))
    moved = copy.deepcopy(terraform_outputs())
    moved["failover_regions"]["value"]["us-east-1"]["address"] = "10.10.0.11"
    moved["failover_regions"]["value"]["us-east-1"]["postgres"]["host"] = "10.10.0.11"
    outputs_file.write_text(json.dumps(moved))
    before = {p.name: p.read_text() for p in out.iterdir()}

    refused = run("topology", "from-terraform", "--outputs-file", str(outputs_file),
                  "--out", str(out))  # stdin is not a terminal: nobody can confirm
    assert refused.code == 2
    assert "--yes" in refused.err and "ap-south-1.toml" in refused.err
    assert {p.name: p.read_text() for p in out.iterdir()} == before

    done = run("topology", "from-terraform", "--outputs-file", str(outputs_file),
               "--out", str(out), "--yes", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["deleted"] == ["ap-south-1.toml"]
    assert not gone.exists()
    assert load_topology(out).regions["us-east-1"].address == "10.10.0.11"


def test_out_that_is_a_file_is_refused(run: Any, outputs_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "topology"
    out.write_text("not a folder")
    for extra in ([], ["--dry-run"]):
        done = run("topology", "from-terraform", "--outputs-file", str(outputs_file),
                   "--out", str(out), *extra)
        assert done.code == 2
        assert f"--out: {out} is a file" in done.err
    assert out.read_text() == "not a folder"
