"""terraform/test-regions applied against a real moto server, end to end: four regions in
three AWS regions, two of them sharing one.

Apply -> every host's user data, read back from EC2, is a valid cloud-config whose
scripts pass shellcheck and which names the boot parameters but holds none of their
secret values (nor does the state) -> each controller role may read exactly its own
region's boot parameters and the wheel -> the topology parameter every host waits for
makes the same topology as `failover topology from-terraform --state-dir` -> the two
VPCs in one AWS region are peered there, every region's database takes every other
region's network and an operator network reaches the controller API and not PostgreSQL
-> the Route 53 provider moves a writer record in the zone Terraform made -> a second
plan and apply change nothing (Terraform does not undo a failover) -> destroy leaves
nothing. One deployment, because an apply is minutes of CPU.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from failover.dns import RecordKey, RecordSet
from failover.dns.factory import provider_from_topology
from failover.topology import load_topology
from tests.support.cloud_init import (
    assert_scripts_pass_shellcheck,
    assert_valid_cloud_config,
    written_files,
)
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
WHEEL_BUCKET, WHEEL_KEY = "failover-artifacts", "failover-0.1.0-py3-none-any.whl"
OPERATORS = "192.0.2.0/24"


@dataclass(frozen=True)
class Region:
    name: str
    aws_region: str
    cidr: str
    priority: int


# Regions may share an AWS region: each has its own VPC, peered within it.
REGIONS = (Region("east-a", "us-east-1", "10.10.0.0/16", 100),
           Region("east-b", "us-east-1", "10.20.0.0/16", 50),
           Region("west", "us-west-2", "10.30.0.0/16", 10),
           Region("europe", "eu-west-1", "10.40.0.0/16", 1))


@dataclass
class Deployment:
    terraform: Terraform
    moto: MotoServer
    regions: tuple[Region, ...]
    variables: list[str]
    outputs: dict[str, Any]
    boot_parameters: dict[str, str]  # name -> the secret (or not) value created before apply

    @property
    def state_dir(self) -> Path:
        return self.terraform.root / ROOT

    @property
    def aws_regions(self) -> list[str]:
        return sorted({r.aws_region for r in self.regions})

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.terraform.run(ROOT, *args, "-no-color", check=check, timeout=1800)

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return boto3.client(service, endpoint_url=self.moto.url, region_name=region,
                            aws_access_key_id="test", aws_secret_access_key="test")


def create_boot_parameters(moto: MotoServer, aws_regions: list[str]) -> dict[str, str]:
    """What an operator creates in every AWS region before apply, with values this run made
    up, so that finding one anywhere is a leak."""
    run = uuid.uuid4().hex
    values = {
        "/failover/postgres-password": ("SecureString", f"password-{run}"),
        "/failover/fleet-key": ("SecureString", f"fleet-key-{run}"),
        "/failover/postgres-tls-certificate": (
            "String", f"-----BEGIN CERTIFICATE-----\ncertificate-{run}\n-----END CERTIFICATE-----"),
        "/failover/postgres-tls-key": (
            "SecureString", f"-----BEGIN PRIVATE KEY-----\nkey-{run}\n-----END PRIVATE KEY-----"),
        "/failover/postgres-tls-ca": (
            "String", f"-----BEGIN CERTIFICATE-----\nca-{run}\n-----END CERTIFICATE-----"),
    }
    for aws_region in aws_regions:
        ssm = boto3.client("ssm", endpoint_url=moto.url, region_name=aws_region,
                           aws_access_key_id="test", aws_secret_access_key="test")
        for name, (kind, value) in values.items():
            ssm.put_parameter(Name=name, Type=kind, Value=value)
    return {name: value for name, (_, value) in values.items()}


def regions_variable(regions: tuple[Region, ...]) -> str:
    return "regions=[" + ",".join(
        f'{{name="{r.name}",aws_region="{r.aws_region}",cidr="{r.cidr}",priority={r.priority}}}'
        for r in regions) + "]"


@contextmanager
def deployed(workdir: Path, regions: tuple[Region, ...],
             *extra_variables: str) -> Iterator[Deployment]:
    terraform = require_terraform(workdir)
    moto = start_moto_server(allocate_block().address(1), workdir)
    try:
        boot_parameters = create_boot_parameters(moto, sorted({r.aws_region for r in regions}))
        terraform.init(ROOT)
        variables = [f"-var=aws_endpoint_url={moto.url}", f"-var={SERVICES}",
                     f"-var={regions_variable(regions)}",
                     f"-var=failover_wheel_url=s3://{WHEEL_BUCKET}/{WHEEL_KEY}",
                     *(f"-var={assignment}" for assignment in extra_variables)]
        terraform.run(ROOT, "apply", "-auto-approve", "-input=false", "-no-color", *variables,
                      timeout=1800)
        outputs = json.loads(terraform.run(ROOT, "output", "-json").stdout)
        # Nothing to destroy afterwards: the emulator and everything in it go with the test.
        yield Deployment(terraform, moto, regions, variables, outputs, boot_parameters)
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def four_regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("terraform-moto"), REGIONS,
                  f'operator_cidrs=["{OPERATORS}"]') as deployment:
        yield deployment


def failover_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from failover.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _resources(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from module.get("resources", [])
    for child in module.get("child_modules", []):
        yield from _resources(child)


def statements_by_action(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each action of an IAM policy document with the one statement that allows it."""
    by_action: dict[str, dict[str, Any]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert action not in by_action, f"{action} granted twice"
            by_action[action] = statement
    return by_action


def as_list(resource: str | list[str]) -> list[str]:
    return [resource] if isinstance(resource, str) else resource


def assert_controller_policy_is_least_privilege(deployment: Deployment) -> None:
    state = json.loads(deployment.run("show", "-json").stdout)
    [policy] = [r for r in _resources(state["values"]["root_module"])
                if r["type"] == "aws_iam_policy"]
    by_action = statements_by_action(json.loads(policy["values"]["policy"]))
    zone_id = deployment.outputs["failover_fleet"]["value"]["dns"]["hosted_zone_id"]
    zone_arn = f"arn:aws:route53:::hostedzone/{zone_id}"
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


def assert_each_host_reads_exactly_its_boot_parameters(deployment: Deployment) -> None:
    iam = deployment.client("iam")
    for region in deployment.regions:
        role = f"failover-test-{region.name}-controller"
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["failover-boot-reads"]
        document = iam.get_role_policy(RoleName=role, PolicyName="failover-boot-reads")
        by_action = statements_by_action(document["PolicyDocument"])
        assert set(by_action) == {"ssm:GetParameter", "s3:GetObject"}
        parameters = {*deployment.boot_parameters, "/failover/topology"}
        assert sorted(as_list(by_action["ssm:GetParameter"]["Resource"])) == sorted(
            f"arn:aws:ssm:{region.aws_region}:123456789012:parameter{name}" for name in parameters)
        assert as_list(by_action["s3:GetObject"]["Resource"]) == [
            f"arn:aws:s3:::{WHEEL_BUCKET}/{WHEEL_KEY}"]


def assert_hosts_get_names_never_secrets(deployment: Deployment, workdir: Path) -> None:
    """The user data EC2 stored for every host, and the Terraform state."""
    secrets = [value for name, value in deployment.boot_parameters.items()
               if name not in ("/failover/postgres-tls-certificate", "/failover/postgres-tls-ca")]
    instances = deployment.outputs["instance_ids"]["value"]
    for region in deployment.regions:
        ec2 = deployment.client("ec2", region.aws_region)
        stored = ec2.describe_instance_attribute(InstanceId=instances[region.name],
                                                 Attribute="userData")["UserData"]["Value"]
        user_data = gzip.decompress(base64.b64decode(stored)).decode()
        assert_valid_cloud_config(user_data, workdir)
        assert assert_scripts_pass_shellcheck(user_data) == [
            "/usr/local/sbin/failover-region-setup"]
        settings = written_files(user_data)["/etc/failover/region-setup.env"]
        assert f"REGION_NAME='{region.name}'\nAWS_REGION_NAME='{region.aws_region}'\n" in settings
        for name in (*deployment.boot_parameters, "/failover/topology"):
            assert f"='{name}'\n" in settings
        assert [s for s in secrets if s in user_data] == [], f"{region.name}: a secret"
    state = (deployment.state_dir / "terraform.tfstate").read_text()
    assert [s for s in secrets if s in state] == [], "a secret in the Terraform state"


def assert_topology_parameter_makes_the_operators_topology(deployment: Deployment,
                                                          workdir: Path) -> Path:
    """Every host's topology (from the parameter) is the one an operator writes from the
    state; returns the operator's."""
    from_state = workdir / "from-state"
    made = failover_cli("topology", "from-terraform", "--state-dir", str(deployment.state_dir),
                        "--out", str(from_state), env=deployment.terraform.env)
    assert made.returncode == 0, made.stderr
    expected = {path.name: path.read_text().split("\n", 1)[1]  # the header names the source
                for path in from_state.iterdir()}
    assert sorted(expected) == sorted(["fleet.toml", *(f"{r.name}.toml" for r in deployment.regions)])
    for aws_region in deployment.aws_regions:
        parameter = deployment.client("ssm", aws_region).get_parameter(
            Name="/failover/topology")["Parameter"]
        outputs = workdir / f"outputs-{aws_region}.json"
        outputs.write_text(parameter["Value"])
        on_host = workdir / f"on-host-{aws_region}"
        made = failover_cli("topology", "from-terraform", "--outputs-file", str(outputs),
                            "--out", str(on_host), env=deployment.terraform.env)
        assert made.returncode == 0, made.stderr
        assert {path.name: path.read_text().split("\n", 1)[1]
                for path in on_host.iterdir()} == expected, aws_region
    return from_state


def assert_failover_survives_terraform_apply(deployment: Deployment, topology: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    valid = failover_cli("topology", "validate", str(topology), "--json",
                         env=deployment.terraform.env)
    assert valid.returncode == 0, valid.stderr

    topo = load_topology(topology)
    assert topo.fleet.dns.route53 is not None
    assert topo.fleet.dns.route53.endpoint_url == deployment.moto.url
    assert sorted(topo.services) == ["billing", "orders"]
    priorities = [topo.regions[r.name].priority for r in deployment.regions]
    assert priorities == sorted(priorities, reverse=True)
    for region in topo.regions.values():
        endpoint = region.postgres["orders"]
        assert (endpoint.host, endpoint.dbname, endpoint.password_env) == (
            region.address, "orders", "FAILOVER_PG_PASSWORD")
        assert endpoint.password_file is None
    assert "password =" not in "".join(p.read_text() for p in topology.glob("*.toml"))

    # Fail the orders writer over from the first region to the second, as a controller would.
    first, second = (topo.regions[r.name] for r in deployment.regions[:2])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    provider = provider_from_topology(topo)
    writer = RecordKey(topo.services["orders"].writer_record)
    before = provider.read(writer)
    assert before is not None and before.values == {first.address}
    provider.wait_visible(provider.compare_and_set(
        before, RecordSet(writer, before.ttl, frozenset({second.address}))), 30)

    # Terraform sees nothing to do, and applying changes nothing.
    plan = deployment.run("plan", "-detailed-exitcode", "-input=false",
                          "-out=after-failover.tfplan", *deployment.variables, check=False)
    assert plan.returncode == 0, f"terraform would change something after a failover:\n{plan.stdout}"
    deployment.run("apply", "-input=false", "after-failover.tfplan")
    after = provider.read(writer)
    assert after is not None and after.values == {second.address}
    assert after.ttl == before.ttl


def assert_destroy_leaves_nothing(deployment: Deployment) -> None:
    # The plan just before refreshed every resource; another refresh would cost a minute
    # of provider CPU and tell nothing new.
    deployment.run("destroy", "-auto-approve", "-input=false", "-refresh=false",
                   *deployment.variables)
    assert deployment.client("route53").list_hosted_zones()["HostedZones"] == []
    assert deployment.client("iam").list_policies(Scope="Local")["Policies"] == []
    for aws_region in deployment.aws_regions:
        ec2 = deployment.client("ec2", aws_region)
        states = [instance["State"]["Name"]
                  for reservation in ec2.describe_instances()["Reservations"]
                  for instance in reservation["Instances"]]
        assert set(states) <= {"terminated"}, f"{aws_region}: instances left {states}"
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:failover:fleet",
                                           "Values": ["failover-test"]}])["Vpcs"]
        assert vpcs == [], f"{aws_region}: VPCs left"
        parameters = deployment.client("ssm", aws_region).describe_parameters()["Parameters"]
        assert "/failover/topology" not in {p["Name"] for p in parameters}


def assert_networks(deployment: Deployment) -> None:
    """The two VPCs of us-east-1 are peered there; each database's group takes the other
    regions' networks, each controller's group those and the operators'."""
    ec2 = deployment.client("ec2", "us-east-1")
    vpcs = {vpc["VpcId"]: vpc["CidrBlock"] for vpc in ec2.describe_vpcs(
        Filters=[{"Name": "tag:failover:fleet", "Values": ["failover-test"]}])["Vpcs"]}
    assert sorted(vpcs.values()) == ["10.10.0.0/16", "10.20.0.0/16"]
    within = [p for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
              if {p["RequesterVpcInfo"]["VpcId"], p["AccepterVpcInfo"]["VpcId"]} == set(vpcs)]
    assert [p["Status"]["Code"] for p in within] == ["active"]
    for region in deployment.regions:
        others = {r.cidr for r in deployment.regions if r != region}
        groups = deployment.client("ec2", region.aws_region).describe_security_groups(
            Filters=[{"Name": "tag:failover:fleet", "Values": ["failover-test"]}])
        mine = [g for g in groups["SecurityGroups"]
                if g["GroupName"].startswith(f"failover-test-{region.name}-")]
        assert mine, f"{region.name}: no security group"
        for group in mine:
            sources = {ip_range["CidrIp"] for permission in group["IpPermissions"]
                       for ip_range in permission.get("IpRanges", [])}
            if group["GroupName"].endswith("-controller"):
                assert sources == others | {OPERATORS}, group["GroupName"]
            else:
                assert sources == others, group["GroupName"]


def test_four_regions_apply_boot_failover_reapply_destroy(
        four_regions: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One test, because each step needs the one before and an apply is
    # minutes of CPU: split tests would each apply again on parallel workers.
    assert_controller_policy_is_least_privilege(four_regions)
    assert_each_host_reads_exactly_its_boot_parameters(four_regions)
    assert_hosts_get_names_never_secrets(four_regions, tmp_path)
    topology = assert_topology_parameter_makes_the_operators_topology(four_regions, tmp_path)
    assert sorted(load_topology(topology).regions) == sorted(r.name for r in REGIONS)
    assert_networks(four_regions)
    assert_failover_survives_terraform_apply(four_regions, topology, monkeypatch)
    assert_destroy_leaves_nothing(four_regions)
