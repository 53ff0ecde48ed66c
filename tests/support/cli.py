"""The `failover` command run in this process, as the console script runs it (`main`), and
a topology folder whose every address is a closed port on loopback.

No pytest fixture is involved, so that hypothesis can run the command many times in one
test. The quiet topology keeps commands that reach for controllers or databases away from
the lab's fixed addresses, which a lab running beside the tests may answer on.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from failover.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "observations"
SAMPLE_TOPOLOGY = DATA / "topology"
EAST_DOWN = DATA / "east-down.json"
# One closed port per region (controller URLs and addresses must differ between regions):
# port 9 is discard, which nothing on a test host serves.
CLOSED = {"east": "127.0.0.1", "south": "127.0.0.2", "west": "127.0.0.3"}


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str  # with whitespace runs folded into one space: Rich wraps long lines

    @property
    def output(self) -> str:
        return self.out + self.err


def invoke(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """`failover ARGS` with `env` added to the environment; stdin is never a terminal."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with (mock.patch.object(sys, "argv", ["failover", *args]),
          mock.patch.dict(os.environ, {"COLUMNS": "200", **(env or {})}),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            main()
        except SystemExit as exited:
            code = exited.code
    assert isinstance(code, int), f"exit code {code!r}"
    return Outcome(code, out.getvalue(), " ".join(err.getvalue().split()))


def quiet_topology(folder: Path) -> Path:
    """A copy of the sample topology (tests/data/observations) with every controller,
    database and check on a closed port of its own loopback address."""
    shutil.copytree(SAMPLE_TOPOLOGY, folder)
    for region, address in CLOSED.items():
        path = folder / f"{region}.toml"
        replaced = {"controller_url": f'controller_url = "http://{address}:9"',
                    "address": f'address = "{address}"',
                    # a database's (port 5432 unless said) or a check's
                    "host": f'host = "{address}"\nport = 9'}
        lines = []
        for line in path.read_text().splitlines():
            key = line.split("=")[0].strip()
            if key != "port":  # a check's: set with its host
                lines.append(replaced.get(key, line))
        path.write_text("\n".join(lines) + "\n")
    return folder


class StatusOnly(http.server.BaseHTTPRequestHandler):
    """Answers /v1/status the way a running controller of `region` does, and nothing else."""

    region = ""

    def do_GET(self) -> None:
        body = json.dumps({"region": self.region, "has_quorum": True,
                           "executor": self.region}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def controller_answering(folder: Path, region: str) -> Iterator[None]:
    """While inside, `region`'s controller answers /v1/status (and only that): a server on
    a free port, which `region`'s file in the topology `folder` names as its controller."""
    handler = type("StatusOf" + region.capitalize(), (StatusOnly,), {"region": region})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = folder / f"{region}.toml"
    path.write_text("\n".join(
        f'controller_url = "http://127.0.0.1:{server.server_address[1]}"'
        if line.startswith("controller_url") else line
        for line in path.read_text().splitlines()) + "\n")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
