"""Starting a lab region's processes: `lab up` starts them first, faults and heals start them again.

Every process of a region runs in the region's group, so that the lab's packet
filter (netfilter.py) can tell the regions' traffic apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from failover.errors import FailoverError
from failover.lab import processes
from failover.lab import state as lab
from failover.lab.postgres import PgServer, ServerTls, pg_bindir, server_version
from failover.lab.unprivileged import RunAs, region_user


def in_region_group(run_as: RunAs) -> Callable[[], None] | None:
    """A preexec that keeps our user but takes the region's group.

    The controller runs as root (the Python it runs may sit where the region's
    user cannot read) in the region's group: packet filters match the group.
    """
    gid = run_as.gid
    if gid is None:
        return None

    def take_group() -> None:
        os.setgroups([])
        os.setgid(gid)

    return take_group


def start_controller(lab_dir: Path, topo: Path, region: str, run_as: RunAs) -> int:
    state_dir = lab_dir / "state" / region
    state_dir.mkdir(parents=True, exist_ok=True)
    log = lab_dir / "logs" / f"controller-{region}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "failover", "controller", "run", "--topology", str(topo),
             "--region", region, "--state-dir", str(state_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=in_region_group(run_as),  # noqa: PLW1509
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd="/",
        )
    return process.pid


def region_server(state: lab.LabState, name: str) -> PgServer:
    """The region's PostgreSQL server as `lab up` made it (folders, binaries, user, TLS)."""
    region = state.region(name)
    datadir = Path(region.data_dir)
    base = datadir.parent
    bindir = Path(state.pg_bindir) if state.pg_bindir else pg_bindir()
    ca = state.ca_file()
    tls = None if ca is None else ServerTls(*lab.region_tls_files(Path(state.dir), name), ca)
    return PgServer(name=region.name, host=region.address, port=region.pg_port, datadir=datadir,
                    socketdir=base / "socket", logfile=base / "postgres.log", bindir=bindir,
                    run_as=region_user(region.name), version=server_version(bindir), tls=tls)


def _clear_stale_locks(server: PgServer) -> None:
    """Remove the lock files of a killed postmaster that nobody has reaped yet.

    PostgreSQL refuses to start while the PID its lock files name exists, and a
    zombie exists until its parent reaps it. The lab's postmasters outlive the
    `lab up` that started them, so their parent is init, which may take many
    seconds to reap (about 20 on a container's init).
    """
    for lock in (server.datadir / "postmaster.pid",
                 server.socketdir / f".s.PGSQL.{server.port}.lock"):
        try:
            pid = int(lock.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            continue
        if not processes.alive(pid):
            lock.unlink(missing_ok=True)


def start_postgres(state: lab.LabState, name: str) -> int:
    """Start the region's killed PostgreSQL again as `lab up` did; its postmaster's PID."""
    server = region_server(state, name)
    _clear_stale_locks(server)
    server.start()
    assert server.pid is not None
    return server.pid


def boot_postgres(state: lab.LabState, name: str) -> int:
    """Start the region's killed PostgreSQL as its init system would after a reboot:
    `pg_ctl start` as the region's user, detached from us; its postmaster's PID."""
    server = region_server(state, name)
    _clear_stale_locks(server)
    result = subprocess.run(
        [str(server.bindir / "pg_ctl"), "start", "--wait", "--timeout", "60", "--silent",
         "-D", str(server.datadir), "-l", str(server.logfile)],
        capture_output=True, text=True, check=False, timeout=90, cwd=server.datadir.parent,
        preexec_fn=server.run_as.preexec(), env=server.run_as.env(),
        start_new_session=True,
    )
    if result.returncode != 0:
        raise FailoverError(f"pg_ctl start for {name} failed: "
                            f"{(result.stderr or result.stdout).strip()}; see {server.logfile}")
    return int((server.datadir / "postmaster.pid").read_text().split()[0])
