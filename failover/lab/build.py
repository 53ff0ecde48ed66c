"""`failover lab up` and `failover lab down`: three (or five) regions on this machine.

Each region's PostgreSQL server and controller run as that region's own
unprivileged user, so that `lab fault --kind isolate` can drop the region's
packets by owner; the DNS server is shared, as a GSLB would be.

`lab up --tls` adds a throwaway CA and a certificate per region (see
`failover.lab.state`): PostgreSQL servers that take TCP connections over TLS only,
controllers at `https://` URLs, and a topology whose every connection verifies them.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from failover.controller.client import acting_view, fleet_statuses
from failover.dns.tsig import generate_key
from failover.dns.wire import Endpoint
from failover.errors import FailoverError, UserError
from failover.lab import netfilter, processes
from failover.lab import state as lab
from failover.lab.bind import ZoneRecord, start_primary
from failover.lab.etcd import EtcdCluster, start_cluster
from failover.lab.launch import start_controller
from failover.lab.postgres import (
    PgServer,
    ServerTls,
    init_server,
    pg_bindir,
    server_version,
    tls_bindir,
)
from failover.lab.unprivileged import RunAs, folder_closed_to_others, region_user
from failover.postgres.connection import ServiceDatabases
from failover.postgres.replicate import replication_steps
from failover.postgres.schema import install
from failover.postgres.steps import run_steps
from failover.topology import load_topology

Progress = Callable[[str], None]

# How long the certificates of `lab up --tls` are valid: a lab may run for weeks of
# measurements, and its CA is thrown away with it.
TLS_DAYS = 365

DEMO_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id bigserial PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY, order_no bigserial NOT NULL UNIQUE, account_id bigint,
    amount numeric NOT NULL DEFAULT 0);
-- The drill's workload: the client numbers its writes (seq) to find lost ones;
-- the server numbers them too (id), which collides if sequences were not synced.
CREATE TABLE IF NOT EXISTS drill_writes (
    seq bigint PRIMARY KEY, id bigserial NOT NULL UNIQUE, round integer NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp());
-- The safety checker's workload (failover/lab/writers.py): a client pinned to each
-- region numbers its own writes (run, client, seq), and each row records the server
-- that took it. No unique key on purpose: a write applied twice (replication, a
-- re-copy) must show as two rows to the checker, not stall a subscription; hence
-- REPLICA IDENTITY FULL, so that deleting from it on a publisher still works.
CREATE TABLE IF NOT EXISTS checker_writes (
    run bigint NOT NULL, client text NOT NULL, seq bigint NOT NULL, region text NOT NULL,
    epoch bigint NOT NULL, role text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS checker_writes_id ON checker_writes (run, client, seq);
ALTER TABLE checker_writes REPLICA IDENTITY FULL;
-- Lab-only helper: the server's region, epoch and role, for the application role,
-- which may not read the failover schema. PL/pgSQL because failover.node_state does
-- not exist yet when this runs (a SQL function's body is checked at creation).
CREATE OR REPLACE FUNCTION lab_node_identity(p_service text)
RETURNS TABLE (region text, epoch bigint, role text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT s.region, s.epoch, s.role FROM failover.node_state s
                  WHERE s.service = p_service;
END
$$;
REVOKE ALL ON FUNCTION lab_node_identity(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lab_node_identity(text) TO app;
"""


def is_up(lab_dir: Path) -> bool:
    if not lab.lab_file(lab_dir).exists():
        return False
    state = lab.load(lab_dir)
    return any(processes.alive(r.postmaster_pid) or processes.alive(r.controller_pid) for r in state.regions)


def controller_url(address: str, *, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{address}:{lab.CONTROLLER_PORT}"


def _write_topology(lab_dir: Path, regions: dict[str, str], *, key_file: Path, tsig_file: Path,
                    tsig_name: str, coordination: dict[str, Any], rejoin: str,
                    durability: str, sync_count: int, sync_strict: bool,
                    tls: bool = False, timings: lab.Timings = lab.TIMINGS["default"]) -> Path:
    """`tls`: the files of `issue_tls` (under `lab_dir`) in every field that takes them."""
    topo = lab_dir / "topology"
    ca = str(lab.lab_ca_file(lab_dir))
    topo.mkdir(parents=True, exist_ok=True)
    fleet = {
        "name": "lab",
        "observation_max_age": timings.observation_max_age,
        "self_fence_after": timings.self_fence_after,
        "self_fence_duration": timings.self_fence_duration,
        "coordination": {"key_file": str(key_file),
                         "exchange_interval": timings.exchange_interval, **coordination},
        "dns": {"provider": "rfc2136", "zone": lab.ZONE,
                "rfc2136": {"server": lab.DNS_ADDRESS, "port": lab.DNS_PORT,
                            "key_file": str(tsig_file), "key_name": tsig_name,
                            "timeout": "1s"}},
        "services": [{
            "name": lab.SERVICE, "database": lab.SERVICE, "writer_record": lab.WRITER_RECORD,
            "reader_record": lab.READER_RECORD, "ttl": lab.TTL, "max_lag_bytes": 64 * 1024 * 1024,
            "max_lag_seconds": "10s", "cooldown": "5s", "app_roles": [lab.APP_ROLE],
            "rejoin": rejoin, "durability": durability, "sync_count": sync_count,
            "sync_strict": sync_strict,
        }],
    }
    if tls:
        fleet["api"] = {"ca_file": ca}
    (topo / "fleet.toml").write_text(tomli_w.dumps(fleet))
    for name, address in regions.items():
        url = controller_url(address, tls=tls)
        endpoint: dict[str, Any] = {"host": address, "port": lab.PG_PORT, "dbname": lab.SERVICE,
                                    "user": lab.SUPERUSER, "connect_timeout": "1s"}
        health: dict[str, Any] = {"name": "controller", "kind": "http", "url": f"{url}/healthz",
                                  "interval": "1s", "timeout": "500ms", "purpose": "info"}
        region: dict[str, Any] = {
            "name": name, "priority": lab.PRIORITIES[name],
            "controller_url": url, "address": address,
            "postgres": {lab.SERVICE: endpoint},
            "checks": [
                {"name": "postgres", "kind": "postgres", "service": lab.SERVICE,
                 **timings.check},
                health,
            ],
        }
        if tls:
            # Every connection verifies the server's certificate and that it names the
            # address; the subscriptions of this region's server read the CA as its user.
            endpoint.update(sslmode="verify-full", sslrootcert=ca, subscription_sslrootcert=ca)
            health["ca_file"] = ca
            cert, key = lab.region_tls_files(lab_dir, name)
            region["api"] = {"cert_file": str(cert), "key_file": str(key)}
        (topo / f"{name}.toml").write_text(tomli_w.dumps(region))
    load_topology(topo)  # what the lab writes must validate
    return topo


def _tls_prerequisites() -> Path:
    """The binaries `lab up --tls` runs; a UserError when it cannot run (no `cryptography`
    for its CA, no PostgreSQL built with OpenSSL)."""
    if importlib.util.find_spec("cryptography") is None:
        raise UserError("--tls: the lab's CA needs the `cryptography` package; install the "
                        "`lab` extra (pip install 'failover[lab]')")
    return tls_bindir()


def issue_tls(lab_dir: Path, addresses: dict[str, str],
              users: dict[str, RunAs]) -> dict[str, ServerTls]:
    """`lab up --tls`'s throwaway CA, and for each region a certificate naming its address
    (its PostgreSQL server's and its controller's), owned by and readable only by the
    region's user; the CA's certificate is readable by every user, its key by root only."""
    from failover.lab.pki import Authority  # needs `cryptography`: only with --tls

    ca_file = lab.lab_ca_file(lab_dir)
    authority = Authority(ca_file.parent, ca_file.stem, common_name="failover lab CA",
                          days=TLS_DAYS)
    ca_file.parent.chmod(0o755)
    ca_file.chmod(0o644)
    files = {}
    for name, address in addresses.items():
        cert, key = lab.region_tls_files(lab_dir, name)
        cert.parent.mkdir(mode=0o700)
        authority.issue(cert.stem, common_name=name, addresses=[address], folder=cert.parent)
        users[name].chown(cert.parent)
        files[name] = ServerTls(cert, key, authority.cert_file)
    return files


def _demo_database(server: PgServer) -> None:
    with server.connect() as conn:
        conn.autocommit = True
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        [lab.SERVICE]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{lab.SERVICE}"')
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                        [lab.APP_ROLE]).fetchone() is None:
            conn.execute(f'CREATE ROLE "{lab.APP_ROLE}" LOGIN')
    with server.connect(lab.SERVICE) as conn:
        conn.autocommit = True
        conn.execute(DEMO_SCHEMA)
        conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{lab.APP_ROLE}"')
        conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{lab.APP_ROLE}"')


def service_view(state: lab.LabState) -> dict[str, Any]:
    """The lab service as the acting controller sees it."""
    view = acting_view(fleet_statuses(state.controllers(), tls=state.api_tls()))
    if view is None or not view.get("has_quorum"):
        raise FailoverError("no controller with a quorum answers; is the lab healthy? "
                            "(`failover lab status`)")
    service: dict[str, Any] = view["services"][state.service.name]
    return service


def wait_healthy(state: lab.LabState, timeout: float, progress: Progress) -> None:
    """Until every controller sees every region UP and the service's writer."""
    deadline = time.monotonic() + timeout
    last = ""
    tls = state.api_tls()
    while time.monotonic() < deadline:
        waiting = []
        for region, body in fleet_statuses(state.controllers(), timeout=1, tls=tls).items():
            if isinstance(body, str):
                waiting.append(f"{region}: controller {body}")
                continue
            verdicts = body.get("verdicts", {})
            down = [r.name for r in state.regions
                    if verdicts.get(r.name, {}).get("verdict") != "UP"]
            writer = body.get("services", {}).get(lab.SERVICE, {}).get("writer")
            if down:
                waiting.append(f"{region} sees {', '.join(down)} not UP yet")
            elif writer is None:
                waiting.append(f"{region} does not know the writer yet")
        if not waiting:
            return
        if waiting[0] != last:
            progress(f"waiting: {waiting[0]}")
            last = waiting[0]
        time.sleep(0.3)
    raise FailoverError(f"the lab did not become healthy within {timeout:g} s: {last}; "
                        f"see {state.dir}/logs/")


def check_reachable(lab_dir: Path) -> None:
    """Refuse a lab folder the regions' users cannot reach: their servers keep their data
    and sockets there, and initdb would fail half-way through `lab up` with EACCES."""
    closed = folder_closed_to_others(lab_dir.parent)  # up makes lab_dir itself 0755
    if closed is not None:
        raise UserError(
            f"--dir: the lab's servers run as unprivileged users, who cannot reach {lab_dir}: "
            f"{closed} (mode {closed.stat().st_mode & 0o7777:04o}) lets no other user pass; "
            f"pass a --dir they can reach, such as {lab.SHARED_DIR}, or leave --dir out (the "
            "lab then lives where they can reach it)")


def up(lab_dir: Path, *, coordination: str = "peers", regions: int = 3, progress: Progress,
       timeout: float = 90.0, rejoin: str = "auto", durability: str = "async",
       sync_count: int = 1, sync_strict: bool = False, tls: bool = False,
       timings: str = "default") -> lab.LabState:
    lab_dir = lab_dir.resolve()
    addresses = lab.lab_regions(regions)
    if rejoin not in lab.REJOIN_MODES:
        raise UserError(f"--rejoin: {rejoin!r}; use {' or '.join(lab.REJOIN_MODES)}")
    if durability not in lab.DURABILITY_MODES:
        raise UserError(f"--durability: {durability!r}; use "
                        f"{' or '.join(lab.DURABILITY_MODES)}")
    if timings not in lab.TIMINGS:
        raise UserError(f"--timings: {timings!r}; use {' or '.join(lab.TIMINGS)}")
    if not 1 <= sync_count < len(addresses):
        raise UserError(f"--sync-count: {sync_count}; use 1 to {len(addresses) - 1}, the "
                        f"subscribers of a {len(addresses)}-region lab")
    # Before anything starts or is removed: what --tls needs.
    tls_binaries = _tls_prerequisites() if tls else None
    if is_up(lab_dir):
        raise UserError(f"--dir: a lab is already running in {lab_dir}; `failover lab status` "
                        "shows it, `failover lab down` stops it")
    if os.geteuid() != 0:
        raise UserError("failover lab up needs root: each region runs as its own user so that "
                        "faults can isolate it (run it with sudo)")
    check_reachable(lab_dir)
    if lab_dir.exists():
        shutil.rmtree(lab_dir)
    lab_dir.mkdir(parents=True)
    lab_dir.chmod(0o755)
    started: list[PgServer] = []
    controller_pids: list[int] = []
    named = None
    etcd: EtcdCluster | None = None
    etcd_members: list[lab.EtcdMember] = []
    try:
        bindir = tls_binaries or pg_bindir()
        progress(f"PostgreSQL {server_version(bindir)} from {bindir}")
        users = {name: region_user(name) for name in addresses}
        server_tls = issue_tls(lab_dir, addresses, users) if tls else {}
        if tls:
            progress(f"TLS: the lab's CA {lab.lab_ca_file(lab_dir)}, a certificate per region")
        servers: dict[str, PgServer] = {}
        for name, address in addresses.items():
            server = init_server(lab_dir / "pg", name, address, port=lab.PG_PORT, bindir=bindir,
                                 run_as=users[name], tls=server_tls.get(name))
            server.start()
            started.append(server)
            servers[name] = server
            _demo_database(server)
            progress(f"{name}: PostgreSQL on {address}:{lab.PG_PORT}"
                     + (" (TLS only)" if tls else ""))

        key = generate_key("lab-key")
        dns_dir = lab_dir / "dns"
        named = start_primary(
            dns_dir, Endpoint(lab.DNS_ADDRESS, lab.DNS_PORT), lab.ZONE, key,
            records=[ZoneRecord(lab.WRITER_RECORD, "A", addresses[lab.FIRST_WRITER], lab.TTL),
                     *(ZoneRecord(lab.READER_RECORD, "A", address, lab.TTL)
                       for address in addresses.values())])
        tsig_file = dns_dir / "tsig.key"
        tsig_file.chmod(0o644)  # the lab's controllers run as their regions' users
        progress(f"BIND9 on {lab.DNS_ADDRESS}:{lab.DNS_PORT} serving {lab.ZONE}")

        key_file = lab_dir / "fleet.key"
        key_file.write_text(secrets.token_hex(32) + "\n")
        key_file.chmod(0o644)
        coordination_settings: dict[str, Any] = {"backend": coordination}
        if coordination == "etcd":
            etcd_addresses = {name: lab.ETCD_ADDRESSES[name] for name in addresses}
            etcd = start_cluster(lab_dir / "etcd", list(etcd_addresses.values()),
                                 groups=[users[name].gid for name in etcd_addresses])
            coordination_settings["etcd"] = {"endpoints": etcd.endpoints,
                                             "prefix": "/failover/lab", "lease_ttl": "5s"}
            etcd_members = [
                lab.EtcdMember(name=member.name, region=region, address=member.address,
                               client_url=member.client_url, pid=member.pid)
                for region, member in zip(etcd_addresses, etcd.members, strict=True)]
            progress(f"etcd cluster on {', '.join(etcd_addresses.values())}")
        topo_dir = _write_topology(lab_dir, addresses, key_file=key_file, tsig_file=tsig_file,
                                   tsig_name=key.name, coordination=coordination_settings,
                                   rejoin=rejoin, durability=durability, sync_count=sync_count,
                                   sync_strict=sync_strict, tls=tls,
                                   timings=lab.TIMINGS[timings])
        topo = load_topology(topo_dir)

        with ServiceDatabases.from_topology(topo, lab.SERVICE).opened() as db:
            for name in addresses:
                install(db.conn(name), lab.SERVICE, name)
            run_steps(replication_steps(db, lab.FIRST_WRITER).steps)
        progress(f"logical replication {lab.FIRST_WRITER} -> "
                 f"{', '.join(r for r in addresses if r != lab.FIRST_WRITER)}")

        region_states = []
        for name, address in addresses.items():
            pid = start_controller(lab_dir, topo_dir, name, users[name])
            controller_pids.append(pid)
            region_states.append(lab.RegionState(
                name=name, address=address, pg_port=lab.PG_PORT,
                data_dir=str(servers[name].datadir), postmaster_pid=servers[name].pid,
                controller_url=controller_url(address, tls=tls), controller_pid=pid,
                user=users[name].name))
        state = lab.LabState(
            dir=str(lab_dir), topology=str(topo_dir), coordination=coordination,
            pg_version=server_version(bindir), regions=region_states,
            dns=lab.DnsState(address=lab.DNS_ADDRESS, port=lab.DNS_PORT, zone=lab.ZONE,
                             key_file=str(tsig_file), pid=named.pid),
            service=lab.ServiceState(name=lab.SERVICE, database=lab.SERVICE,
                                     writer_record=lab.WRITER_RECORD,
                                     reader_record=lab.READER_RECORD, ttl=lab.TTL,
                                     app_role=lab.APP_ROLE, rejoin=rejoin,
                                     durability=durability, sync_count=sync_count,
                                     sync_strict=sync_strict, timings=timings),
            etcd=etcd_members, tls=tls, pg_bindir=str(bindir))
        lab.save(state, lab_dir)
        progress("controllers started; waiting for the fleet to be healthy")
        wait_healthy(state, timeout, progress)
        return state
    except BaseException:
        for pid in controller_pids:
            processes.stop(pid, signal.SIGTERM, 10.0)
        if named is not None:
            named.stop()
        if etcd is not None:
            etcd.stop()
        for server in started:
            server.stop()
        raise


def down(lab_dir: Path, *, purge: bool, progress: Progress) -> None:
    lab_dir = lab_dir.resolve()
    state = lab.load(lab_dir)
    # Of the faults in force, only the packet filter outlives the processes (stopping
    # wakes stopped ones first): nothing else needs undoing.
    netfilter.undrop(None)
    state.faults.clear()
    lab.save(state, lab_dir)
    for region in state.regions:
        processes.stop(region.controller_pid, signal.SIGTERM, 10.0)
        progress(f"{region.name}: controller stopped")
    for region in state.regions:
        processes.stop(region.postmaster_pid, signal.SIGINT, 30.0)  # fast shutdown
        progress(f"{region.name}: PostgreSQL stopped")
    processes.stop(state.dns.pid, signal.SIGTERM, 10.0)
    progress("BIND9 stopped")
    for member in state.etcd:
        processes.stop(member.pid, signal.SIGTERM, 10.0)
    if purge:
        shutil.rmtree(lab_dir)
        progress(f"removed {lab_dir}")
