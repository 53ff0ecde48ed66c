"""The region module's user data: rendered by terraform, read as cloud-init reads it, and
checked with the tools a host would trust (`cloud-init schema`, `shellcheck`).

Both tools skip the calling test loudly when missing (`scripts/setup.sh` installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.skipping import skip_loudly
from tests.support.terraform import Terraform

# The template's variables as modules/region passes them, but for the module folder
# (relative to terraform/, where the console runs).
TEMPLATE_VARIABLES: dict[str, Any] = {
    "module_dir": "modules/region",
    "region": "us-east-1",
    "aws_region": "us-east-1",
    "wheel_url": "s3://failover-artifacts/failover-0.1.0-py3-none-any.whl",
    "parameters": {"postgres_password": "/failover/postgres-password",
                   "fleet_key": "/failover/fleet-key",
                   "tls_certificate": "/failover/postgres-tls-certificate",
                   "tls_key": "/failover/postgres-tls-key",
                   "tls_ca": "/failover/postgres-tls-ca",
                   "topology": "/failover/topology"},
    "postgres_major_version": 16,
    "postgres_port": 5432,
    "postgres_user": "failover",
    "postgres_sslmode": "verify-ca",
    "databases": ["orders"],
    "controller_cidrs": ["10.10.0.0/16", "10.20.0.0/16"],
    "client_cidrs": [],
}


def render_user_data(terraform: Terraform, **overrides: Any) -> str:
    """The cloud-config text for TEMPLATE_VARIABLES with `overrides`."""
    variables = {**TEMPLATE_VARIABLES, **overrides}
    expression = (f'templatefile("modules/region/cloud-init.yaml.tftpl", '
                  f"jsondecode({json.dumps(json.dumps(variables))}))")
    text = terraform.run(".", "console", input_text=expression).stdout.strip()
    assert text.startswith("<<EOT") and text.endswith("EOT"), text
    return text.removeprefix("<<EOT").removesuffix("EOT").strip("\n") + "\n"


def written_files(user_data: str) -> dict[str, str]:
    """path -> content of every file the cloud-config writes."""
    config = yaml.safe_load(user_data)
    return {entry["path"]: entry["content"] for entry in config["write_files"]}


def assert_valid_cloud_config(user_data: str, workdir: Path) -> None:
    """`cloud-init schema` accepts it (modules, keys and types)."""
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        skip_loudly("cloud-init schema", "cloud-init is not on PATH: the region module's user "
                    "data was NOT validated (scripts/setup.sh installs cloud-init)")
    path = workdir / "user-data.yaml"
    path.write_text(user_data)
    done = subprocess.run([cloud_init, "schema", "--config-file", str(path)], check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"cloud-init schema:\n{done.stdout}{done.stderr}"
    assert "Valid cloud-config" in done.stdout


def assert_scripts_pass_shellcheck(user_data: str) -> list[str]:
    """Every shell script the cloud-config writes passes shellcheck; returns their paths.
    Its runcmd holds argument lists only, which no shell parses."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        skip_loudly("shellcheck", "shellcheck is not on PATH: the region module's scripts were "
                    "NOT checked (scripts/setup.sh installs shellcheck)")
    assert all(isinstance(command, list) for command in yaml.safe_load(user_data)["runcmd"])
    scripts = {path: content for path, content in written_files(user_data).items()
               if content.startswith("#!") and content.split("\n", 1)[0].endswith(("sh", "bash"))}
    for path, content in scripts.items():
        done = subprocess.run([shellcheck, "--external-sources", "-"], input=content, check=False,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"shellcheck {path}:\n{done.stdout}{done.stderr}"
    return sorted(scripts)
