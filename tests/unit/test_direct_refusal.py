"""`--direct` refuses while controllers answer, unless --force: a change made from the CLI
would race them (a second promotion, a fence lifted under them)."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

TOPOLOGY = Path(__file__).resolve().parents[1] / "data" / "observations" / "topology"


class StatusOnly(http.server.BaseHTTPRequestHandler):
    """Answers /v1/status the way a running controller does, and nothing else."""

    def do_GET(self) -> None:
        body = json.dumps({"region": "west", "has_quorum": True, "executor": "west"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def topology_with_a_running_controller(tmp_path: Path) -> Iterator[Path]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StatusOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path / "topology"
    shutil.copytree(TOPOLOGY, folder)
    # Only west's controller runs (this server); east's and south's point at a closed port
    # (each its own: controller URLs are unique), away from the lab's addresses, which a lab
    # running beside the tests may answer on.
    urls = {"west": f"http://127.0.0.1:{server.server_address[1]}",
            "east": "http://127.0.0.1:9", "south": "http://127.0.0.2:9"}
    for region, url in urls.items():
        path = folder / f"{region}.toml"
        lines = [f'controller_url = "{url}"' if line.startswith("controller_url") else line
                 for line in path.read_text().splitlines()]
        path.write_text("\n".join(lines) + "\n")
    try:
        yield folder
    finally:
        server.shutdown()


def failover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "failover", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_direct_is_refused_while_a_controller_answers(
        topology_with_a_running_controller: Path) -> None:
    topo = str(topology_with_a_running_controller)
    refused = failover("fence", "east", "-t", topo, "--yes", "--direct")
    assert refused.returncode == 2, refused.stderr
    assert "--direct: the controllers of west are running" in refused.stderr
    assert "--force" in refused.stderr
    promote = failover("promote", "orders", "west", "-t", topo, "--yes", "--direct")
    assert promote.returncode == 2 and "controllers of west" in promote.stderr
    # --force goes past the check (and then fails on the databases, which do not run here).
    forced = failover("fence", "east", "-t", topo, "--yes", "--direct", "--force")
    assert "controllers of west" not in forced.stderr
