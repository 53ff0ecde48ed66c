"""`failover check` as a user runs it: a subprocess against a topology of real loopback servers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopback import LoopbackBlock, allocate_block
from tests.support.pg import SERVICE, ServiceDb

pytestmark = pytest.mark.integration

FAILOVER = str(Path(sys.executable).with_name("failover"))

# Timings the checks below (every 2 s, unhealthy after 3) can work with: observations
# valid at most the 6 s detection time, a lease (2 s + 2 s) longer than 2 s + a 1 s exchange.
FLEET = """
name = "probe-test"
observation_max_age = "3s"
self_fence_after = "2s"
"""


@dataclass
class Servers:
    block: LoopbackBlock
    http_url: str
    tcp_host: str
    tcp_port: int


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """A real HTTP server (another process) and a listening TCP port."""
    block = allocate_block()
    host = block.address(1)
    web = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", host, "8080"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=tempfile.gettempdir())
    listener = socket.socket()
    listener.bind((block.address(2), 6432))
    listener.listen(64)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((host, 8080), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise
                time.sleep(0.05)
        yield Servers(block, f"http://{host}:8080/", block.address(2), 6432)
    finally:
        listener.close()
        web.terminate()
        web.wait(timeout=10)


def region_toml(name: str, address: str, checks: str, postgres: str = "") -> str:
    return (f'name = "{name}"\ncontroller_url = "http://{address}:8700"\n'
            f'address = "{address}"\n{postgres}\n{checks}')


def check_toml(name: str, kind: str, **fields: Any) -> str:
    lines = [f'[[checks]]\nname = "{name}"\nkind = "{kind}"\ninterval = "2s"\ntimeout = "1s"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def write_topology(folder: Path, fleet: str, regions: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "fleet.toml").write_text(fleet)
    for name, text in regions.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def failover_check(topology: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FAILOVER, "check", "--topology", str(topology), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def unwrapped(text: str) -> str:
    # Rich wraps error lines at the terminal width (80 columns in a subprocess).
    return text.replace("\n", "")


def test_all_healthy_exits_0_with_a_table(tmp_path: Path, servers: Servers) -> None:
    checks = (check_toml("web", "http", url=servers.http_url)
              + check_toml("bouncer", "tcp", host=servers.tcp_host, port=servers.tcp_port)
              + check_toml("script", "command", argv=["true"], purpose="info"))
    topology = write_topology(tmp_path / "topo", FLEET, {
        "alpha": region_toml("alpha", servers.block.address(1), checks)})

    done = failover_check(topology)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in ("alpha", "web", "bouncer", "script", "healthy", "HTTP 200", "connected",
                 "exit 0"):
        assert text in done.stdout
    assert "unhealthy" not in done.stdout


def test_any_failing_check_exits_3_and_json_says_which_and_why(tmp_path: Path,
                                                               servers: Servers) -> None:
    dead = servers.block.address(9)  # nothing listens there
    topology = write_topology(tmp_path / "topo", FLEET, {
        "alpha": region_toml("alpha", servers.block.address(1),
                             check_toml("web", "http", url=servers.http_url)),
        "bravo": region_toml("bravo", dead, check_toml("bouncer", "tcp", host=dead, port=6432)
                             + check_toml("script", "command", argv=["sh", "-c", "exit 4"],
                                          purpose="readiness")),
    })

    done = failover_check(topology, "--json")
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["healthy"] is False
    rows = {(row["region"], row["check"]): row for row in report["checks"]}
    assert rows.keys() == {("alpha", "web"), ("bravo", "bouncer"), ("bravo", "script")}
    assert rows[("alpha", "web")]["state"] == "healthy"
    assert rows[("alpha", "web")]["details"] == {"status": 200}
    assert rows[("bravo", "bouncer")] | {"latency_ms": 0} == {
        "region": "bravo", "check": "bouncer", "kind": "tcp", "purpose": "liveness",
        "state": "unhealthy", "latency_ms": 0, "reason": "connection refused", "details": {},
        "conclusive": True}
    assert rows[("bravo", "script")]["reason"] == "exit 4"
    assert rows[("bravo", "script")]["purpose"] == "readiness"


def test_postgres_checks_read_the_endpoints_of_the_topology(tmp_path: Path,
                                                           service_db: ServiceDb) -> None:
    regions = {}
    for region in ("alpha", "bravo"):
        server = service_db.server(region)
        postgres = (f'[postgres.{SERVICE}]\nhost = "{server.host}"\nport = {server.port}\n'
                    f'dbname = "{service_db.dbname}"\nuser = "postgres"\n')
        regions[region] = region_toml(region, server.host,
                                      check_toml("db", "postgres", service=SERVICE), postgres)
    fleet = FLEET + (f'\n[[services]]\nname = "{SERVICE}"\ndatabase = "{service_db.dbname}"\n'
                     'writer_record = "shop.lab.test."\n')
    topology = write_topology(tmp_path / "topo", fleet, regions)

    done = failover_check(topology, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["checks"]
    assert [(row["region"], row["state"], row["details"]["role"]) for row in rows] == [
        ("alpha", "healthy", "unknown"), ("bravo", "healthy", "unknown")]
    assert rows[0]["details"]["endpoint"].endswith(f"/{service_db.dbname}")


def test_a_bad_topology_exits_2_naming_the_file_and_field(tmp_path: Path) -> None:
    checks = check_toml("web", "http", url="ftp://nowhere") + check_toml("web", "tcp", host="h",
                                                                         port=1)
    topology = write_topology(tmp_path / "topo", FLEET, {
        "alpha": region_toml("alpha", "127.0.0.1", checks)})

    done = failover_check(topology)
    assert done.returncode == 2
    assert f"{topology / 'alpha.toml'}: checks[0].url" in unwrapped(done.stderr)
    assert "Traceback" not in done.stderr


def test_two_checks_with_one_name_exit_2(tmp_path: Path) -> None:
    checks = check_toml("port", "tcp", host="h", port=1) + check_toml("port", "tcp", host="h",
                                                                      port=2)
    topology = write_topology(tmp_path / "topo", FLEET, {
        "alpha": region_toml("alpha", "127.0.0.1", checks)})

    done = failover_check(topology)
    assert done.returncode == 2
    assert (f"{topology / 'alpha.toml'}: checks[1].name: 'port' is used twice in region "
            "'alpha'") in unwrapped(done.stderr)
