"""Probe scheduler throughput: 1,000 HTTP and TCP endpoints plus PostgreSQL, on one core.

    .venv/bin/python benchmarks/probes.py [--endpoints 1000] [--postgres 20]
        [--interval 1] [--duration 30] [--warmup 5] [--no-gc-freeze] [--json]

The endpoints (half HTTP, half TCP, each its own port on a loopback block)
are served by a separate process pinned to the other core, so their CPU is
not counted against the scheduler; the PostgreSQL server (embedded wheel,
`failover` schema installed) is pinned there too. The scheduler process is
pinned to core 0 and runs the real ProbeScheduler over real probes: HTTP on
a kept connection per check, TCP connects, PostgreSQL on kept sessions.

Reported over the measuring window (after the warm-up): probes per second,
start delay (actual start minus scheduled time) median and p99, failed
probes, and the scheduler process's CPU. Targets: >= 1,000 probes/s with
p99 start delay < 100 ms on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEDULER_CORE = 0
SERVER_CORE = 1
HTTP_PORT_BASE = 20000
TCP_PORT_BASE = 30000
SERVICE = "bench"


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin(pid: int, core: int) -> None:
    if core < (os.cpu_count() or 1):
        os.sched_setaffinity(pid, {core})


# ---------------------------------------------------------------- the endpoints process


async def _serve(http_host: str, tcp_host: str, count: int) -> None:
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    http_count = count // 2
    for index in range(http_count):
        await web.TCPSite(runner, http_host, HTTP_PORT_BASE + index, backlog=128).start()
    servers = [await asyncio.start_server(close_at_once, tcp_host, TCP_PORT_BASE + index)
               for index in range(count - http_count)]
    print("ready", flush=True)
    # Serve until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()
    await runner.cleanup()


def serve_main(args: argparse.Namespace) -> None:
    _raise_fd_limit()
    _pin(0, SERVER_CORE)
    asyncio.run(_serve(args.http_host, args.tcp_host, args.endpoints))


# ---------------------------------------------------------------- the scheduler process


def _start_endpoints(http_host: str, tcp_host: str, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", "--http-host", http_host, "--tcp-host", tcp_host,
         "--endpoints", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise SystemExit(f"the endpoint server did not start: {line!r}")
    return process


def _start_postgres(root: Path, host: str) -> tuple[Any, Any]:
    from failover.lab.postgres import init_server
    from failover.postgres.connection import connect
    from failover.postgres.schema import install
    from failover.topology import PostgresEndpoint

    server = init_server(root, "bench", host, durable=False)
    server.start()
    assert server.pid is not None
    _pin(server.pid, SERVER_CORE)  # backends forked from now on inherit it
    with server.connect() as conn:
        conn.execute(f"CREATE DATABASE {SERVICE}")
    with connect(server.conninfo(SERVICE)) as conn:
        install(conn, SERVICE, "bench")
        conn.execute("UPDATE failover.node_state SET role = 'primary', epoch = 1")
    endpoint = PostgresEndpoint(host=host, port=server.port, dbname=SERVICE, user="postgres")
    return server, endpoint


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of another process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _GcPauses:
    """How long each cyclic garbage collection held the event loop."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def _waited_for_cpu() -> float:
    """Seconds this process's threads were runnable but waiting for a CPU (other
    processes on the core), from /proc/self/task/*/schedstat."""
    return sum(int((task / "schedstat").read_text().split()[1])
               for task in Path("/proc/self/task").iterdir()) / 1e9


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure(args: argparse.Namespace, http_host: str, tcp_host: str,
                   endpoint: Any, server_pids: list[int]) -> dict[str, Any]:
    from failover.health.http import HttpProbe
    from failover.health.postgres import PostgresProbe
    from failover.health.probe import Probe
    from failover.health.scheduler import ProbeScheduler
    from failover.health.targets import ProbeTarget
    from failover.health.tcp import TcpProbe
    from failover.topology import HttpCheck, PostgresCheck, Service, TcpCheck

    timing = {"interval": args.interval, "timeout": args.interval / 2}
    targets: list[ProbeTarget] = []
    http_count = args.endpoints // 2
    for index in range(args.endpoints):
        probe: Probe
        if index < http_count:
            http = HttpCheck(kind="http", name=f"http-{index}",
                             url=f"http://{http_host}:{HTTP_PORT_BASE + index}/healthz", **timing)
            check: Any = http
            probe = HttpProbe(http)
        else:
            port = TCP_PORT_BASE + index - http_count
            tcp = TcpCheck(kind="tcp", name=f"tcp-{index}", host=tcp_host, port=port, **timing)
            check, probe = tcp, TcpProbe(tcp)
        targets.append(ProbeTarget(f"region-{index % 3}", check, probe))
    service = Service(name=SERVICE, database=SERVICE, writer_record="bench.test.")
    for index in range(args.postgres):
        pg = PostgresCheck(kind="postgres", name=f"pg-{index}", service=SERVICE, **timing)
        targets.append(ProbeTarget("region-pg", pg, PostgresProbe(pg, endpoint, service)))

    failures: dict[str, int] = {}
    scheduler = ProbeScheduler(targets)
    scheduler.start()
    gc_pauses = _GcPauses()
    try:
        await asyncio.sleep(args.warmup)
        if args.gc_freeze:
            # What a long-running controller should do once its first round of
            # probes has opened the kept connections: move the long-lived
            # objects (topology, probes, sessions, connections) out of the
            # cyclic collector's reach, so that a collection walks only recent
            # garbage instead of pausing the loop for 100-400 ms.
            gc.freeze()
        gc_pauses.start()
        delays_before = len(scheduler.start_delays)
        runs_before, skipped_before = scheduler.probes_run, scheduler.runs_skipped
        inconclusive_before = scheduler.probes_inconclusive
        late_before = scheduler.runs_late
        statuses_before = {key: status.last_run_at for key, status in scheduler.status().items()}
        cpu_before, wall_before = time.process_time(), time.monotonic()
        system_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        waited_before = _waited_for_cpu()
        servers_before = sum(_cpu_seconds(pid) for pid in server_pids)
        await asyncio.sleep(args.duration)
        cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
        # Kernel time includes loopback TCP handshakes done on the target's behalf.
        system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system_before
        waited = _waited_for_cpu() - waited_before
        gc_pauses.stop()
        servers_cpu = sum(_cpu_seconds(pid) for pid in server_pids) - servers_before
        runs, skipped = scheduler.probes_run - runs_before, scheduler.runs_skipped - skipped_before
        inconclusive = scheduler.probes_inconclusive - inconclusive_before
        late = scheduler.runs_late - late_before
        delays = list(scheduler.start_delays)[delays_before:]
        for key, status in scheduler.status().items():
            result = status.last_result
            if result is not None and not result.ok and status.last_run_at != statuses_before[key]:
                reason = result.reason if result.conclusive else "inconclusive (overloaded)"
                failures[reason] = failures.get(reason, 0) + 1
    finally:
        await scheduler.stop()
        for target in targets:
            await target.probe.close()
    return {
        "targets": len(targets), "http": http_count, "tcp": args.endpoints - http_count,
        "postgres": args.postgres, "interval_s": args.interval, "window_s": round(wall, 2),
        "gc_freeze": args.gc_freeze,
        "probes": runs, "probes_per_s": round(runs / wall, 1), "runs_skipped": skipped,
        "runs_late": late, "probes_inconclusive": inconclusive,
        "start_delay_ms": {"median": round(statistics.median(delays) * 1000, 2),
                           "p99": round(_percentile(delays, 0.99) * 1000, 2),
                           "max": round(max(delays) * 1000, 2), "samples": len(delays)},
        "cpu_s": round(cpu, 2), "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "cpu_us_per_probe": round(cpu / max(runs, 1) * 1e6),
        "cpu_system_share": round(system / cpu, 2) if cpu else None,
        # Time the scheduler was ready to run while another process held its
        # core: on a shared machine this, not the scheduler, makes probes late.
        "waited_for_cpu_percent": round(100 * waited / wall, 1),
        "load_average": os.getloadavg()[0],
        "endpoint_server_cpu_percent": round(100 * servers_cpu / wall, 1),
        "failing_at_end": failures,
        "gc_pause_ms": {"max": round(max(gc_pauses.pauses, default=0) * 1000, 1),
                        "total": round(sum(gc_pauses.pauses) * 1000),
                        "collections": len(gc_pauses.pauses)},
    }


def bench_main(args: argparse.Namespace) -> None:
    from tests.support.loopback import allocate_block

    _raise_fd_limit()
    _pin(0, SCHEDULER_CORE)
    block = allocate_block()
    http_host, tcp_host, pg_host = block.address(1), block.address(2), block.address(3)
    root = Path(tempfile.mkdtemp(prefix="failover-bench-probes-"))
    endpoints = _start_endpoints(http_host, tcp_host, args.endpoints)
    server = None
    try:
        endpoint = None
        if args.postgres:
            server, endpoint = _start_postgres(root, pg_host)
        report = asyncio.run(_measure(args, http_host, tcp_host, endpoint, [endpoints.pid]))
    finally:
        if server is not None:
            server.stop()
        assert endpoints.stdin is not None
        endpoints.stdin.close()
        try:
            endpoints.wait(timeout=30)
        except subprocess.TimeoutExpired:
            endpoints.kill()
            endpoints.wait()
        shutil.rmtree(root, ignore_errors=True)
    report["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    report["target_met"] = (report["probes_per_s"] >= 1000
                            and report["start_delay_ms"]["p99"] < 100)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    delay = report["start_delay_ms"]
    print(f"{report['targets']} checks ({report['http']} http, {report['tcp']} tcp, "
          f"{report['postgres']} postgres) every {args.interval:g} s, "
          f"measured over {report['window_s']} s")
    print(f"probes/s: {report['probes_per_s']}  (runs skipped: {report['runs_skipped']}, "
          f"of which too late: {report['runs_late']}; inconclusive: "
          f"{report['probes_inconclusive']})")
    print(f"start delay: median {delay['median']} ms, p99 {delay['p99']} ms, "
          f"max {delay['max']} ms ({delay['samples']} samples)")
    print(f"scheduler CPU: {report['cpu_percent_of_one_core']} % of one core "
          f"({report['cpu_us_per_probe']} us per probe, {report['cpu_system_share']} of it "
          f"in the kernel: a whole core would run ~{1e6 / max(report['cpu_us_per_probe'], 1):.0f} "
          "probes/s); endpoint server CPU: "
          f"{report['endpoint_server_cpu_percent']} %")
    print(f"scheduler waited for its core (other processes on it): "
          f"{report['waited_for_cpu_percent']} % of the time; load average "
          f"{report['load_average']:.1f}")
    pauses = report["gc_pause_ms"]
    print(f"garbage collection: {pauses['collections']} collections, longest {pauses['max']} ms, "
          f"{pauses['total']} ms in all (gc.freeze after warm-up: {report['gc_freeze']})")
    print(f"failing at the end: {report['failing_at_end'] or 'none'}")
    print(f"target (>= 1000 probes/s, p99 < 100 ms) met: {report['target_met']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    serve = sub.add_parser("serve", help="(internal) serve the endpoints")
    serve.add_argument("--http-host", required=True)
    serve.add_argument("--tcp-host", required=True)
    serve.add_argument("--endpoints", type=int, required=True)
    parser.add_argument("--endpoints", type=int, default=1000, help="HTTP + TCP endpoints")
    parser.add_argument("--postgres", type=int, default=20,
                        help="postgres probes (each its own kept session)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                        help="leave start-up objects to the cyclic garbage collector")
    args = parser.parse_args()
    if args.mode == "serve":
        serve_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, where a module named like a
    # package (dns, say) would shadow it; the repository root is needed for tests.support.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))
    main()
