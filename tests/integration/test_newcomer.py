"""A newcomer's fleet, by the book: docs/operator-guide.md followed in its order, with TLS on,
ending in a crash failover (issue #15).

Nothing here comes from `failover lab up`. The PostgreSQL servers are initialised and started
with `pg_ctl` on three loopback addresses of a block of their own, with the settings, the TLS
lines and the `hostssl` rules the guide lists; BIND9 serves a zone with the writer and reader
records and a key `tsig-keygen` made. failover is the wheel of this checkout, built offline and installed
into a fresh venv, and every command a newcomer types is that venv's `failover` script, with
PYTHONPATH kept out of its environment so that the checkout cannot stand in for the wheel.

The controllers run the systemd unit's own command line: `ExecStart` read from the unit the
wheel installed (found with the guide's command; it is packaging/systemd/'s), with the binary
the guide links to /usr/local/bin, the topology folder and `%S` replaced by this test's folders, the environment
the unit's `EnvironmentFile` gives (a `failover.env` per region as the guide writes it) and the
unit's `UMask`. Not the unit itself: it runs one region per host (`FAILOVER_REGION`), and the
three regions here share one machine, which rarely has systemd as PID 1 anyway.

The steps, and what the newcomer relies on at each:

1. `failover --version` from the fresh venv.
2. Two throwaway CAs (PostgreSQL's, the controllers' API's); three servers with `ssl = on`;
   the controller's role (a superuser, as 15 requires), the application's role and table, the
   data on the first writer only; BIND9.
3. A topology shaped like docs/examples/three-regions/: `verify-full` with a client
   certificate to every database, the `subscription_ssl*` files on each server, `https://`
   controller URLs, timings short enough for a test.
4. `topology validate --strict`; `check` (databases alive without the schema, controllers not
   yet: exit 3); `db install` and `db replicate` (dry runs first); `dns set-writer`; the
   controllers; `status` until every controller is `up, quorum` with the writer; `db lease`
   until the writer's lease is `taken`; `check` exit 0.
5. The application's rows, written over verified TLS where the writer record points, reach
   both subscribers through TLS subscriptions that present their own certificates.
6. `kill -9` of the writer's whole process group. Within a minute: `status` names a new
   writer, the writer record points at it, the application writes there, the rows written
   before the crash are there, and `history` shows the plan that did it ended ok.
7. Everything stops (controllers, servers, BIND) whatever happens.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import psycopg
import pytest
from psycopg import sql

from failover.dns.tsig import load_key_file
from failover.dns.wire import Endpoint
from failover.lab import processes
from failover.lab.bind import NamedServer, ZoneRecord, ensure_installed, free_port, start_primary
from failover.lab.pki import Authority
from failover.lab.postgres import server_version
from failover.lab.unprivileged import RunAs, server_user
from tests.support.loopback import LoopbackBlock, allocate_block
from tests.support.packaging import (
    PYPROJECT,
    ROOT,
    UNIT,
    Venv,
    build_wheel,
    install_wheel,
    outside_env,
    unit_settings,
)
from tests.support.pg import tls_bindir

pytestmark = [pytest.mark.integration, pytest.mark.packaging, pytest.mark.timeout(600)]

GUIDE = ROOT / "docs" / "operator-guide.md"
# The example's regions and priorities (docs/examples/three-regions/); the first writer is
# the one with the highest priority, as the guide advises.
PRIORITIES = {"us-east-1": 100, "us-west-2": 50, "eu-west-1": 10}
FIRST = "us-east-1"
SERVICE = "app"
ZONE = "db.example.test."
WRITER_RECORD = f"{SERVICE}.{ZONE}"
READER_RECORD = f"{SERVICE}-ro.{ZONE}"
FAILOVER_WITHIN = 60.0  # seconds from the crash to a fleet that writes again
LEASE_S = 3.0  # the writer's lease: self_fence_after + self_fence_duration in fleet.toml
SETTLE_WITHIN = 90.0  # seconds for the first start to show a healthy fleet
# systemd's PATH for system services: the unit's environment has nothing else but the file's.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# docs/operator-guide.md, "PostgreSQL settings", for three regions and one service: slots
# and walsenders for two subscribers plus their initial copies and a rejoin, with reserve.
GUIDE_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_logical_replication_workers": "4",
    "max_worker_processes": "8",
    "max_prepared_transactions": "0",
}
GUIDE_SETTINGS_18 = {"max_active_replication_origins": "10"}

# The application's schema, made by a superuser (the application does not own its tables).
APP_SCHEMA = """
CREATE TABLE orders (id bigserial PRIMARY KEY, written_in text NOT NULL, note text NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app;
GRANT USAGE ON SEQUENCE orders_id_seq TO app;
"""

T = TypeVar("T")


@dataclass
class Server:
    """A PostgreSQL server as a person runs one: initdb, its files, `pg_ctl start` as the
    server's user (PostgreSQL refuses root); administered over its Unix socket."""

    region: str
    host: str
    base: Path
    bindir: Path
    run_as: RunAs
    crashed: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socketdir(self) -> Path:
        return self.base / "socket"

    @property
    def tls(self) -> Path:
        """The server's TLS files; the subscription_ssl* paths of the topology point here."""
        return self.base / "tls"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def run(self, program: str, *args: str | Path, check: bool = True) -> bool:
        """One of the server's programs, as the server's user; whether it exited 0."""
        done = subprocess.run([str(self.bindir / program), *map(str, args)], check=False,
                              capture_output=True, text=True, timeout=120,
                              preexec_fn=self.run_as.preexec(), env=self.run_as.env(),
                              cwd=self.base)
        assert done.returncode == 0 or not check, (
            f"{self.region}: {program} {args} exited {done.returncode}: "
            f"{done.stderr or done.stdout}\n{tail(self.log)}")
        return done.returncode == 0

    def postmaster(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser session over the server's Unix socket (`local ... trust`)."""
        return psycopg.connect(host=str(self.socketdir), port=5432, dbname=dbname,
                               user="postgres", autocommit=True, connect_timeout=5,
                               options="-c statement_timeout=30s")

    def crash(self) -> None:
        """`kill -9 -PID`: the postmaster and every backend at once. pg_ctl made the
        postmaster the leader of a process group of its own, which its children share."""
        pid = self.postmaster()
        group = os.getpgid(pid)
        assert group == pid != os.getpgrp(), f"{self.region}: postmaster {pid} leads no group"
        members = processes.tree(pid)
        self.crashed = True
        os.killpg(group, signal.SIGKILL)
        assert processes.wait_gone(members, 30), f"{self.region}: survivors of kill -9"

    def stop(self) -> None:
        if self.crashed or not (self.datadir / "postmaster.pid").exists():
            return
        pid = self.postmaster()
        if not self.run("pg_ctl", "stop", "-D", self.datadir, "-m", "fast", "-w", "-t", "30",
                        check=False):
            processes.kill_tree(pid)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return f"--- last lines of {path}:\n" + "\n".join(text[-lines:])


def private(path: Path, text: str) -> Path:
    """A secret as the guide lays it out: owner root (whoever runs this), mode 0640."""
    path.write_text(text)
    path.chmod(0o640)
    return path


@dataclass
class Newcomer:
    """Everything the test made, under one folder that the servers' user can pass through."""

    root: Path
    block: LoopbackBlock
    venv: Venv | None = None
    servers: dict[str, Server] = field(default_factory=dict)
    named: NamedServer | None = None
    controllers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def topology(self) -> Path:  # /etc/failover/topology
        return self.root / "etc" / "topology"

    @property
    def secrets(self) -> Path:  # /etc/failover/secrets
        return self.root / "etc" / "secrets"

    def address(self, region: str) -> str:
        return self.block.address(1 + list(PRIORITIES).index(region))

    def controller_host(self, region: str) -> str:
        return self.block.address(21 + list(PRIORITIES).index(region))

    def controller_log(self, region: str) -> Path:  # what journalctl -u failover-controller shows
        return self.root / "logs" / f"controller-{region}.log"

    def dns_endpoint(self) -> Endpoint:
        assert self.named is not None
        return self.named.endpoint

    def failover(self, *args: str, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        """`failover ARGS` as the newcomer types it: the venv's script, FAILOVER_TOPOLOGY set."""
        assert self.venv is not None
        done = subprocess.run(
            [str(self.venv.bin("failover")), *args], check=False, capture_output=True, text=True,
            timeout=120, stdin=subprocess.DEVNULL, cwd=self.root,
            env=outside_env({"FAILOVER_TOPOLOGY": str(self.topology), "COLUMNS": "200"}))
        assert done.returncode in codes, (f"`failover {shlex.join(args)}` exited "
                                          f"{done.returncode}, not {codes}:\n{done.stdout}\n"
                                          f"{done.stderr}")
        return done

    def json(self, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
        return json.loads(self.failover(*args, "--json", codes=codes).stdout)

    def served(self, name: str) -> frozenset[str]:
        """The A record `name` as BIND answers it now (dnspython, no cache)."""
        endpoint = self.dns_endpoint()
        response = dns.query.udp(dns.message.make_query(name, "A"), endpoint.host,
                                 port=endpoint.port, timeout=2)
        found = response.get_rrset(response.answer, dns.name.from_text(name),
                                   dns.rdataclass.IN, dns.rdatatype.A)
        return frozenset(item.to_text() for item in found) if found is not None else frozenset()

    def app_session(self, address: str) -> psycopg.Connection[tuple[Any, ...]]:
        """The application: its role, over TLS that verifies the server it was pointed at."""
        return psycopg.connect(
            host=address, port=5432, dbname=SERVICE, user="app",
            password=(self.secrets / "app.password").read_text().strip(), autocommit=True,
            sslmode="verify-full", sslrootcert=str(self.topology / "tls" / "postgres-ca.crt"),
            connect_timeout=3)

    def logs(self) -> str:
        """The controllers' and the servers' last lines, for a failure message."""
        return "\n".join([*(tail(self.controller_log(region)) for region in self.controllers),
                          *(tail(server.log, 10) for server in self.servers.values())])

    def stop_controllers(self) -> None:
        for process in self.controllers.values():  # KillMode=mixed: SIGTERM to the controller
            if process.poll() is None:
                process.terminate()
        for process in self.controllers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def stop(self) -> None:
        """The controllers, then the servers, then BIND; each even if one before it failed."""
        with contextlib.ExitStack() as stack:  # callbacks run last-in first
            if self.named is not None:
                stack.callback(self.named.stop)
            for server in self.servers.values():
                stack.callback(server.stop)
            stack.callback(self.stop_controllers)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> tuple[T, float]:
    """Until `probe` returns something (not None); (that, seconds it took). On timeout the
    message says what was awaited and what the probe last saw (its exception's text)."""
    start = time.monotonic()
    last = "nothing yet"
    while time.monotonic() - start < timeout:
        try:
            found = probe()
        except (psycopg.Error, OSError, dns.exception.DNSException, AssertionError) as exc:
            found, last = None, f"{type(exc).__name__}: {exc}"
        if found is not None:
            return found, time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:g} s: {what}; last seen: {last}")


# --- Building the site ------------------------------------------------------------------------


def start_servers(site: Newcomer, bindir: Path, pg_ca: Authority, passwords: dict[str, str],
                  app_password: str) -> None:
    """Step 3 of "The first start": every server with the guide's settings, TLS and rules,
    the roles, the database and the table; the data on the first writer only."""
    version = server_version(bindir)
    libdir = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], check=True, text=True,
                            capture_output=True, timeout=30).stdout.strip()
    assert (Path(libdir) / "test_decoding.so").exists(), \
        f"the guide needs test_decoding in {libdir}: install PostgreSQL's contrib modules"
    run_as = server_user()
    for region in PRIORITIES:
        host = site.address(region)
        server = Server(region, host, site.root / "pg" / region, bindir, run_as)
        for folder in (server.base, server.socketdir, server.tls):
            folder.mkdir(parents=True)
        server.base.parent.chmod(0o755)
        server.base.chmod(0o755)
        shutil.copy(pg_ca.cert_file, server.tls / "ca.crt")
        pg_ca.issue("server", addresses=[host], folder=server.tls)
        pg_ca.issue("subscriber", common_name=f"{region} subscriber", folder=server.tls)
        run_as.chown(server.base)
        server.run("initdb", "-D", server.datadir, "-U", "postgres", "--encoding=UTF8",
                   "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256")
        settings = {"listen_addresses": f"'{host}'", "port": "5432",
                    "unix_socket_directories": f"'{server.socketdir}'", **GUIDE_SETTINGS,
                    **(GUIDE_SETTINGS_18 if version >= 18 else {}),
                    "ssl": "on", "ssl_cert_file": f"'{server.tls / 'server.crt'}'",
                    "ssl_key_file": f"'{server.tls / 'server.key'}'",
                    "ssl_ca_file": f"'{server.tls / 'ca.crt'}'"}
        with (server.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# docs/operator-guide.md\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        # TLS only, with a password, for the controller's and the application's roles from
        # every controller host and every other server: all of them are this machine, whose
        # connections to another loopback address come from 127.0.0.1 (the kernel's choice).
        # The superuser only on the socket.
        (server.datadir / "pg_hba.conf").write_text(
            "local    all  postgres                 trust\n"
            "hostssl  app  failover  127.0.0.1/32  scram-sha-256\n"
            "hostssl  app  app       127.0.0.1/32  scram-sha-256\n")
        site.servers[region] = server
        server.run("pg_ctl", "start", "-D", server.datadir, "-l", server.log, "-w", "-t", "60",
                   "-s")
        with server.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE failover LOGIN SUPERUSER PASSWORD {}").format(
                sql.Literal(passwords[region])))
            conn.execute(sql.SQL("CREATE ROLE app LOGIN PASSWORD {}").format(
                sql.Literal(app_password)))
            conn.execute("CREATE DATABASE app")
        with server.admin(SERVICE) as conn:
            conn.execute(APP_SCHEMA)
            if region == FIRST:
                conn.execute("INSERT INTO orders (written_in, note) "
                             "SELECT %s, 'loaded-' || i FROM generate_series(1, 3) i", [FIRST])


def start_bind(site: Newcomer) -> None:
    """BIND9 serving the zone with the key tsig-keygen prints, and the two records the guide
    says to create: the writer record (pointing somewhere else than the first writer, which
    `dns set-writer` then repairs) and the reader record with every region's address."""
    named = ensure_installed()
    keygen = shutil.which("tsig-keygen") or str(named.parent / "tsig-keygen")
    key_file = private(site.secrets / "tsig.key", subprocess.run(
        [keygen, "-a", "hmac-sha256", "failover"], check=True, capture_output=True, text=True,
        timeout=30).stdout)
    host = site.block.address(53)
    site.named = start_primary(site.root / "dns", Endpoint(host, free_port([host])), ZONE,
                               load_key_file(key_file),
                               records=[ZoneRecord("app", "A", site.address("eu-west-1"), 30),
                                        *(ZoneRecord("app-ro", "A", site.address(region), 30)
                                          for region in PRIORITIES)])


def write_topology(site: Newcomer, pg_ca: Authority, api_ca: Authority) -> None:
    """The folder the guide and docs/examples/three-regions/ describe, with TLS on."""
    tls = site.topology / "tls"
    tls.mkdir(parents=True)
    shutil.copy(pg_ca.cert_file, tls / "postgres-ca.crt")
    shutil.copy(api_ca.cert_file, tls / "controller-ca.crt")
    pg_ca.issue("failover", common_name="failover", folder=tls)
    (tls / "failover.key").chmod(0o640)
    dns_at = site.dns_endpoint()
    (site.topology / "fleet.toml").write_text(f"""\
name = "newcomer"
# Timing for a test: checks every second, DOWN after 3 failures; a writer's lease of 3 s.
observation_max_age = "2s"
self_fence_after = "2s"
self_fence_duration = "1s"

[coordination]
backend = "peers"
key_file = "{site.secrets / 'fleet.key'}"
exchange_interval = "500ms"

[api]
ca_file = "tls/controller-ca.crt"

[dns]
provider = "rfc2136"
zone = "{ZONE}"

[dns.rfc2136]
server = "{dns_at.host}"
port = {dns_at.port}
key_file = "{site.secrets / 'tsig.key'}"
algorithm = "hmac-sha256"
authoritative = ["{dns_at.host}:{dns_at.port}"]
timeout = "1s"

[[services]]
name = "{SERVICE}"
database = "app"
writer_record = "{WRITER_RECORD}"
reader_record = "{READER_RECORD}"
ttl = 30
max_lag_bytes = 16777216
max_lag_seconds = "30s"
cooldown = "5m"
app_roles = ["app"]
rejoin = "manual"
""")
    for region, priority in PRIORITIES.items():
        api_ca.issue(f"{region}-controller", addresses=[site.controller_host(region)], folder=tls)
        (tls / f"{region}-controller.key").chmod(0o640)
        server, ctl = site.servers[region], f"https://{site.controller_host(region)}:8700"
        (site.topology / f"{region}.toml").write_text(f"""\
name = "{region}"
priority = {priority}
controller_url = "{ctl}"
address = "{site.address(region)}"

[api]
cert_file = "tls/{region}-controller.crt"
key_file = "tls/{region}-controller.key"

[postgres.app]
host = "{server.host}"
port = 5432
dbname = "app"
user = "failover"
password_file = "{site.secrets / f'pg-{region}.password'}"
connect_timeout = "2s"
sslmode = "verify-full"
sslrootcert = "tls/postgres-ca.crt"
sslcert = "tls/failover.crt"
sslkey = "tls/failover.key"
subscription_sslrootcert = "{server.tls / 'ca.crt'}"
subscription_sslcert = "{server.tls / 'subscriber.crt'}"
subscription_sslkey = "{server.tls / 'subscriber.key'}"

[[checks]]
name = "postgres"
kind = "postgres"
service = "app"
interval = "1s"
timeout = "800ms"

[[checks]]
name = "controller"
kind = "http"
url = "{ctl}/healthz"
ca_file = "tls/controller-ca.crt"
purpose = "info"
interval = "1s"
timeout = "800ms"
""")


def installed_unit(venv: Venv) -> str:
    """The unit the wheel installed, found with the guide's own command (step 2), which
    names the venv /opt/failover. Run in the checkout, where the newcomer built the wheel
    and where a command that put the current folder on sys.path would find the sources."""
    [command] = [line.strip() for line in GUIDE.read_text().splitlines()
                 if line.strip().startswith("/opt/failover/bin/python ")]
    argv = shlex.split(command.replace("/opt/failover", str(venv.root), 1))
    where = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60,
                           env=outside_env(), cwd=ROOT).stdout.strip()
    assert where.startswith(f"{venv.site}/"), f"the guide's command found {where}"
    text = Path(where).read_text()
    assert text == UNIT.read_text(), f"{where} is not {UNIT}"
    return text


def start_controllers(site: Newcomer) -> None:
    """Step 8: each region's controller as its unit would run it."""
    assert site.venv is not None
    unit = unit_settings(installed_unit(site.venv))
    [exec_start], [env_file] = unit["ExecStart"], unit["EnvironmentFile"]
    [umask], [state_name], [state_mode] = (unit["UMask"], unit["StateDirectory"],
                                           unit["StateDirectoryMode"])
    argv = shlex.split(exec_start)
    for region in PRIORITIES:
        host_etc = site.root / "etc" / region  # this region's host's /etc/failover
        host_etc.mkdir()
        # The guide's failover.env: the topology names files, not variables, for its secrets.
        env_path = private(host_etc / Path(env_file).name,
                           f"FAILOVER_REGION={region}\n# Only the variables your topology names\n")
        state_root = site.root / "var" / region  # %S
        (state_root / state_name).mkdir(parents=True, mode=int(state_mode, 8))
        command = [str(site.venv.bin("failover")) if arg == argv[0] else
                   arg.replace("/etc/failover/topology", str(site.topology))
                   .replace("%S", str(state_root)) for arg in argv]
        assert not [arg for arg in command if "/etc/failover" in arg or "%" in arg], \
            f"ExecStart={exec_start} names more than this test knows how to replace: {command}"
        env = {"PATH": SYSTEMD_PATH}
        for line in env_path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, value = line.partition("=")
                env[name.strip()] = value.strip()
        site.controller_log(region).parent.mkdir(exist_ok=True)
        with site.controller_log(region).open("ab") as log:
            site.controllers[region] = subprocess.Popen(
                command, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, umask=int(umask, 8), start_new_session=True)


@contextlib.contextmanager
def newcomer_site() -> Iterator[Newcomer]:
    root = Path(tempfile.mkdtemp(prefix="failover-newcomer-"))
    root.chmod(0o755)  # the servers' user passes through to its own folders
    site = Newcomer(root, allocate_block())
    try:
        yield site
    except Exception as error:
        error.add_note(site.logs())
        raise
    finally:
        site.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- What the newcomer sees --------------------------------------------------------------------


def fleet_settled(site: Newcomer) -> dict[str, Any] | None:
    """`status --json` once every controller answers, hears a quorum, sees every region UP
    and records the first writer; None before."""
    document: dict[str, Any] = site.json("status", codes=(0, 1))
    assert "error" not in document, document["error"]["message"]
    for region, entry in document["controllers"].items():
        assert entry["answered"], f"{region}'s controller does not answer: {entry['error']}"
        status = entry["status"]
        assert status["has_quorum"], f"{region}'s controller hears {status['heard']} only"
        down = {name: v["verdict"] for name, v in status["verdicts"].items() if v["verdict"] != "UP"}
        assert not down, f"{region}'s controller sees {down}"
        writer = status["services"][SERVICE]["writer"]
        assert writer == FIRST, f"{region}'s controller records writer {writer}"
    return document


def lease_taken(site: Newcomer) -> dict[str, Any] | None:
    regions: dict[str, Any] = site.json("db", "lease", SERVICE)["regions"]
    assert regions[FIRST]["writer"], f"the writer's lease: {regions[FIRST]}"
    return regions


def new_writer(site: Newcomer) -> str | None:
    """The writer every controller with a quorum records, once it is not the first one."""
    document = site.json("status", codes=(0, 1))
    assert "error" not in document, document["error"]["message"]
    seen = {region: entry["status"]["services"][SERVICE]["writer"]
            for region, entry in document["controllers"].items()
            if entry["answered"] and entry["status"]["has_quorum"]}
    assert len(seen) >= 2 and len(set(seen.values())) == 1, f"writers by controller: {seen}"
    writer = next(iter(seen.values()))
    return writer if writer not in (None, FIRST) else None


def app_writes(site: Newcomer, address: str, note: str) -> int:
    with site.app_session(address) as conn:
        row = conn.execute("INSERT INTO orders (written_in, note) VALUES (%s, %s) RETURNING id",
                           [address, note]).fetchone()
    assert row is not None
    return int(row[0])


def copied(server: Server) -> bool:
    """The guide's test that a subscriber's initial copy is done: `r` for every table."""
    with server.admin(SERVICE) as conn:
        states = conn.execute("SELECT srrelid::regclass::text, srsubstate "
                              "FROM pg_subscription_rel").fetchall()
    assert states and all(state == "r" for _, state in states), states
    return True


def plans_ended(history: dict[str, Any], *, since: float, ok: bool) -> set[str]:
    """The ids of the service's plans that `failover history --json` says ended since then,
    ok or not."""
    return {entry["plan_id"] for entry in history["entries"]
            if entry["kind"] == "plan" and entry["event"] == "end" and entry["ts"] >= since
            and entry["service"] == SERVICE and (entry["outcome"] == "ok") == ok}


def notes(conn: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    return {str(note) for (note,) in conn.execute("SELECT note FROM orders").fetchall()}


def test_a_newcomer_follows_the_guide_to_a_fleet_that_fails_over(tmp_path: Path) -> None:
    bindir = tls_bindir("the newcomer's fleet (docs/operator-guide.md, TLS on, a crash failover)")
    started = time.monotonic()
    took_to: dict[str, float] = {}  # seconds since the start at the end of each stage

    def stage(name: str) -> None:
        took_to[name] = round(time.monotonic() - started, 1)

    with newcomer_site() as site:
        # 1. Install failover from the wheel.
        site.venv = install_wheel(build_wheel(tmp_path / "build"), site.root / "opt-failover")
        version = site.failover("--version").stdout
        assert version == f"failover {PYPROJECT['project']['version']}\n"

        stage("installed")

        # 2. and 3. Keys, TLS files, PostgreSQL, BIND9.
        site.secrets.mkdir(parents=True)
        private(site.secrets / "fleet.key", base64.b64encode(os.urandom(32)).decode() + "\n")
        passwords = {region: secrets.token_urlsafe(18) for region in PRIORITIES}
        for region, password in passwords.items():
            private(site.secrets / f"pg-{region}.password", password + "\n")
        app_password = secrets.token_urlsafe(18)
        private(site.secrets / "app.password", app_password + "\n")
        pg_ca = Authority(site.root / "pki" / "postgres", "postgres-ca")
        api_ca = Authority(site.root / "pki" / "controllers", "controller-ca")
        start_servers(site, bindir, pg_ca, passwords, app_password)
        start_bind(site)
        write_topology(site, pg_ca, api_ca)

        stage("servers up")

        # 4. Check the topology and the network.
        validated = site.failover("topology", "validate", str(site.topology), "--strict")
        assert "newcomer" in validated.stdout, validated.stdout
        checked = site.json("check", codes=(3,))
        for result in checked["checks"]:
            seen = f"{result['region']} {result['check']}: {result['state']}, {result['reason']}"
            if result["check"] == "postgres":
                assert result["state"] == "healthy", seen
                assert "the failover schema is not installed" in result["reason"], seen
            else:  # the controllers' /healthz: none runs yet
                assert result["state"] == "unhealthy", seen

        # 5. Install the failover schema; 6. replicate from the first writer.
        dry = site.failover("db", "install", "--dry-run")
        with site.servers[FIRST].admin(SERVICE) as conn:
            assert conn.execute("SELECT to_regnamespace('failover')").fetchone() == (None,), \
                f"`db install --dry-run` changed the database:\n{dry.stdout}"
        site.failover("db", "install", "--yes")
        site.failover("db", "replicate", SERVICE, "--writer", FIRST, "--dry-run")
        replicated = site.failover("db", "replicate", SERVICE, "--writer", FIRST, "--yes")
        for region in PRIORITIES:
            if region != FIRST:
                assert f"subscribe {region} to {FIRST}" in replicated.stdout, replicated.stdout

        for region in PRIORITIES:
            if region != FIRST:
                wait_for(f"{region} to copy every table (pg_subscription_rel: r)",
                         functools.partial(copied, site.servers[region]), 60)

        # 7. The writer record.
        site.failover("dns", "set-writer", SERVICE, "--to", FIRST, "--dry-run")
        assert site.served(WRITER_RECORD) == {site.address("eu-west-1")}, "the dry run moved it"
        site.failover("dns", "set-writer", SERVICE, "--to", FIRST, "--yes")
        assert site.served(WRITER_RECORD) == {site.address(FIRST)}
        shown_dns = {(record["role"], item["region"])
                     for record in site.json("dns", "show", SERVICE)["records"]
                     for item in record["values"]}
        assert shown_dns == {("writer", FIRST), *(("reader", r) for r in PRIORITIES)}, shown_dns

        stage("replicated")

        # 8. The controllers; 9. check.
        start_controllers(site)
        wait_for("every controller up, with a quorum, every region UP and the writer "
                 f"{FIRST} (`failover status --json`)", lambda: fleet_settled(site),
                 SETTLE_WITHIN)
        regions, _ = wait_for(f"`failover db lease {SERVICE}`: {FIRST} taken",
                              lambda: lease_taken(site), 30)
        for region, lease in regions.items():
            if region != FIRST:
                assert not lease["writer"] and "not the recorded writer" in lease["refused"], \
                    (region, lease)
        # "a few seconds of lease left (at most self_fence_after + self_fence_duration)"
        assert 0 < regions[FIRST]["seconds_left"] <= LEASE_S, regions[FIRST]
        shown = site.failover("status").stdout
        assert re.search(rf"{SERVICE}: writer {FIRST} epoch \d+", shown), shown
        site.json("check")  # every check healthy, the controllers' too: exit 0
        assert not plans_ended(site.json("history", "--since", "10m"), since=0, ok=False)

        # The application writes where the writer record points; the rows reach the others.
        [writer_address] = site.served(WRITER_RECORD)
        before = {f"before-{i}" for i in range(5)}
        for note in sorted(before):
            app_writes(site, writer_address, note)

        def replicated_everywhere() -> bool | None:
            for region, server in site.servers.items():
                with server.admin(SERVICE) as conn:
                    missing = before - notes(conn)
                assert not missing, f"{region} lacks {sorted(missing)}"
            return True

        wait_for("the application's rows on every subscriber", replicated_everywhere, 30)
        with site.servers[FIRST].admin(SERVICE) as conn:  # the guide's "Checking it" query
            senders = conn.execute(
                "SELECT a.application_name, s.ssl, s.client_dn FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.backend_type = 'walsender'").fetchall()
        assert sorted((ssl, dn) for _, ssl, dn in senders) == sorted(
            (True, f"/CN={region} subscriber") for region in PRIORITIES if region != FIRST), \
            senders

        stage("fleet checked")

        # The crash.
        crashed_at = time.time()
        site.servers[FIRST].crash()
        writer, took = wait_for("`failover status` to name a new writer",
                                lambda: new_writer(site), FAILOVER_WITHIN)
        remaining = FAILOVER_WITHIN - took
        _, moved = wait_for(f"the writer record to point at {writer}",
                            lambda: site.served(WRITER_RECORD) == {site.address(writer)} or None,
                            remaining)
        remaining -= moved
        after_id, wrote = wait_for(f"the application to write on {writer}",
                                   lambda: app_writes(site, site.address(writer), "after"),
                                   remaining)
        remaining -= wrote
        with site.app_session(site.address(writer)) as conn:
            kept = notes(conn)
        assert before | {f"loaded-{i}" for i in (1, 2, 3)} | {"after"} <= kept, sorted(kept)
        readers = {site.address(r) for r in PRIORITIES if r != FIRST}
        wait_for(f"the reader record to drop {FIRST}",
                 lambda: site.served(READER_RECORD) == readers or None, remaining)
        leases = site.json("db", "lease", SERVICE)["regions"]
        assert leases[FIRST] == {"reachable": False} and leases[writer]["writer"], leases
        history = site.json("history", "--since", "10m")
        ended = plans_ended(history, since=crashed_at, ok=True)
        assert ended and not plans_ended(history, since=crashed_at, ok=False), history
        promoted = {action["region"] for entry in history["entries"]
                    if entry["kind"] == "plan" and entry["event"] == "start"
                    and entry["plan_id"] in ended for action in entry["plan"]["actions"]
                    if action["type"] == "PromoteSubscriber"}
        assert promoted == {writer}, (promoted, ended)
        print(f"newcomer: new writer {writer} in {took:.1f} s, record moved after "
              f"{took + moved:.1f} s, writes after {took + moved + wrote:.1f} s (id {after_id}); "
              f"whole test {time.monotonic() - started:.0f} s, stages ended at {took_to}")
