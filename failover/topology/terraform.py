"""A topology folder from the outputs of a Terraform root module.

`terraform/test-regions` (or any root module with the same three outputs)
exports `failover_fleet`, `failover_regions` and `failover_services`. This
module reads them (from `terraform output -json` run in the state directory,
or from a saved copy of its JSON), turns them into `fleet.toml` and one
`<region>.toml` per region, and checks the result with the topology loader
before anything is written. Passwords never pass through Terraform: the
region files name the environment variable or file that holds them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from failover.errors import UserError
from failover.topology import FLEET_FILE, load_topology

REQUIRED_OUTPUTS = ("failover_fleet", "failover_regions", "failover_services")
DEFAULT_PASSWORD_ENV = "FAILOVER_PG_PASSWORD"  # noqa: S105 - a variable name, not a secret
TERRAFORM_TIMEOUT = 120.0  # `terraform output` only reads the state, but may load a remote backend

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # the topology's rule for Region.name


# ---------------------------------------------------------------- the outputs' shape


class _Output(BaseModel):
    # Root modules may export more than failover reads; only the fields below matter.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Route53Output(_Output):
    zone: str = Field(min_length=1)
    hosted_zone_id: str = Field(min_length=1)
    endpoint_url: str | None = None
    region_name: str = "us-east-1"


class _FleetOutput(_Output):
    name: str = Field(min_length=1)
    dns: _Route53Output


class _PostgresOutput(_Output):
    host: str = Field(min_length=1)
    port: int = 5432
    user: str = Field(min_length=1)


class _RegionOutput(_Output):
    priority: int = 0
    address: str = Field(min_length=1)
    controller_url: str = Field(min_length=1)
    postgres: _PostgresOutput


class _ServiceOutput(_Output):
    database: str = Field(min_length=1)
    writer_record: str = Field(min_length=1)
    reader_record: str | None = None
    ttl: int = 30


def _region_file_name(name: str) -> str:
    # Each region becomes <name>.toml: a name must stay inside the folder and
    # must not take the fleet file's place.
    if not _REGION_NAME.match(name) or f"{name}.toml" == FLEET_FILE:
        raise ValueError(f"region name {name!r} must be lower-case letters, digits and '-' "
                         "(it names <region>.toml), and not 'fleet'")
    return name


class TerraformOutputs(_Output):
    """The three outputs failover reads, checked for shape."""

    failover_fleet: _FleetOutput
    failover_regions: dict[Annotated[str, AfterValidator(_region_file_name)],
                           _RegionOutput] = Field(min_length=1)
    failover_services: dict[str, _ServiceOutput] = Field(min_length=1)


@dataclass(frozen=True)
class PasswordSource:
    """Where every region's PostgreSQL password comes from: an env var or a file."""

    env: str | None = DEFAULT_PASSWORD_ENV
    file: Path | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise UserError("give exactly one of --password-env and --password-file")
        if self.env is not None and not _ENV_NAME.match(self.env):
            raise UserError(f"--password-env: {self.env!r} is not an environment variable name "
                            "(letters, digits and '_', not starting with a digit)")

    def fields(self) -> dict[str, str]:
        if self.file is not None:
            return {"password_file": str(self.file)}
        return {"password_env": str(self.env)}


@dataclass(frozen=True)
class TlsSource:
    """How every region's controllers and subscriptions reach its database over TLS. The
    region module's servers take TCP logins over TLS only (`hostssl`), so the least is
    `require`; `verify-full` with the CA that signed the servers' certificates also checks
    who answers."""

    sslmode: str = "require"
    sslrootcert: Path | None = None  # on the controller and CLI hosts
    subscription_sslrootcert: Path | None = None  # on the database hosts, absolute

    def __post_init__(self) -> None:
        modes = ("require", "verify-ca", "verify-full")
        if self.sslmode not in modes:
            raise UserError(f"--sslmode: {self.sslmode!r}; the regions' servers take TLS logins "
                            f"only, use {', '.join(modes)}")
        verifying = self.sslmode != "require"
        if verifying and (self.sslrootcert is None or self.subscription_sslrootcert is None):
            raise UserError(f"--sslmode {self.sslmode} checks the servers' certificates: give "
                            "--sslrootcert (the CA on the controller hosts) and "
                            "--subscription-sslrootcert (the CA on the database hosts, an "
                            "absolute path), or use --sslmode require")
        if not verifying and (self.sslrootcert or self.subscription_sslrootcert):
            raise UserError("--sslrootcert and --subscription-sslrootcert are for --sslmode "
                            "verify-ca or verify-full: add it, or leave them out")
        if self.subscription_sslrootcert is not None and \
                not self.subscription_sslrootcert.is_absolute():
            raise UserError(f"--subscription-sslrootcert: {self.subscription_sslrootcert} is "
                            "read by each database server: give an absolute path")

    def fields(self) -> dict[str, str]:
        files = {"sslrootcert": self.sslrootcert,
                 "subscription_sslrootcert": self.subscription_sslrootcert}
        return {"sslmode": self.sslmode,
                **{name: str(path) for name, path in files.items() if path is not None}}


# ---------------------------------------------------------------- reading


def run_terraform_output(state_dir: Path) -> dict[str, Any]:
    """`terraform output -json` in `state_dir`, parsed."""
    if not state_dir.is_dir():
        raise UserError(f"--state-dir: {state_dir} is not a folder; pass the folder where "
                        "`terraform apply` ran")
    terraform = shutil.which("terraform")
    if terraform is None:
        raise UserError("--state-dir: terraform is not on PATH; install it, or save "
                        "`terraform output -json` to a file and pass --outputs-file")
    env = {**os.environ, "TF_IN_AUTOMATION": "1"}
    try:
        done = subprocess.run([terraform, "output", "-json"], cwd=state_dir, env=env,
                              capture_output=True, text=True, timeout=TERRAFORM_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"--state-dir: `terraform output -json` in {state_dir} did not finish "
                        f"within {TERRAFORM_TIMEOUT:g} s (an unreachable state backend?)") from None
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise UserError(f"--state-dir: `terraform output -json` failed in {state_dir}",
                        [f"--state-dir: `terraform output -json` failed in {state_dir}:",
                         *[f"  {line}" for line in detail if line.strip()]])
    return _parse_json(done.stdout, f"`terraform output -json` in {state_dir}")


def read_outputs_file(path: Path) -> dict[str, Any]:
    """A saved copy of `terraform output -json`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"--outputs-file: cannot read {path}: {exc.strerror}") from None
    return _parse_json(text, str(path))


def _parse_json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: not JSON ({exc}); expected `terraform output -json`") from None
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object of outputs, as `terraform output "
                        "-json` prints")
    return data


def parse_outputs(raw: dict[str, Any], *, source: str) -> TerraformOutputs:
    """Check the three outputs; UserError lists every missing output and bad field."""
    missing = [name for name in REQUIRED_OUTPUTS if name not in raw]
    if missing:
        problems = [f"{source}: missing output {name}" for name in missing]
        problems.append(f"{source}: apply terraform/test-regions there (or a root module that "
                        f"exports {', '.join(REQUIRED_OUTPUTS)}), then run this again")
        raise UserError(f"{source}: missing outputs {', '.join(missing)}", problems)

    problems = [f"{source}: output {name}: no value; expected the shape `terraform output "
                "-json` prints" for name in REQUIRED_OUTPUTS
                if not isinstance(raw[name], dict) or "value" not in raw[name]]
    if problems:
        raise UserError(f"{source}: malformed outputs", problems)
    try:
        return TerraformOutputs.model_validate({name: raw[name]["value"]
                                                for name in REQUIRED_OUTPUTS})
    except ValidationError as exc:
        problems = [f"{source}: output {_field_path(error['loc'])}: "
                    f"{error['msg'].removeprefix('Value error, ')}" for error in exc.errors()]
        raise UserError(f"{source}: the outputs have {len(problems)} problem(s)",
                        problems) from None


def _field_path(loc: tuple[int | str, ...]) -> str:
    # pydantic marks a bad map key with a trailing "[key]"; the key already names it.
    return ".".join(str(part) for part in loc if part != "[key]")


# ---------------------------------------------------------------- the topology


def _header(source: str) -> str:
    return (f"# Written by `failover topology from-terraform` from {source}.\n"
            "# Run it again after `terraform apply` rather than editing names and addresses\n"
            "# here; timings and checks are defaults worth tuning.\n\n")


def fleet_document(outputs: TerraformOutputs) -> dict[str, Any]:
    dns = outputs.failover_fleet.dns
    route53: dict[str, Any] = {"hosted_zone_id": dns.hosted_zone_id,
                               "region_name": dns.region_name}
    if dns.endpoint_url is not None:
        route53["endpoint_url"] = dns.endpoint_url
    services = []
    for name, service in outputs.failover_services.items():
        reader = {} if service.reader_record is None else {"reader_record": service.reader_record}
        services.append({"name": name, "database": service.database,
                         "writer_record": service.writer_record, **reader, "ttl": service.ttl})
    return {
        "name": outputs.failover_fleet.name,
        "dns": {"provider": "route53", "zone": dns.zone, "route53": route53},
        "services": services,
    }


def region_document(name: str, region: _RegionOutput, services: dict[str, _ServiceOutput],
                    password: PasswordSource, tls: TlsSource) -> dict[str, Any]:
    postgres = {
        service: {"host": region.postgres.host, "port": region.postgres.port,
                  "dbname": spec.database, "user": region.postgres.user, **password.fields(),
                  **tls.fields()}
        for service, spec in services.items()
    }
    checks: list[dict[str, Any]] = [
        {"name": f"postgres-{service}", "kind": "postgres", "service": service}
        for service in services
    ]
    # A dead controller alone must not fail its region over: shown, never voted on.
    checks.append({"name": "controller", "kind": "http",
                   "url": f"{region.controller_url.rstrip('/')}/healthz", "purpose": "info"})
    return {"name": name, "priority": region.priority, "controller_url": region.controller_url,
            "address": region.address, "postgres": postgres, "checks": checks}


def topology_files(outputs: TerraformOutputs, password: PasswordSource,
                   *, source: str, tls: TlsSource | None = None) -> dict[str, str]:
    """File name -> TOML text of the whole topology folder."""
    header = _header(source)
    files = {FLEET_FILE: header + tomli_w.dumps(fleet_document(outputs))}
    for name, region in outputs.failover_regions.items():
        document = region_document(name, region, outputs.failover_services, password,
                                   tls or TlsSource())
        files[f"{name}.toml"] = header + tomli_w.dumps(document)
    return files


def existing_files(out: Path, files: dict[str, str]) -> tuple[list[str], list[Path]]:
    """What writing `files` into `out` would touch: (names replaced, stale TOML files).

    A stale file is a region of an earlier run that the outputs no longer
    have; left behind, it would put the region back into the topology.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file; pass a folder for the topology")
    if not out.exists():
        return [], []
    replaced = sorted(name for name in files if (out / name).exists())
    return replaced, sorted(path for path in out.glob("*.toml") if path.name not in files)


def check_topology(files: dict[str, str], *, source: str) -> None:
    """Load the files as a topology in a scratch folder; UserError if the loader refuses."""
    with tempfile.TemporaryDirectory(prefix="failover-topology-") as scratch:
        for name, text in files.items():
            (Path(scratch) / name).write_text(text)
        try:
            load_topology(Path(scratch))
        except UserError as exc:
            # Name the Terraform outputs, not the scratch folder nobody will find.
            problems = [line.replace(scratch, "<generated>") for line in exc.problems]
            raise UserError(f"{source}: the outputs make an invalid topology",
                            [f"{source}: the outputs make an invalid topology:", *problems]) from None


def write_topology(files: dict[str, str], out: Path, *, remove: list[Path]) -> None:
    """Write the folder (each file replaced atomically) and delete `remove` (stale files)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = out / name
        partial = target.with_name(f".{name}.tmp")
        partial.write_text(text)
        partial.replace(target)
    for path in remove:
        path.unlink()
