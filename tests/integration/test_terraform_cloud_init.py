"""The region module's user data: a cloud-config that cloud-init accepts, whose scripts pass
shellcheck, that names its secrets and never holds them, and whose PostgreSQL settings
work on a real server: TLS and a password for every login over TCP.

The template is rendered by terraform itself; the files it writes are used as they are
(postgresql.conf included into a fresh server's configuration, pg_hba.conf replacing the
server's, the controller's role made by its SQL), so that a misspelt setting or a
malformed rule fails here instead of on a region's first boot. What that role may do is
proven in test_terraform_controller_role.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from failover.lab.pki import key_and_cert, pem
from failover.lab.postgres import PgServer, init_server
from tests.support.cloud_init import (
    TEMPLATE_VARIABLES,
    assert_scripts_pass_shellcheck,
    assert_valid_cloud_config,
    render_user_data,
    written_files,
)
from tests.support.loopback import allocate_block
from tests.support.pg import tls_bindir
from tests.support.terraform import REPO_TERRAFORM, require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.terraform, pytest.mark.timeout(600)]

PASSWORD = "cloud-init-test-password"  # a throwaway test server's
MODULE = REPO_TERRAFORM / "modules" / "region"


@pytest.fixture(scope="module")
def host() -> str:
    return allocate_block().address(1)


@pytest.fixture(scope="module")
def user_data(tmp_path_factory: pytest.TempPathFactory, host: str) -> str:
    terraform = require_terraform(tmp_path_factory.mktemp("cloud-init"))
    return render_user_data(terraform, controller_cidrs=[f"{host}/32", "10.20.0.0/16"])


def test_user_data_is_a_valid_cloud_config(user_data: str, tmp_path: Path) -> None:
    assert_valid_cloud_config(user_data, tmp_path)


def test_its_scripts_pass_shellcheck(user_data: str) -> None:
    assert assert_scripts_pass_shellcheck(user_data) == ["/usr/local/sbin/failover-region-setup"]


def test_it_carries_the_module_files_as_they_are_and_names_its_secrets(user_data: str) -> None:
    files = written_files(user_data)
    for path, source in (("/usr/local/sbin/failover-region-setup", "failover-region-setup.sh"),
                         ("/etc/failover/postgres/controller-role.sql", "controller-role.sql"),
                         ("/etc/failover/postgres/controller-grants.sql",
                          "controller-grants.sql")):
        assert files[path] == (MODULE / source).read_text(), f"{path} differs from {source}"
    settings = files["/etc/failover/region-setup.env"].splitlines()
    assert settings == [
        "REGION_NAME='us-east-1'", "AWS_REGION_NAME='us-east-1'",
        "WHEEL_URL='s3://failover-artifacts/failover-0.1.0-py3-none-any.whl'",
        "CONTROLLER_ROLE='failover'", "DATABASES='orders'",
        "PASSWORD_PARAMETER='/failover/postgres-password'",
        "FLEET_KEY_PARAMETER='/failover/fleet-key'",
        "TLS_CERTIFICATE_PARAMETER='/failover/postgres-tls-certificate'",
        "TLS_KEY_PARAMETER='/failover/postgres-tls-key'",
        "TLS_CA_PARAMETER='/failover/postgres-tls-ca'",
        "POSTGRES_SSLMODE='verify-ca'",
        "TOPOLOGY_PARAMETER='/failover/topology'"]


def test_without_a_ca_the_host_is_told_to_require_tls_unchecked(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    terraform = require_terraform(tmp_path_factory.mktemp("cloud-init-require"))
    parameters = {**TEMPLATE_VARIABLES["parameters"], "tls_ca": None}
    user_data = render_user_data(terraform, parameters=parameters, postgres_sslmode="require")
    settings = written_files(user_data)["/etc/failover/region-setup.env"].splitlines()
    assert "TLS_CA_PARAMETER=''" in settings
    assert "POSTGRES_SSLMODE='require'" in settings


def psql(server: PgServer, *args: str, env: dict[str, str] | None = None) -> None:
    """The server's own psql as its superuser, stopping at the first error."""
    done = subprocess.run(
        [str(server.bindir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", server.host,
         "-p", str(server.port), "-U", "postgres", *args],
        env={**os.environ, **(env or {})}, check=False, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, f"psql {args}: {done.stdout}{done.stderr}"


def use_user_data_files(server: PgServer, files: dict[str, str], workdir: Path) -> None:
    """What failover-region-setup does to a fresh server, with the user data's own files:
    its settings and a certificate, the controller's role, a database, its rules."""
    config_dir = server.datadir.parent / "failover"
    config_dir.mkdir()
    (config_dir / "postgresql.conf").write_text(files["/etc/failover/postgresql.conf"])
    key, cert = pem(*key_and_cert("region", issuer=None, addresses=[server.host]))
    (config_dir / "server.key").write_text(key)
    (config_dir / "server.key").chmod(0o600)
    (config_dir / "server.crt").write_text(cert)
    server.run_as.chown(config_dir)
    with (server.datadir / "postgresql.conf").open("a") as conf:
        conf.write(f"include '{config_dir / 'postgresql.conf'}'\n"
                   # The host's paths for the certificate are not this machine's.
                   f"ssl_cert_file = '{config_dir / 'server.crt'}'\n"
                   f"ssl_key_file = '{config_dir / 'server.key'}'\n"
                   # This machine is shared: stay on the test's own address and port.
                   f"listen_addresses = '{server.host}'\nport = {server.port}\n")
    server.start()
    role_sql = workdir / "controller-role.sql"
    role_sql.write_text(files["/etc/failover/postgres/controller-role.sql"])
    psql(server, "-v", "role=failover", "-f", str(role_sql),
         env={"FAILOVER_ROLE_PASSWORD": PASSWORD})
    with server.connect() as conn:  # the lab's trust rules, until the user data's replace them
        conn.execute("CREATE DATABASE orders OWNER failover")
        (server.datadir / "pg_hba.conf").write_text(files["/etc/failover/pg_hba.conf"])
        # The file as it is on disk, before it is loaded: a malformed rule shows here.
        errors = conn.execute("SELECT line_number, error FROM pg_hba_file_rules "
                              "WHERE error IS NOT NULL").fetchall()
        assert errors == []
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def server(user_data: str, host: str) -> Iterator[PgServer]:
    # The server runs unprivileged: pytest's temporary folders are root's alone.
    pg_root = Path(tempfile.mkdtemp(prefix="failover-cloud-init-"))
    try:
        pg = init_server(pg_root, "region", host,
                         bindir=tls_bindir("the region module's TLS settings"))
        try:
            use_user_data_files(pg, written_files(user_data), pg_root)
            yield pg
        finally:
            pg.stop()
    finally:
        shutil.rmtree(pg_root)


def test_settings_for_logical_replication_over_tls(server: PgServer) -> None:
    with psycopg.connect(server.conninfo("orders", "failover", password=PASSWORD)) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["wal_level", "track_commit_timestamp", "max_replication_slots",
              "max_wal_senders", "password_encryption", "ssl", "ssl_min_protocol_version"],)
        ).fetchall())
        tls = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert settings == {"wal_level": "logical", "track_commit_timestamp": "on",
                        "max_replication_slots": "20", "max_wal_senders": "20",
                        "password_encryption": "scram-sha-256", "ssl": "on",
                        "ssl_min_protocol_version": "TLSv1.2"}
    assert tls == (True,)


def test_hba_admits_only_the_failover_role_over_tls_with_its_password(server: PgServer) -> None:
    psycopg.connect(server.conninfo("orders", "failover", password=PASSWORD,
                                    sslmode="require")).close()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry.*no encryption"):
        psycopg.connect(server.conninfo("orders", "failover", password=PASSWORD,
                                        sslmode="disable")).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.conninfo("orders", "failover", password="wrong")).close()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(server.conninfo("orders", "postgres")).close()
