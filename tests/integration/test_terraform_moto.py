"""terraform/test-regions applied against a real moto server, end to end.

apply -> `failover topology from-terraform` -> the Route 53 provider moves a
writer record in the zone Terraform made -> a second plan and apply change
nothing (Terraform does not undo a failover) -> destroy leaves nothing. The
controllers' IAM policy is checked as Terraform rendered it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from failover.dns import RecordKey, RecordSet
from failover.dns.factory import provider_from_topology
from failover.topology import load_topology
from tests.support.loopback import allocate_block
from tests.support.moto_server import MotoServer, start_moto_server
from tests.support.terraform import Terraform, require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.terraform, pytest.mark.timeout(2400)]

ROOT = "test-regions"
ZONE = "db.failover.internal"
# Two services so that "exactly the services' records" means more than one name.
SERVICES = "services={orders={},billing={ttl=15}}"
RECORD_NAMES = sorted(f"{name}.{ZONE}" for name in
                      ("orders", "orders-ro", "billing", "billing-ro"))
AWS_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")  # the root's default regions


@dataclass
class Deployment:
    terraform: Terraform
    moto: MotoServer
    variables: list[str]
    outputs: dict[str, Any]
    destroyed: bool = False

    @property
    def state_dir(self) -> Path:
        return self.terraform.root / ROOT

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.terraform.run(ROOT, *args, "-no-color", check=check, timeout=1800)

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return boto3.client(service, endpoint_url=self.moto.url, region_name=region,
                            aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("terraform-moto")
    terraform = require_terraform(workdir)
    moto = start_moto_server(allocate_block().address(1), workdir)
    try:
        terraform.init(ROOT)
        variables = [f"-var=aws_endpoint_url={moto.url}", f"-var={SERVICES}"]
        terraform.run(ROOT, "apply", "-auto-approve", "-input=false", "-no-color", *variables,
                      timeout=1800)
        outputs = json.loads(terraform.run(ROOT, "output", "-json").stdout)
        deployed = Deployment(terraform, moto, variables, outputs)
        yield deployed
        if not deployed.destroyed:  # a test failed before destroying: clean up anyway
            deployed.run("destroy", "-auto-approve", "-input=false", "-refresh=false", *variables,
                         check=False)
    finally:
        moto.stop()


def failover_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from failover.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _resources(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from module.get("resources", [])
    for child in module.get("child_modules", []):
        yield from _resources(child)


def assert_controller_policy_is_least_privilege(deployment: Deployment) -> None:
    state = json.loads(deployment.run("show", "-json").stdout)
    [policy] = [r for r in _resources(state["values"]["root_module"])
                if r["type"] == "aws_iam_policy"]
    document = json.loads(policy["values"]["policy"])
    zone_id = deployment.outputs["failover_fleet"]["value"]["dns"]["hosted_zone_id"]
    zone_arn = f"arn:aws:route53:::hostedzone/{zone_id}"

    by_action: dict[str, dict[str, Any]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert action not in by_action, f"{action} granted twice"
            by_action[action] = statement
    assert set(by_action) == {"route53:ChangeResourceRecordSets",
                              "route53:ListResourceRecordSets", "route53:GetChange"}

    change = by_action["route53:ChangeResourceRecordSets"]
    assert change["Resource"] == zone_arn
    assert change["Condition"] == {"ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": RECORD_NAMES}}
    assert by_action["route53:ListResourceRecordSets"]["Resource"] == zone_arn
    assert "Condition" not in by_action["route53:ListResourceRecordSets"]
    assert by_action["route53:GetChange"]["Resource"] == "arn:aws:route53:::change/*"

    # ...and every region's controller role carries it.
    iam = deployment.client("iam")
    for region in deployment.outputs["failover_regions"]["value"]:
        role = f"failover-test-{region}-controller"
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [policy["values"]["arn"]]


def assert_failover_survives_terraform_apply(deployment: Deployment, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    topology = tmp_path / "topology"
    made = failover_cli("topology", "from-terraform", "--state-dir", str(deployment.state_dir),
                        "--out", str(topology), "--json", env=deployment.terraform.env)
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["files"] == ["eu-west-1.toml", "fleet.toml", "us-east-1.toml",
                                "us-west-2.toml"]
    valid = failover_cli("topology", "validate", str(topology), "--json",
                         env=deployment.terraform.env)
    assert valid.returncode == 0, valid.stderr

    topo = load_topology(topology)
    assert topo.fleet.dns.route53 is not None
    assert topo.fleet.dns.route53.hosted_zone_id == summary["hosted_zone_id"]
    assert topo.fleet.dns.route53.endpoint_url == deployment.moto.url
    assert sorted(topo.services) == ["billing", "orders"]
    east, west = topo.regions["us-east-1"], topo.regions["us-west-2"]
    assert east.priority > west.priority > topo.regions["eu-west-1"].priority
    for region in topo.regions.values():
        endpoint = region.postgres["orders"]
        assert (endpoint.host, endpoint.dbname, endpoint.password_env) == (
            region.address, "orders", "FAILOVER_PG_PASSWORD")
        assert endpoint.password_file is None
    assert "password =" not in "".join(p.read_text() for p in topology.glob("*.toml"))

    # Fail the orders writer over from us-east-1 to us-west-2, as a controller would.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    provider = provider_from_topology(topo)
    writer = RecordKey(topo.services["orders"].writer_record)
    before = provider.read(writer)
    assert before is not None and before.values == {east.address}
    provider.wait_visible(provider.compare_and_set(
        before, RecordSet(writer, before.ttl, frozenset({west.address}))), 30)

    # Terraform sees nothing to do, and applying changes nothing.
    plan = deployment.run("plan", "-detailed-exitcode", "-input=false",
                          "-out=after-failover.tfplan", *deployment.variables, check=False)
    assert plan.returncode == 0, f"terraform would change something after a failover:\n{plan.stdout}"
    deployment.run("apply", "-input=false", "after-failover.tfplan")
    after = provider.read(writer)
    assert after is not None and after.values == {west.address}
    assert after.ttl == before.ttl


def assert_destroy_leaves_nothing(deployment: Deployment) -> None:
    # The plan just before refreshed every resource; another refresh would cost a minute
    # of provider CPU and tell nothing new.
    deployment.run("destroy", "-auto-approve", "-input=false", "-refresh=false",
                   *deployment.variables)
    deployment.destroyed = True
    assert deployment.client("route53").list_hosted_zones()["HostedZones"] == []
    assert deployment.client("iam").list_policies(Scope="Local")["Policies"] == []
    for region in AWS_REGIONS:
        ec2 = deployment.client("ec2", region)
        states = [instance["State"]["Name"]
                  for reservation in ec2.describe_instances()["Reservations"]
                  for instance in reservation["Instances"]]
        assert set(states) <= {"terminated"}, f"{region}: instances left {states}"
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:failover:fleet",
                                           "Values": ["failover-test"]}])["Vpcs"]
        assert vpcs == [], f"{region}: VPCs left"


def test_apply_topology_failover_reapply_destroy(deployment: Deployment, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # One test, because each step needs the one before and an apply is
    # minutes of CPU: split tests would each apply again on parallel workers.
    assert_controller_policy_is_least_privilege(deployment)
    assert_failover_survives_terraform_apply(deployment, tmp_path, monkeypatch)
    assert_destroy_leaves_nothing(deployment)
