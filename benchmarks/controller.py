"""CPU and memory of one controller holding 200 services x 5 regions, 1 s checks.

Target (issue 5): under 25 % of one core and under 150 MB RSS.

The endpoints are real HTTP servers on loopback, one per region address, in a
separate process so that their CPU is not counted. Every (service, region) has
its own check (1,000 probes a second). The controller of r1 runs as the real
`failover controller run` process; the other four controllers are absent, so
its exchanges fail fast and it decides without a quorum, as a controller cut
off from its peers would (the engine still evaluates every service each tick).
Reported over the window after the warm-up: CPU share, peak RSS, and the probes
the controller ran per second (from its own /metrics), so that a controller
that fell behind cannot look cheap.

With `--fast-interval 0.2` every check falls fast (issue 16): after a failure it probes
again 0.2 s later. `--fail-share 0.2` makes the endpoints answer 503 to that share of
requests, at random, so that checks keep entering the fast cadence: the cost of fast
re-probing while things go wrong, not only when all is well.

Run: .venv/bin/python benchmarks/controller.py [--services 200] [--seconds 60]
     [--fast-interval 0.2] [--fail-share 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import tomli_w

REGIONS = [f"r{i}" for i in range(1, 6)]
ADDRESS = {region: f"127.77.{i}.1" for i, region in enumerate(REGIONS, 1)}
HTTP_PORT, API_PORT = 18080, 18700

SERVER = """
import asyncio, random, sys
from aiohttp import web
FAIL = float(sys.argv[2])
async def ok(request):
    return web.Response(status=503 if random.random() < FAIL else 200, text="ok")
async def main():
    app = web.Application(); app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    for host in sys.argv[3:]:
        await web.TCPSite(runner, host, int(sys.argv[1])).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def write_topology(folder: Path, services: int, key_file: Path,
                   fast_interval: float | None) -> None:
    # Falling fast shortens detection (1 s + 2 x fast_interval): the loader wants the fleet's
    # observation age within it, so the exchange quickens with it.
    max_age, exchange = ("1s", "500ms") if fast_interval else ("3s", "1s")
    fleet = {
        "name": "bench", "observation_max_age": max_age, "self_fence_after": "1s",
        "coordination": {"key_file": str(key_file), "exchange_interval": exchange},
        "services": [{"name": f"s{n}", "database": f"s{n}", "writer_record": f"s{n}.bench.test.",
                      "ttl": 5} for n in range(services)],
    }
    (folder / "fleet.toml").write_text(tomli_w.dumps(fleet))
    for region in REGIONS:
        address = ADDRESS[region]
        doc = {
            "name": region, "priority": 10, "address": address,
            "controller_url": f"http://{address}:{API_PORT}",
            "postgres": {f"s{n}": {"host": address, "dbname": f"s{n}", "user": "bench"}
                         for n in range(services)},
            "checks": [{"name": f"s{n}", "kind": "http",
                        "url": f"http://{address}:{HTTP_PORT}/s{n}", "interval": "1s",
                        "timeout": "500ms",
                        **({"fast_interval": fast_interval} if fast_interval else {})}
                       for n in range(services)],
        }
        (folder / f"{region}.toml").write_text(tomli_w.dumps(doc))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probes_run() -> float:
    """Probes the controller has run so far, from its /metrics."""
    with urllib.request.urlopen(f"http://{ADDRESS['r1']}:{API_PORT}/metrics", timeout=10) as page:
        text = page.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("failover_probe_latency_seconds_count"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--fast-interval", type=float, default=None)
    parser.add_argument("--fail-share", type=float, default=0.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key = root / "fleet.key"
        key.write_text(secrets.token_hex(32))
        topo = root / "topology"
        topo.mkdir()
        write_topology(topo, args.services, key, args.fast_interval)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(HTTP_PORT),
                                   str(args.fail_share), *ADDRESS.values()])
        log = root / "controller.log"
        with log.open("wb") as stderr:
            controller = subprocess.Popen(
                [sys.executable, "-m", "failover", "controller", "run", "--topology", str(topo),
                 "--region", "r1", "--state-dir", str(root / "state"), "--log-level",
                 "WARNING"], stderr=stderr)
        try:
            time.sleep(args.warmup)
            if controller.poll() is not None:
                raise SystemExit(f"the controller exited with {controller.returncode}:\n"
                                 + log.read_text()[-2000:])
            probes0 = probes_run()
            cpu0, wall0 = cpu_seconds(controller.pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - wall0 < args.seconds:
                time.sleep(1)
                peak = max(peak, rss_mb(controller.pid))
            window = time.monotonic() - wall0
            cpu = (cpu_seconds(controller.pid) - cpu0) / window
            probes = probes_run() - probes0
        finally:
            controller.terminate()
            controller.wait(timeout=30)
            server.terminate()
            server.wait(timeout=10)
    result = {"services": args.services, "regions": len(REGIONS),
              "checks": args.services * len(REGIONS), "seconds": args.seconds,
              "cpu_share_of_one_core": round(cpu, 3), "peak_rss_mb": round(peak, 1),
              "probes_per_s": round(probes / window, 1),
              "fast_interval": args.fast_interval, "fail_share": args.fail_share,
              "targets": {"cpu_share_of_one_core": 0.25, "peak_rss_mb": 150}}
    print(json.dumps(result, indent=2))
    return 0 if cpu < 0.25 and peak < 150 else 1


if __name__ == "__main__":
    raise SystemExit(main())
