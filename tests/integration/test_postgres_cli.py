"""The `failover db|promote|switchover|fence|unfence` verbs, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from failover.postgres.inspect import inspect_node
from tests.support.pg import SERVICE, ServiceDb, write_topology

pytestmark = pytest.mark.integration


def failover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "failover", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def role(sdb: ServiceDb, region: str) -> str:
    with sdb.admin(region) as conn:
        return inspect_node(conn, SERVICE).role


def test_cli_verbs(service_db: ServiceDb, tmp_path: Path) -> None:
    topo = str(write_topology(service_db, tmp_path / "topo"))

    installed = failover("db", "install", "-t", topo, "--yes", "--json")
    assert installed.returncode == 0, installed.stderr
    assert {s["detail"] for s in json.loads(installed.stdout)["steps"]} == {"already up to date"}
    # Through a Unix socket only this host's region can be reached.
    for regions in ([], ["--region", "alpha", "--region", "bravo"]):
        local = failover("db", "install", "-t", topo, *regions, "--socket-dir", "/run/postgresql",
                         "--yes")
        assert local.returncode == 2
        assert "name its one region with --region" in " ".join(local.stderr.split())

    replicated = failover("db", "replicate", SERVICE, "-t", topo, "--writer", "alpha", "--yes")
    assert replicated.returncode == 0, replicated.stderr
    assert "subscribe charlie to alpha" in replicated.stdout
    for region in ("bravo", "charlie"):
        service_db.wait_synced(region)
    service_db.start_heartbeat("alpha")
    for region in ("bravo", "charlie"):
        service_db.wait_heartbeat(region, "alpha")

    dry = failover("switchover", SERVICE, "bravo", "-t", topo, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert 'ALTER ROLE "app" NOLOGIN' in dry.stdout
    assert 'CREATE SUBSCRIPTION "failover_shop" CONNECTION' in dry.stdout
    assert role(service_db, "bravo") == "subscriber"  # a dry run changes nothing

    unconfirmed = failover("switchover", SERVICE, "bravo", "-t", topo)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    bad_timeout = failover("switchover", SERVICE, "bravo", "-t", topo, "--timeout", "soon")
    assert bad_timeout.returncode == 2 and "--timeout" in bad_timeout.stderr
    unknown = failover("fence", "nowhere", "-t", topo, "--yes")
    assert unknown.returncode == 2 and "no region 'nowhere'" in unknown.stderr
    not_a_subscriber = failover("switchover", SERVICE, "alpha", "-t", topo, "--yes", "--direct")
    assert not_a_subscriber.returncode == 2 and "REGION" in not_a_subscriber.stderr

    no_fleet = failover("fence", "charlie", "-t", topo, "--yes")
    assert no_fleet.returncode == 1 and "--direct" in no_fleet.stderr  # no controller runs

    moved = failover("switchover", SERVICE, "bravo", "-t", topo, "--yes", "--json", "--direct")
    assert moved.returncode == 0, moved.stderr
    document = json.loads(moved.stdout)
    assert (document["old_primary"], document["target"]) == ("alpha", "bravo")
    assert (role(service_db, "bravo"), role(service_db, "alpha")) == ("primary", "subscriber")

    fenced = failover("fence", "charlie", "-t", topo, "--yes", "--direct")
    assert fenced.returncode == 0, fenced.stderr
    with service_db.admin("charlie") as conn:
        assert inspect_node(conn, SERVICE).fenced
    unfenced = failover("unfence", "charlie", "-t", topo, "--yes", "--direct")
    assert unfenced.returncode == 0, unfenced.stderr
    with service_db.admin("charlie") as conn:
        charlie = inspect_node(conn, SERVICE)
    assert not charlie.fenced and charlie.database_read_only  # a subscriber stays read-only
