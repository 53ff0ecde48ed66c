"""Run terraform offline in a throwaway copy of terraform/, with the AWS provider
from a local filesystem mirror.

`require_terraform()` finds the terraform binary and the mirror, or skips the
calling test loudly: a skip reason for `-ra` and a warning for pytest's
warnings summary, because a silently skipped Terraform suite looks green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.skipping import skip_loudly

REPO_TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"
_PROVIDER_GLOB = "registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*"
# Where a filesystem mirror usually lives; each is searched one folder deep.
_MIRROR_ROOTS = (Path("/opt"), Path("/usr/share"), Path.home() / ".terraform.d")


def find_plugin_mirror() -> Path | None:
    """The folder holding registry.terraform.io/hashicorp/aws/..., or None."""
    configured = os.environ.get("FAILOVER_TF_PLUGIN_MIRROR")
    if configured:
        return Path(configured) if any(Path(configured).glob(_PROVIDER_GLOB)) else None
    for root in _MIRROR_ROOTS:
        for candidate in (root, *sorted(p for p in root.glob("*") if p.is_dir())):
            if any(candidate.glob(_PROVIDER_GLOB)):
                return candidate
    return None


class TerraformError(AssertionError):
    """A terraform command failed; the message carries its output."""


@dataclass
class Terraform:
    """terraform commands with an offline CLI config, in folders of a private copy of terraform/."""

    binary: str
    root: Path  # the private copy of the repository's terraform/
    env: dict[str, str] = field(default_factory=dict)

    def run(self, folder: str, *args: str, timeout: float = 900,
            input_text: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.binary, *args], cwd=self.root / folder,
                              env=self.env, input=input_text,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise TerraformError(f"terraform {' '.join(args)} in {folder} exited "
                                 f"{done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def init(self, folder: str) -> None:
        self.run(folder, "init", "-backend=false", timeout=300)


def require_terraform(workdir: Path) -> Terraform:
    """A Terraform runner on a copy of terraform/ under `workdir`, or a loud skip."""
    binary = shutil.which("terraform")
    if binary is None:
        skip_loudly("Terraform tests", "terraform is not on PATH: the modules under terraform/ "
                    "were NOT validated or applied (install terraform >= 1.5)")
    mirror = find_plugin_mirror()
    if mirror is None:
        skip_loudly("Terraform tests", "no hashicorp/aws provider mirror (terraform-provider-aws* "
                    "under registry.terraform.io/hashicorp/aws/ in /opt, /usr/share, ~/.terraform.d "
                    "or $FAILOVER_TF_PLUGIN_MIRROR): the modules under terraform/ were NOT "
                    "validated or applied")
    root = workdir / "terraform"
    # Modules refer to each other by relative path, so the whole tree is copied;
    # state, plans and .terraform folders stay out of the repository.
    shutil.copytree(REPO_TERRAFORM, root, ignore=shutil.ignore_patterns(
        ".terraform", ".terraform.lock.hcl", "*.tfstate*"))
    config = workdir / "terraform.rc"
    config.write_text(f"""provider_installation {{
  filesystem_mirror {{
    path    = "{mirror}"
    include = ["registry.terraform.io/hashicorp/*"]
  }}
  direct {{
    exclude = ["registry.terraform.io/hashicorp/*"]
  }}
}}
""")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),  # no ~/.terraformrc or credentials of the machine
        "TF_CLI_CONFIG_FILE": str(config),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        # Each command starts a 700 MB AWS provider process per provider slot, and its
        # start-up is mostly garbage collection: collecting a quarter as often cut a
        # `validate` of test-regions from 27 to 17 s of CPU (about 0.5 GB a process).
        "GOGC": "400",
    }
    return Terraform(binary=binary, root=root, env=env)
