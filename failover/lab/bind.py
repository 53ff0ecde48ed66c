"""BIND9 servers for tests and the lab: a primary that takes TSIG-signed dynamic
updates for one zone, optionally secondaries fed by NOTIFY and zone transfer.

Each server has its own working directory (named writes the update journal
there), listens on one loopback address and port, runs in the foreground
(`-g`) as the unprivileged lab user when we are root, and is stopped by PID.
named only listens on addresses an interface holds (it binds per interface,
never the wildcard), so a loopback address other than 127.0.0.1 is added to
`lo` as a /32 while the server runs, and removed when it stops.
The lab runs one on 127.0.0.1:5300 for `lab.test.`; tests run theirs on their
own loopback block.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception

from failover.dns.tsig import TsigKey
from failover.dns.wire import Endpoint, ServerAnswerError, soa_serial
from failover.errors import FailoverError
from failover.lab import daemons
from failover.lab.unprivileged import server_user

APT_PACKAGES = ("bind9", "bind9-dnsutils")
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


def named_binary() -> Path:
    """Where `named` is; a UserError says which packages to install when it is missing."""
    return daemons.installed_binary("named", "/usr/sbin/named", APT_PACKAGES,
                                    what="BIND9's `named`")


def ensure_installed() -> Path:
    """Install BIND9 with apt when `named` is missing (test runners call this); its path."""
    return daemons.ensure_installed(named_binary, APT_PACKAGES)


@dataclass(frozen=True)
class ZoneRecord:
    name: str  # relative to the zone, or absolute with a trailing dot
    rtype: str
    value: str
    ttl: int = 60


def free_port(hosts: Sequence[str], *, first: int = 20000, last: int = 60000) -> int:
    """A port free for both TCP and UDP on every one of `hosts` (DNS needs both)."""
    start = random.randrange(first, last)  # noqa: S311 - spreads sessions, not a secret
    for offset in range(last - first):
        port = first + (start - first + offset) % (last - first)
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    sockets.append(sock)
                    sock.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise FailoverError(f"no port free for DNS on {', '.join(hosts)} in {first}-{last}")


def _interface_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def _hold_loopback_address(address: str) -> bool:
    """Put `address` on `lo` unless an interface has it; True when we added it."""
    if address == "127.0.0.1" or address in _interface_addresses():
        return False
    result = subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"],
                            capture_output=True, text=True, check=False, timeout=10)
    if result.returncode != 0:
        raise FailoverError(f"cannot add {address} to the loopback interface for named "
                            f"(needs root): {result.stderr.strip()}")
    return True


def _release_loopback_address(address: str) -> None:
    subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True,
                   check=False, timeout=10)


@dataclass
class NamedServer:
    endpoint: Endpoint
    zone: str
    workdir: Path
    process: subprocess.Popen[bytes]
    added_address: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_file(self) -> Path:
        return self.workdir / "named.log"

    def pause(self) -> None:
        """SIGSTOP: the server holds its sockets but answers nothing (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        daemons.stop(self.process, _STOP_TIMEOUT)
        if self.added_address:
            _release_loopback_address(self.endpoint.host)
            self.added_address = False


def _options(address: str, port: int, workdir: Path, extra: str) -> str:
    return f"""options {{
	directory "{workdir}";
	pid-file "{workdir}/named.pid";
	session-keyfile "{workdir}/session.key";
	managed-keys-directory "{workdir}";
	listen-on port {port} {{ {address}; }};
	listen-on-v6 {{ none; }};
	query-source address {address};
	notify-source {address};
	transfer-source {address};
	recursion no;
	dnssec-validation no;
	allow-query {{ any; }};
	// BIND paces NOTIFYs and the SOA queries they trigger in 500 ms ticks at
	// the default rate of 20/s; at 1000/s the tick is 10 ms, so a secondary
	// picks up a failover's update in milliseconds, not half a second.
	notify-rate 1000;
	serial-query-rate 1000;
{extra}}};
controls {{ }};
"""


def _zone_text(zone: str, nameservers: Sequence[str], records: Sequence[ZoneRecord]) -> str:
    lines = [
        "$TTL 60",
        f"@ IN SOA ns1.{zone} hostmaster.{zone} 1 3600 600 86400 60",
    ]
    for index, address in enumerate(nameservers, start=1):
        lines += [f"@ IN NS ns{index}.{zone}", f"ns{index} IN A {address}"]
    lines += [f"{r.name} {r.ttl} IN {r.rtype} {r.value}" for r in records]
    return "\n".join(lines) + "\n"


def _start(workdir: Path, endpoint: Endpoint, zone: str, config: str) -> NamedServer:
    named = named_binary()
    (workdir / "named.conf").write_text(config)
    user = server_user()
    # The server user must reach its folder through the parent (tests' tmp dirs are 0700).
    for path in (workdir.parent, workdir):
        path.chmod(0o755)
    user.chown(workdir)
    added_address = _hold_loopback_address(endpoint.host)
    try:
        process = daemons.spawn(
            [str(named), "-g", "-4", "-n", "1", "-c", str(workdir / "named.conf")],
            cwd=workdir, log_file=workdir / "named.log", run_as=user, env=user.env())
    except OSError:
        if added_address:
            _release_loopback_address(endpoint.host)
        raise
    server = NamedServer(endpoint=endpoint, zone=zone, workdir=workdir, process=process,
                         added_address=added_address)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            tail = server.log_file.read_text(errors="replace")[-2000:]
            raise FailoverError(f"named exited with {process.returncode} on {endpoint}:\n{tail}")
        try:
            soa_serial(endpoint, zone, timeout=0.5)
            return server
        except (dns.exception.DNSException, OSError, EOFError, ServerAnswerError):
            time.sleep(0.05)
    server.stop()
    raise FailoverError(f"named did not serve {zone} on {endpoint} within {_START_TIMEOUT:g} s; "
                        f"see {server.log_file}")


def start_primary(workdir: Path, endpoint: Endpoint, zone: str, key: TsigKey, *,
                  records: Sequence[ZoneRecord] = (), nameservers: Sequence[str] = (),
                  notify: Sequence[Endpoint] = (),
                  other_keys: Sequence[TsigKey] = ()) -> NamedServer:
    """A primary for `zone` that lets `key` update any name in it and transfer it.

    `other_keys` are known to the server (they sign valid requests) but may not
    update anything: what a key that the update-policy leaves out looks like.

    `nameservers` are the addresses published as the zone's NS (default: this
    server's); `notify` are the secondaries told about every change at once
    (notify-delay 0: a failover should not wait the default 5 s).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    zone = zone if zone.endswith(".") else zone + "."
    (workdir / "zone.db").write_text(
        _zone_text(zone, nameservers or [endpoint.host], records))
    (workdir / "tsig.key").write_text(key.bind_config())
    (workdir / "tsig.key").chmod(0o640)
    known_keys = "".join(other.bind_config() for other in other_keys)
    also_notify = "".join(f"{target.host} port {target.port}; " for target in notify)
    notify_options = (f"\tnotify explicit;\n\tnotify-delay 0;\n\talso-notify {{ {also_notify}}};\n"
                      if notify else "\tnotify no;\n")
    config = (
        f'include "{workdir}/tsig.key";\n'
        + known_keys
        + _options(endpoint.host, endpoint.port, workdir, notify_options)
        + f'zone "{zone}" {{\n\ttype primary;\n\tfile "{workdir}/zone.db";\n'
        f"\tupdate-policy {{ grant {key.name} zonesub ANY; }};\n"
        f"\tallow-transfer {{ key {key.name}; }};\n}};\n"
    )
    return _start(workdir, endpoint, zone, config)


def start_secondary(workdir: Path, endpoint: Endpoint, zone: str, primary: Endpoint,
                    key: TsigKey) -> NamedServer:
    """A secondary that transfers `zone` from `primary` (signed with `key`) on NOTIFY."""
    workdir.mkdir(parents=True, exist_ok=True)
    zone = zone if zone.endswith(".") else zone + "."
    (workdir / "tsig.key").write_text(key.bind_config())
    (workdir / "tsig.key").chmod(0o640)
    config = (
        f'include "{workdir}/tsig.key";\n'
        + _options(endpoint.host, endpoint.port, workdir, "\tnotify no;\n")
        + f'zone "{zone}" {{\n\ttype secondary;\n\tfile "{workdir}/zone.db";\n'
        f"\tprimaries {{ {primary.host} port {primary.port} key {key.name}; }};\n"
        f"\tallow-notify {{ {primary.host}; }};\n}};\n"
    )
    return _start(workdir, endpoint, zone, config)


def restart(workdir: Path, endpoint: Endpoint, zone: str) -> NamedServer:
    """Start named again from the configuration a stopped server left in `workdir`.

    The zone file is not rewritten, so the update journal (.jnl) is replayed:
    every change accepted before the stop is served again.
    """
    return _start(workdir, endpoint, zone, (workdir / "named.conf").read_text())
