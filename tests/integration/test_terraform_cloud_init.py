"""The PostgreSQL settings the region module's cloud-init writes work on a real server.

The template is rendered by terraform itself; its postgresql.conf is included
into a fresh server's configuration and its pg_hba.conf replaces the server's,
so a misspelt setting or a malformed rule fails here instead of on a
region's first boot.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from failover.lab.postgres import PgServer, init_server
from tests.support.loopback import allocate_block
from tests.support.terraform import Terraform, require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.terraform, pytest.mark.timeout(600)]

PASSWORD = "cloud-init-test-password"  # a throwaway test server's


def render(terraform: Terraform, variables: dict[str, Any]) -> dict[str, str]:
    """path -> content of every file the cloud-init config writes."""
    expression = (f'templatefile("modules/region/cloud-init.yaml.tftpl", '
                  f"jsondecode({json.dumps(json.dumps(variables))}))")
    done = terraform.run(".", "console", input_text=expression)
    text = done.stdout.strip()
    assert text.startswith("<<EOT") and text.endswith("EOT"), text
    config = yaml.safe_load(text.removeprefix("<<EOT").removesuffix("EOT"))
    return {entry["path"]: entry["content"] for entry in config["write_files"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    workdir = tmp_path_factory.mktemp("cloud-init")
    terraform = require_terraform(workdir)
    host = allocate_block().address(1)
    files = render(terraform, {
        "postgres_major_version": 16, "postgres_port": 5432, "postgres_user": "failover",
        "password_parameter": "/failover/postgres-password", "aws_region": "us-east-1",
        "databases": ["orders"], "controller_cidrs": [f"{host}/32", "10.20.0.0/16"],
        "client_cidrs": [],
    })
    # The server runs unprivileged: pytest's temporary folders are root's alone.
    pg_root = Path(tempfile.mkdtemp(prefix="failover-cloud-init-"))
    try:
        pg = init_server(pg_root, "region", host)
        include_cloud_init_settings(pg, files["/etc/failover/postgresql.conf"])
        pg.start()
        try:
            with pg.connect() as conn:  # the lab's trust rules, until cloud-init's replace them
                conn.execute("CREATE ROLE failover LOGIN SUPERUSER REPLICATION "
                             f"PASSWORD '{PASSWORD}'")
                conn.execute("CREATE DATABASE orders OWNER failover")
            (pg.datadir / "pg_hba.conf").write_text(files["/etc/failover/pg_hba.conf"])
            with pg.connect() as conn:
                conn.execute("SELECT pg_reload_conf()")
            yield pg
        finally:
            pg.stop()
    finally:
        shutil.rmtree(pg_root)


def include_cloud_init_settings(pg: PgServer, settings: str) -> None:
    """Include the file as cloud-init does, then keep the server on the test's address."""
    config_dir = pg.datadir.parent / "failover"
    config_dir.mkdir()
    (config_dir / "postgresql.conf").write_text(settings)
    pg.run_as.chown(config_dir)
    with (pg.datadir / "postgresql.conf").open("a") as conf:
        conf.write(f"include '{config_dir / 'postgresql.conf'}'\n"
                   # This machine is shared: stay on the test's own address and port.
                   f"listen_addresses = '{pg.host}'\nport = {pg.port}\n")


def test_settings_for_logical_replication(server: PgServer) -> None:
    with psycopg.connect(server.conninfo("orders", "failover", password=PASSWORD)) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["wal_level", "track_commit_timestamp", "max_replication_slots",
              "max_wal_senders", "password_encryption"],)).fetchall())
    assert settings == {"wal_level": "logical", "track_commit_timestamp": "on",
                        "max_replication_slots": "20", "max_wal_senders": "20",
                        "password_encryption": "scram-sha-256"}


def test_hba_admits_only_the_failover_role_with_its_password(server: PgServer) -> None:
    with psycopg.connect(server.conninfo("orders", "failover", password=PASSWORD)) as conn:
        errors = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
        assert errors.fetchone() == (0,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.conninfo("orders", "failover", password="wrong")).close()
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(server.conninfo("orders", "postgres")).close()
