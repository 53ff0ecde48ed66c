"""`failover topology from-terraform`: a topology folder from Terraform outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from failover.cli.common import (
    DryRunOption,
    JsonOption,
    YesOption,
    confirm_or_abort,
    console,
    print_json,
)
from failover.cli.topology import topology_app
from failover.errors import UserError
from failover.topology.terraform import (
    DEFAULT_PASSWORD_ENV,
    PasswordSource,
    TerraformOutputs,
    TlsSource,
    check_topology,
    existing_files,
    parse_outputs,
    read_outputs_file,
    run_terraform_output,
    topology_files,
    write_topology,
)


def _summary(outputs: TerraformOutputs, out: Path, files: dict[str, str],
             password: PasswordSource) -> dict[str, Any]:
    fleet = outputs.failover_fleet
    return {
        "out": str(out),
        "files": sorted(files),
        "fleet": fleet.name,
        "zone": fleet.dns.zone,
        "hosted_zone_id": fleet.dns.hosted_zone_id,
        "regions": {name: {"address": region.address, "priority": region.priority}
                    for name, region in outputs.failover_regions.items()},
        "services": {name: {"writer_record": service.writer_record,
                            "reader_record": service.reader_record}
                     for name, service in outputs.failover_services.items()},
        "postgres_password": password.fields(),
    }


@topology_app.command("from-terraform")
def from_terraform(
    *,
    out: Annotated[Path, typer.Option("--out", help="Topology folder to write (created if missing).")],
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Folder where `terraform apply` ran (e.g. terraform/test-regions); "
                            "`terraform output -json` is run there.")] = None,
    outputs_file: Annotated[Path | None, typer.Option(
        "--outputs-file", help="A saved `terraform output -json`, instead of --state-dir.")] = None,
    password_env: Annotated[str | None, typer.Option(
        "--password-env", help="Env var the controllers read the PostgreSQL password from "
                               f"(default: {DEFAULT_PASSWORD_ENV}).")] = None,
    password_file: Annotated[Path | None, typer.Option(
        "--password-file", help="File the controllers read the PostgreSQL password from, "
                                "instead of an env var.")] = None,
    sslmode: Annotated[str, typer.Option(
        "--sslmode", help="libpq sslmode of every endpoint: require (default; the region "
                          "module's servers take TLS logins only), verify-ca or verify-full "
                          "(with the two CA options).")] = "require",
    sslrootcert: Annotated[Path | None, typer.Option(
        "--sslrootcert", help="The CA that signed the servers' certificates, as the "
                              "controllers and the CLI read it (relative: to --out).")] = None,
    subscription_sslrootcert: Annotated[Path | None, typer.Option(
        "--subscription-sslrootcert", help="The same CA on every database host, an absolute "
                                           "path: the subscriptions verify the writer "
                                           "with it.")] = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Write fleet.toml and one <region>.toml per region from a Terraform root module's
    failover_fleet, failover_regions and failover_services outputs.

    No secret is written: the region files name the env var or file holding the
    PostgreSQL password. Replacing an existing topology asks first (or --yes).
    """
    if password_env is None and password_file is None:
        password_env = DEFAULT_PASSWORD_ENV
    password = PasswordSource(env=password_env, file=password_file)
    tls = TlsSource(sslmode, sslrootcert, subscription_sslrootcert)
    if state_dir is not None and outputs_file is None:
        source = f"terraform outputs in {state_dir.resolve()}"
        raw = run_terraform_output(state_dir)
    elif outputs_file is not None and state_dir is None:
        source = str(outputs_file.resolve())
        raw = read_outputs_file(outputs_file)
    else:
        raise UserError("give exactly one of --state-dir and --outputs-file")

    outputs = parse_outputs(raw, source=source)
    files = topology_files(outputs, password, source=source, tls=tls)
    check_topology(files, source=source)
    summary = _summary(outputs, out, files, password)
    replaced, stale_paths = existing_files(out, files)
    stale = [path.name for path in stale_paths]

    if dry_run:
        if json_out:
            print_json({"dry_run": True, **summary, "would_replace": replaced,
                        "would_delete": stale, "contents": files})
            return
        for name, text in files.items():
            console.rule(escape(str(out / name)))
            console.print(text, markup=False, highlight=False)
        if stale:
            console.print(f"would delete: {escape(', '.join(stale))}")
        console.print("[yellow]dry run[/yellow]: nothing written")
        return

    if replaced or stale:
        deleting = f" and delete {', '.join(stale)} (regions no longer in the outputs)" if stale else ""
        confirm_or_abort(f"Replace {len(replaced)} file(s) in {out}{deleting}?", yes=yes)
    write_topology(files, out, remove=stale_paths)

    if json_out:
        print_json({"written": True, **summary, "replaced": replaced, "deleted": stale})
        return
    secret = (f"${password.env}" if password.env is not None else str(password.file))
    console.print(
        f"[green]wrote[/green] {escape(str(out))}: {escape(', '.join(sorted(files)))} "
        f"(zone {escape(outputs.failover_fleet.dns.zone)}, hosted zone "
        f"{escape(outputs.failover_fleet.dns.hosted_zone_id)}); PostgreSQL passwords come from "
        f"{escape(secret)}"
    )
    if stale:
        console.print(f"deleted {escape(', '.join(stale))}")
