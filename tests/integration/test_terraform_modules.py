"""The Terraform under terraform/ is well formed and refuses bad input, offline.

Every module and example passes `terraform fmt -check` and `terraform
validate`; the root's variable validations stop a plan before any API call;
`failover topology from-terraform` names the outputs a state lacks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.terraform import REPO_TERRAFORM, Terraform, require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.terraform, pytest.mark.timeout(1200)]

ALL_CONFIGURATIONS = sorted(
    str(path.parent.relative_to(REPO_TERRAFORM))
    for path in REPO_TERRAFORM.glob("**/versions.tf")
    if ".terraform" not in path.parts
)
# Terraform cannot validate a module that expects aliased providers on its
# own (it has no configuration for them); such a module is validated inside
# the configurations that call it.
NEEDS_CALLER = sorted(
    folder for folder in ALL_CONFIGURATIONS
    if "configuration_aliases" in (REPO_TERRAFORM / folder / "versions.tf").read_text()
)
CONFIGURATIONS = [folder for folder in ALL_CONFIGURATIONS if folder not in NEEDS_CALLER]
# Nothing here talks to AWS: plans fail in variable validation, before any
# request, and the endpoint keeps a slip from reaching the real API.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    return require_terraform(tmp_path_factory.mktemp("terraform-modules"))


def test_every_module_and_example_is_found() -> None:
    assert {"modules/region", "modules/gslb", "modules/controller-iam",
            "modules/vpc-peering/request", "modules/vpc-peering/accept", "test-regions",
            "test-regions/aws-region", "examples/gslb-and-iam",
            "examples/vpc-peering"} <= set(CONFIGURATIONS)
    assert NEEDS_CALLER == ["modules/vpc-peering"]


@pytest.mark.parametrize("module", NEEDS_CALLER)
def test_modules_with_aliased_providers_have_an_example(module: str) -> None:
    name = Path(module).name
    calls = re.compile(rf'source\s*=\s*"\.\./\.\./modules/{re.escape(name)}"')
    callers = [folder for folder in CONFIGURATIONS if folder.startswith("examples/")
               and calls.search((REPO_TERRAFORM / folder / "main.tf").read_text())]
    assert callers, f"{module} is validated only through an example that calls it; add one"


def test_fmt_check(terraform: Terraform) -> None:
    done = terraform.run(".", "fmt", "-check", "-recursive", "-diff", check=False)
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("folder", CONFIGURATIONS)
def test_validate(terraform: Terraform, folder: str) -> None:
    terraform.init(folder)
    done = terraform.run(folder, "validate", "-json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"valid": true' in done.stdout


def _plan_with(terraform: Terraform, *assignments: str) -> str:
    terraform.init("test-regions")
    args = ["plan", "-input=false", "-refresh=false", "-no-color",
            f"-var=aws_endpoint_url={UNREACHABLE_ENDPOINT}",
            "-var=failover_wheel_url=https://example.com/failover-0.1.0-py3-none-any.whl"]
    done = terraform.run("test-regions", *args, *(f"-var={a}" for a in assignments),
                         check=False, timeout=600)
    assert done.returncode != 0, "a plan with invalid variables must fail"
    return " ".join((done.stdout + done.stderr).split())  # undo terraform's line wrapping


def test_bad_variables_fail_the_plan_with_their_messages(terraform: Terraform) -> None:
    output = _plan_with(
        terraform,
        'regions=[{name="East_1",aws_region="us-east-1",cidr="10.10.0.0/16",priority=3},'
        '{name="west",aws_region="us-west-2",cidr="10.10.128.0/17",priority=2},'
        '{name="europe",aws_region="europe-1",cidr="10.30.0.0/16",priority=1}]',
        "services={orders={ttl=3600}}",
    )
    assert "Invalid value for variable" in output
    assert "regions[*].name must be unique, lower-case letters" in output
    assert "regions[*].aws_region must be AWS region names" in output
    assert "regions[*].cidr must not overlap" in output
    assert "services[*].ttl must be a whole number of seconds from 1 to 300" in output


def test_a_sixth_aws_region_is_refused(terraform: Terraform) -> None:
    aws_regions = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "ap-south-1", "sa-east-1"]
    output = _plan_with(terraform, "regions=[" + ",".join(
        f'{{name="r{i}",aws_region="{aws_region}",cidr="10.{i}.0.0/16",priority={i}}}'
        for i, aws_region in enumerate(aws_regions, 1)) + "]")
    assert "in at most five AWS regions" in output


REGION_INPUTS = {
    "fleet_name": '"bad"', "name": '"us-east-1"', "vpc_cidr": '"10.10.0.0/16"',
    "peer_cidrs": '["10.20.0.0/16"]', "databases": '["orders"]',
    "failover_wheel_url": '"https://example.com/failover-0.1.0-py3-none-any.whl"',
    "ssm_parameters": """{
    postgres_password = "/failover/postgres-password", fleet_key = "/failover/fleet-key",
    tls_certificate   = "/failover/postgres-tls-certificate",
    tls_key           = "/failover/postgres-tls-key", tls_ca = "/failover/postgres-tls-ca",
    topology          = "/failover/topology"
  }""",
}


def _validate_region_call(terraform: Terraform, caller: str, **inputs: str) -> str:
    """`terraform validate` of a module call with literal inputs: validate checks them
    without any provider (a plan would first wait out the AWS provider's retries against an
    unreachable endpoint). Returns its output, which must be a failure."""
    folder = terraform.root / caller
    folder.mkdir()
    assignments = "\n".join(f"  {name} = {value}" for name, value in
                            {**REGION_INPUTS, **inputs}.items())
    (folder / "main.tf").write_text(
        f'module "region" {{\n  source = "../modules/region"\n{assignments}\n}}\n')
    terraform.init(caller)
    done = terraform.run(caller, "validate", "-no-color", check=False)
    assert done.returncode != 0, done.stdout
    return " ".join((done.stdout + done.stderr).split())


def test_the_region_module_refuses_a_bad_wheel_url_parameter_name_or_operator_cidr(
        terraform: Terraform) -> None:
    output = _validate_region_call(
        terraform, "bad-region-inputs",
        failover_wheel_url='"http://example.com/failover.tar.gz"',
        operator_cidrs='["192.0.2.0/33"]',
        ssm_parameters=REGION_INPUTS["ssm_parameters"].replace('"/failover/fleet-key"',
                                                               '"fleet-key"'))
    assert "failover_wheel_url must be an https:// or s3:// URL ending in the wheel" in output
    assert "ssm_parameters must hold SSM parameter names" in output
    assert "operator_cidrs must hold IPv4 CIDRs" in output


def test_the_ca_parameter_is_required_or_explicitly_null(terraform: Terraform) -> None:
    """Leaving certificates unchecked is said, never the default."""
    output = _validate_region_call(
        terraform, "no-ca-parameter",
        ssm_parameters=REGION_INPUTS["ssm_parameters"].replace(
            'tls_ca = "/failover/postgres-tls-ca",', ""))
    assert 'attribute "tls_ca" is required' in output


def test_an_unknown_sslmode_is_refused(terraform: Terraform) -> None:
    output = _validate_region_call(terraform, "prefer-sslmode", postgres_sslmode='"prefer"')
    assert 'postgres_sslmode must be "verify-ca", "verify-full" or "require"' in output


def test_from_terraform_names_missing_outputs(terraform: Terraform, tmp_path: Path) -> None:
    # A real state holding only one of the three outputs: a root module with
    # nothing but an output needs no provider, so it applies offline.
    state_dir = terraform.root / "partial-outputs"
    state_dir.mkdir()
    (state_dir / "main.tf").write_text(
        'output "failover_fleet" {\n  value = { name = "partial" }\n}\n')
    terraform.run("partial-outputs", "init", "-backend=false")
    terraform.run("partial-outputs", "apply", "-auto-approve", "-input=false")

    out = tmp_path / "topology"
    done = subprocess.run(
        [sys.executable, "-c", "from failover.cli import main; main()", "topology",
         "from-terraform", "--state-dir", str(state_dir), "--out", str(out)],
        env=terraform.env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "missing output failover_regions" in done.stderr
    assert "missing output failover_services" in done.stderr
    assert "missing output failover_fleet" not in done.stderr
    assert not out.exists(), "nothing may be written when the outputs are incomplete"
