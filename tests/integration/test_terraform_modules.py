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
    assert {"modules/region", "modules/gslb", "modules/controller-iam", "test-regions",
            "examples/gslb-and-iam", "examples/vpc-peering"} <= set(CONFIGURATIONS)
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
            f"-var=aws_endpoint_url={UNREACHABLE_ENDPOINT}"]
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
    assert "regions[*].aws_region must be distinct AWS region names" in output
    assert "regions[*].cidr must not overlap" in output
    assert "services[*].ttl must be a whole number of seconds from 1 to 300" in output


def test_two_regions_are_refused(terraform: Terraform) -> None:
    output = _plan_with(
        terraform,
        'regions=[{name="east",aws_region="us-east-1",cidr="10.10.0.0/16",priority=2},'
        '{name="west",aws_region="us-west-2",cidr="10.20.0.0/16",priority=1}]',
    )
    assert "regions must list exactly three regions" in output


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
