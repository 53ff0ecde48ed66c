"""`lab up --tls` without a lab: the files its CA issues and who may read them, the topology
it writes (every TLS field set, and accepted by the loader and by the TLS contexts the
controllers build from it), lab.json's `tls`, and the refusal, before anything starts, of a
machine without a PostgreSQL built with TLS. tests/integration/test_lab_tls.py starts a
lab-style server with these files; the lab itself is tested by the chaos suite
(FAILOVER_CHAOS_TLS=1)."""

from __future__ import annotations

import json
import os
import pwd
import ssl
import stat
import sys
from pathlib import Path

import pytest

from failover.cli import main
from failover.errors import UserError
from failover.lab import build
from failover.lab import postgres as lab_postgres
from failover.lab import state as lab
from failover.lab.launch import region_server
from failover.lab.postgres import DEBIAN_TLS_BINDIR, ServerTls, built_with_tls, tls_bindir
from failover.lab.unprivileged import RunAs
from failover.topology import HttpCheck, Topology, load_topology
from tests.support.skipping import skip_loudly

REGIONS = lab.lab_regions(3)


def _as(user: str) -> RunAs:
    entry = pwd.getpwnam(user)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=user)


def _lab_topology(lab_dir: Path, *, tls: bool, regions: dict[str, str] = REGIONS) -> Topology:
    key = lab_dir / "fleet.key"
    key.write_text("00" * 32 + "\n")
    tsig = lab_dir / "tsig.key"
    tsig.write_text('key "lab-key" { algorithm hmac-sha256; secret "AAAA"; };\n')
    return load_topology(build._write_topology(
        lab_dir, regions, key_file=key, tsig_file=tsig, tsig_name="lab-key",
        coordination={"backend": "peers"}, rejoin="auto", durability="async", sync_count=1,
        sync_strict=False, tls=tls))


@pytest.fixture
def issued(tmp_path: Path) -> dict[str, ServerTls]:
    """The lab's CA and certificates in `tmp_path`, each region's owned by `nobody` when we
    are root (who would hand them to the region's user), else by ourselves."""
    user = _as("nobody") if os.geteuid() == 0 else RunAs(uid=None, gid=None, name="me")
    return build.issue_tls(tmp_path, REGIONS, {name: user for name in REGIONS})


def test_each_region_gets_a_certificate_for_its_address_that_only_its_user_reads(
        tmp_path: Path, issued: dict[str, ServerTls]) -> None:
    from cryptography import x509

    ca = lab.lab_ca_file(tmp_path)
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644  # the regions' servers read it
    assert stat.S_IMODE(ca.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(ca.with_suffix(".key").stat().st_mode) == 0o600
    assert ca.with_suffix(".key").stat().st_uid == os.geteuid()
    authority = x509.load_pem_x509_certificate(ca.read_bytes())
    for name, address in REGIONS.items():
        files = issued[name]
        assert (files.cert_file, files.key_file) == lab.region_tls_files(tmp_path, name)
        assert files.ca_file == ca
        folder = files.cert_file.parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600  # as PostgreSQL wants it
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody").pw_uid
            assert {p.stat().st_uid for p in (folder, files.cert_file, files.key_file)} \
                == {nobody}
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [address]
        assert cert.issuer == authority.subject
        cert.verify_directly_issued_by(authority)
        # A lab may run for weeks of measurements.
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 300


def test_the_tls_topology_sets_every_field_and_the_controllers_can_build_its_contexts(
        tmp_path: Path, issued: dict[str, ServerTls]) -> None:
    topo = _lab_topology(tmp_path, tls=True)
    ca = lab.lab_ca_file(tmp_path)
    assert topo.fleet.api.ca_file == ca
    for name, address in REGIONS.items():
        region = topo.regions[name]
        assert region.controller_url == f"https://{address}:{lab.CONTROLLER_PORT}"
        assert region.serves_tls
        assert (region.api.cert_file, region.api.key_file) \
            == lab.region_tls_files(tmp_path, name)
        endpoint = region.postgres[lab.SERVICE]
        assert (endpoint.sslmode, endpoint.sslrootcert, endpoint.subscription_sslrootcert) \
            == ("verify-full", ca, ca)
        assert endpoint.tls_files() == {"sslrootcert": ca}
        health = next(c for c in region.checks if isinstance(c, HttpCheck))
        assert health.url == f"https://{address}:{lab.CONTROLLER_PORT}/healthz"
        assert health.ca_file == ca
        # What each controller builds at start: it serves its certificate and verifies peers.
        served = topo.api_server_tls(name)
        assert isinstance(served, ssl.SSLContext)
    client = topo.api_client_tls()
    assert client is not None and client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    # The subscriptions verify the writer with the CA, a path on the subscriber's host.
    writer, subscriber = (topo.regions[n].postgres[lab.SERVICE] for n in list(REGIONS)[:2])
    conninfo = writer.conninfo_for_subscriber(subscriber)
    assert "sslmode=verify-full" in conninfo and f"sslrootcert={ca}" in conninfo


def test_the_topology_without_tls_names_no_tls_at_all(tmp_path: Path) -> None:
    topo = _lab_topology(tmp_path, tls=False)
    assert topo.fleet.api.ca_file is None
    assert topo.api_client_tls() is None
    for name, address in REGIONS.items():
        region = topo.regions[name]
        assert region.controller_url == f"http://{address}:{lab.CONTROLLER_PORT}"
        assert (region.api.cert_file, region.api.key_file) == (None, None)
        endpoint = region.postgres[lab.SERVICE]
        assert (endpoint.sslmode, endpoint.sslrootcert, endpoint.subscription_sslrootcert) \
            == (None, None, None)
    text = "".join(p.read_text() for p in (tmp_path / "topology").glob("*.toml"))
    assert "ssl" not in text and "https" not in text and "[api]" not in text


def _lab_json(lab_dir: Path, *, tls: bool | None, bindir: str | None = None) -> lab.LabState:
    """A lab.json as `lab up` writes it, without `tls` and `pg_bindir` when None (a file
    from before them)."""
    region = {"name": "us-east-1", "address": "127.0.1.1", "pg_port": lab.PG_PORT,
              "data_dir": str(lab_dir / "pg" / "us-east-1" / "data"), "postmaster_pid": None,
              "controller_url": "http://127.0.1.1:8700", "controller_pid": None,
              "user": "root"}
    data = {"dir": str(lab_dir), "topology": str(lab_dir / "topology"),
            "coordination": "peers", "pg_version": 18, "regions": [region],
            "dns": {"address": lab.DNS_ADDRESS, "port": lab.DNS_PORT, "zone": lab.ZONE,
                    "key_file": "/nonexistent", "pid": None},
            "service": {"name": lab.SERVICE, "database": lab.SERVICE,
                        "writer_record": lab.WRITER_RECORD, "reader_record": lab.READER_RECORD,
                        "ttl": lab.TTL, "app_role": lab.APP_ROLE}}
    if tls is not None:
        data["tls"] = tls
    if bindir is not None:
        data["pg_bindir"] = bindir
    lab.lab_file(lab_dir).write_text(json.dumps(data))
    return lab.load(lab_dir)


def test_a_lab_json_from_before_tls_loads_as_a_lab_without_it(tmp_path: Path) -> None:
    state = _lab_json(tmp_path, tls=None)
    assert "tls" not in lab.lab_file(tmp_path).read_text()
    assert state.tls is False
    assert state.pg_bindir is None
    assert (state.ca_file(), state.api_tls(), state.pg_tls()) == (None, None, {})
    # Its servers are started again with the binaries found as `lab up` found them.
    server = region_server(state, "us-east-1")
    assert server.bindir == lab_postgres.pg_bindir()
    assert server.tls is None


def test_a_tls_lab_json_gives_its_clients_the_lab_ca(
        tmp_path: Path, issued: dict[str, ServerTls]) -> None:
    state = _lab_json(tmp_path, tls=True, bindir=str(lab_postgres.pg_bindir()))
    ca = lab.lab_ca_file(tmp_path)
    assert state.ca_file() == ca
    assert state.pg_tls() == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    context = state.api_tls()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    # A fault restarts the region's server with the binaries and the TLS files of `lab up`,
    # and waits for it over verified TLS.
    server = region_server(state, "us-east-1")
    assert server.bindir == lab_postgres.pg_bindir()
    assert server.tls == issued["us-east-1"]
    assert "sslmode=verify-full" in server.conninfo()


def _no_tls_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FAILOVER_PG_BINDIR", raising=False)
    monkeypatch.setattr(lab_postgres, "DEBIAN_TLS_BINDIR", tmp_path / "no-postgresql-15" / "bin")


def test_without_a_postgresql_built_with_tls_lab_up_tls_exits_2_before_starting_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _no_tls_postgres(monkeypatch, tmp_path)

    def started() -> Path:
        raise AssertionError("lab up went past the --tls check: it would start servers")

    monkeypatch.setattr(build, "pg_bindir", started)
    monkeypatch.setattr(build, "is_up", started)  # not even the lab's folder is read
    monkeypatch.setattr(sys, "argv", ["failover", "lab", "up", "--tls",
                                      "--dir", str(tmp_path / "lab")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--tls: " in err
    assert "apt-get install postgresql-15" in err and "FAILOVER_PG_BINDIR" in err
    assert not (tmp_path / "lab").exists()


def test_a_configured_postgresql_without_tls_is_refused_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = lab_postgres.pg_bindir()
    if built_with_tls(embedded):
        skip_loudly("the refusal of binaries without TLS", f"{embedded} is built with TLS")
    monkeypatch.setenv("FAILOVER_PG_BINDIR", str(embedded))
    with pytest.raises(UserError, match=r"^--tls: the PostgreSQL in FAILOVER_PG_BINDIR") as refused:
        build.up(tmp_path / "lab", tls=True, progress=lambda message: None)
    assert "built without TLS" in str(refused.value)
    assert not (tmp_path / "lab").exists()


def test_lab_up_tls_takes_debians_postgresql_15_when_nothing_is_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_PG_BINDIR", raising=False)
    if not (DEBIAN_TLS_BINDIR / "postgres").exists():
        skip_loudly("lab up --tls's binaries", f"no {DEBIAN_TLS_BINDIR} (scripts/setup.sh "
                    "installs Debian's PostgreSQL 15)")
    assert tls_bindir() == DEBIAN_TLS_BINDIR


def test_without_cryptography_lab_up_tls_says_which_extra_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = build.importlib.util.find_spec
    monkeypatch.setattr(build.importlib.util, "find_spec",
                        lambda name, *args: None if name == "cryptography" else real(name, *args))
    with pytest.raises(UserError, match=r"^--tls: .*`cryptography`.*`lab` extra"):
        build.up(tmp_path / "lab", tls=True, progress=lambda message: None)
    assert not (tmp_path / "lab").exists()
