"""http, tcp, command and dns probes against real servers on this session's loopback block."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from failover.dns.tsig import generate_key
from failover.dns.wire import Endpoint
from failover.health.command import CommandProbe
from failover.health.dns import DnsProbe
from failover.health.http import HttpProbe
from failover.health.probe import TIMEOUT_REASON, ProbeResult
from failover.health.tcp import TcpProbe
from failover.lab.bind import NamedServer, ZoneRecord, ensure_installed, free_port, start_primary
from failover.lab.pki import Authority
from failover.topology import CommandCheck, DnsCheck, HttpCheck, TcpCheck
from tests.support.loopback import LoopbackBlock, allocate_block

pytestmark = pytest.mark.integration

# Generous: the probe must give up at its timeout, not within a scheduling hair of it.
SLACK = 3.0


@pytest.fixture(scope="module")
def block() -> LoopbackBlock:
    return allocate_block()


def health_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="status: all good")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/healthz")

    async def client(request: web.Request) -> web.Response:
        """Who the TLS client certificate says the caller is."""
        assert request.transport is not None
        peer = request.transport.get_extra_info("peercert") or {}
        names = [value for rdn in peer.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
        return web.Response(text=f"client: {', '.join(names) or 'anonymous'}")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/old", moved)
    app.router.add_get("/client", client)
    return app


@asynccontextmanager
async def http_server(host: str, port: int, tls: ssl.SSLContext | None = None
                      ) -> AsyncIterator[str]:
    runner = web.AppRunner(health_app())
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def silent_server(host: str, port: int) -> AsyncIterator[None]:
    """Accepts connections and never says a word: a hung application."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, host, port)
    try:
        yield
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def http_check(url: str, **fields: object) -> HttpCheck:
    return HttpCheck.model_validate({"kind": "http", "name": "web", "url": url,
                                     "interval": 2, "timeout": 0.5, **fields})


async def probe_http(check: HttpCheck) -> ProbeResult:
    probe = HttpProbe(check)
    try:
        return await probe.run()
    finally:
        await probe.close()


def assert_timed_out(result: ProbeResult, timeout: float) -> None:
    assert not result.ok
    # On a busy machine the timeout may fire late and be marked inconclusive.
    assert result.reason.startswith(TIMEOUT_REASON)
    assert timeout <= result.latency_s < timeout + SLACK


# ---------------------------------------------------------------- http


def test_http_2xx_is_healthy_and_3xx_too(block: LoopbackBlock) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        async with http_server(block.address(1), 8080) as base:
            return (await probe_http(http_check(f"{base}/healthz")),
                    await probe_http(http_check(f"{base}/old")))

    ok, redirect = asyncio.run(scenario())
    assert ok.ok and ok.reason == "HTTP 200"
    assert redirect.ok and redirect.reason == "HTTP 302"


def test_http_5xx_is_a_failure_that_names_the_status(block: LoopbackBlock) -> None:
    async def scenario() -> ProbeResult:
        async with http_server(block.address(1), 8080) as base:
            return await probe_http(http_check(f"{base}/broken"))

    result = asyncio.run(scenario())
    assert not result.ok
    assert result.reason == "HTTP 503 (expected 2xx or 3xx)"
    assert result.details["status"] == 503


def test_http_expected_statuses_replace_the_default(block: LoopbackBlock) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        async with http_server(block.address(1), 8080) as base:
            return (await probe_http(http_check(f"{base}/broken", expect_status=[503])),
                    await probe_http(http_check(f"{base}/old", expect_status=[200])))

    maintenance, redirect = asyncio.run(scenario())
    assert maintenance.ok
    assert not redirect.ok and redirect.reason == "HTTP 302 (expected 200)"


def test_http_body_match(block: LoopbackBlock) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        async with http_server(block.address(1), 8080) as base:
            return (await probe_http(http_check(f"{base}/healthz", body_contains="all good")),
                    await probe_http(http_check(f"{base}/healthz", body_contains="primary")))

    found, missing = asyncio.run(scenario())
    assert found.ok
    assert not missing.ok
    assert missing.reason == "HTTP 200 but the body does not contain 'primary'"


def test_http_probe_keeps_one_connection_and_survives_the_server_dropping_it(
        block: LoopbackBlock) -> None:
    """Probes of a check reuse one connection; an idle one the server closed is replaced."""
    peers: list[object] = []

    async def ok(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="ok")

    async def scenario() -> list[ProbeResult]:
        app = web.Application()
        app.router.add_get("/healthz", ok)
        # The server forgets idle connections after 0.2 s, as nginx does after its keepalive_timeout.
        runner = web.AppRunner(app, keepalive_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, block.address(4), 8080).start()
        probe = HttpProbe(http_check(f"http://{block.address(4)}:8080/healthz"))
        try:
            results = [await probe.run() for _ in range(3)]
            await asyncio.sleep(0.6)  # the server has closed our connection by now
            results.append(await probe.run())
            return results
        finally:
            await probe.close()
            await runner.cleanup()

    results = asyncio.run(scenario())
    assert [r.ok for r in results] == [True] * 4, [r.reason for r in results]
    assert len(set(peers[:3])) == 1, f"three probes used {len(set(peers[:3]))} connections"
    assert peers[3] != peers[0], "the probe after the idle close must use a new connection"


def test_http_chunked_body_match_and_basic_auth_from_the_url(block: LoopbackBlock) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"ops:s3cret").decode():
            return web.Response(status=401)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"role: ", b"x" * 100_000, b" primary"):
            await response.write(part)
        await response.write_eof()
        return response

    async def scenario() -> tuple[ProbeResult, ProbeResult, ProbeResult]:
        app = web.Application()
        app.router.add_get("/role", chunked)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, block.address(4), 8081).start()
        base = f"{block.address(4)}:8081/role"
        try:
            return (await probe_http(http_check(f"http://ops:s3cret@{base}", body_contains="role")),
                    # The marker lies beyond the 64 KiB the probe reads: not found, said plainly.
                    await probe_http(http_check(f"http://ops:s3cret@{base}",
                                                body_contains="primary")),
                    await probe_http(http_check(f"http://{base}")))
        finally:
            await runner.cleanup()

    found, beyond, unauthorized = asyncio.run(scenario())
    assert found.ok, found.reason
    assert not beyond.ok and "does not contain 'primary'" in beyond.reason
    assert not unauthorized.ok and unauthorized.reason == "HTTP 401 (expected 2xx or 3xx)"


def https_server_context(authority: Authority, host: str, *, client_certificates: bool
                         ) -> ssl.SSLContext:
    """A server certificate for `host` from a private CA; `client_certificates`: one signed
    by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*authority.issue("server", addresses=[host]))
    if client_certificates:
        context.load_verify_locations(authority.cert_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_https_with_a_private_ca_is_healthy_with_its_ca_file_and_names_the_certificate_without(
        block: LoopbackBlock, tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    host = block.address(1)

    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        tls = https_server_context(authority, host, client_certificates=False)
        async with http_server(host, 8443, tls) as base:
            return (await probe_http(http_check(f"{base}/healthz",
                                                ca_file=authority.cert_file)),
                    await probe_http(http_check(f"{base}/healthz")))

    trusted, unknown = asyncio.run(scenario())
    assert trusted.ok and trusted.reason == "HTTP 200"
    assert not unknown.ok
    assert unknown.reason.startswith("TLS: the server's certificate is not trusted (")
    assert unknown.reason.endswith("checked against the system's CA store")


def test_https_presents_the_client_certificate_of_cert_file_and_key_file(
        block: LoopbackBlock, tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    host = block.address(1)
    cert, key = authority.issue("probe", common_name="failover probe")

    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        tls = https_server_context(authority, host, client_certificates=True)
        async with http_server(host, 8443, tls) as base:
            url = f"{base}/client"
            return (await probe_http(http_check(
                        url, ca_file=authority.cert_file, cert_file=cert, key_file=key,
                        body_contains="client: failover probe")),
                    await probe_http(http_check(url, ca_file=authority.cert_file)))

    presented, without = asyncio.run(scenario())
    assert presented.ok, presented.reason
    assert not without.ok, without.reason  # the server asked for a certificate and got none


def test_http_connection_refused(block: LoopbackBlock) -> None:
    result = asyncio.run(probe_http(http_check(f"http://{block.address(2)}:8080/healthz")))
    assert not result.ok
    assert result.reason == "connection refused"


def test_http_server_that_never_answers_times_out(block: LoopbackBlock) -> None:
    async def scenario() -> ProbeResult:
        async with silent_server(block.address(3), 8080):
            return await probe_http(http_check(f"http://{block.address(3)}:8080/healthz"))

    assert_timed_out(asyncio.run(scenario()), 0.5)


@pytest.fixture
def stopped_http_server(block: LoopbackBlock) -> Iterator[str]:
    """A real HTTP server in another process, SIGSTOPped once it answers."""
    host, port = block.address(4), 8080
    process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", host, str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        os.kill(process.pid, signal.SIGSTOP)
        yield f"http://{host}:{port}/"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def test_http_sigstopped_server_times_out(stopped_http_server: str) -> None:
    assert_timed_out(asyncio.run(probe_http(http_check(stopped_http_server))), 0.5)


# ---------------------------------------------------------------- tcp


def tcp_check(host: str, port: int) -> TcpCheck:
    return TcpCheck(kind="tcp", name="port", host=host, port=port, interval=2, timeout=0.5)


def test_tcp_connects_to_a_listening_port(block: LoopbackBlock) -> None:
    async def scenario() -> ProbeResult:
        async with silent_server(block.address(5), 5432):
            return await TcpProbe(tcp_check(block.address(5), 5432)).run()

    result = asyncio.run(scenario())
    assert result.ok and result.reason == "connected"


def test_tcp_resolves_a_host_name() -> None:
    # An ephemeral port the kernel picks: no other session can hold it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        port = listener.getsockname()[1]
        result = asyncio.run(TcpProbe(tcp_check("localhost", port)).run())
    finally:
        listener.close()
    assert result.ok and result.reason == "connected"


def test_tcp_refused_when_nothing_listens(block: LoopbackBlock) -> None:
    result = asyncio.run(TcpProbe(tcp_check(block.address(6), 5432)).run())
    assert not result.ok
    assert result.reason == "connection refused"


def test_tcp_times_out_when_the_listen_queue_is_full(block: LoopbackBlock) -> None:
    # A listener that never accepts, with a full backlog: the SYN goes unanswered,
    # as with a host that dropped off the network.
    listener = socket.socket()
    listener.bind((block.address(7), 5432))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((block.address(7), 5432))
            fillers.append(filler)
        time.sleep(0.1)
        assert_timed_out(asyncio.run(TcpProbe(tcp_check(block.address(7), 5432)).run()), 0.5)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ---------------------------------------------------------------- command


def command_check(*argv: str, timeout: float = 1.0) -> CommandCheck:
    return CommandCheck(kind="command", name="script", argv=list(argv), interval=5,
                        timeout=timeout)


def test_command_exit_0_is_healthy() -> None:
    result = asyncio.run(CommandProbe(command_check("true")).run())
    assert result.ok and result.reason == "exit 0"


def test_command_failure_reports_the_exit_code_and_the_last_line_of_stderr() -> None:
    check = command_check("sh", "-c", "echo starting >&2; echo replica is behind >&2; exit 3")
    result = asyncio.run(CommandProbe(check).run())
    assert not result.ok
    assert result.reason == "exit 3: replica is behind"
    assert result.details["exit_code"] == 3


def test_command_that_cannot_run_says_so() -> None:
    result = asyncio.run(CommandProbe(command_check("/nonexistent/check-db")).run())
    assert not result.ok
    assert result.reason == "cannot run /nonexistent/check-db: No such file or directory"


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A shell that starts a grandchild, then hangs: both must be gone after the timeout.
    script = f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    result = asyncio.run(CommandProbe(command_check("sh", "-c", script, timeout=0.5)).run())
    assert_timed_out(result, 0.5)
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]


# ---------------------------------------------------------------- dns

ZONE = "probe.test."


@pytest.fixture(scope="module")
def named(block: LoopbackBlock) -> Iterator[NamedServer]:
    ensure_installed()
    host = block.address(53)
    workdir = Path(tempfile.mkdtemp(prefix="failover-probe-dns-"))
    server = start_primary(workdir / "primary", Endpoint(host, free_port([host])), ZONE,
                           generate_key("probe-test"),
                           records=[ZoneRecord("app", "A", "10.0.0.1", ttl=5),
                                    ZoneRecord("ro", "A", "10.0.0.2"),
                                    ZoneRecord("ro", "A", "10.0.0.3")])
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def dns_check(server: NamedServer, query: str, **fields: object) -> DnsCheck:
    return DnsCheck.model_validate({"kind": "dns", "name": "writer", "query": query,
                                    "server": server.endpoint.host,
                                    "port": server.endpoint.port,
                                    "interval": 2, "timeout": 0.5, **fields})


def test_dns_name_resolves(named: NamedServer) -> None:
    result = asyncio.run(DnsProbe(dns_check(named, "app.probe.test")).run())
    assert result.ok and result.reason == "A 10.0.0.1"
    assert result.details == {"answers": ["10.0.0.1"], "ttl": 5}


def test_dns_expected_values_must_match_exactly(named: NamedServer) -> None:
    async def scenario() -> list[ProbeResult]:
        return [await DnsProbe(dns_check(named, query, expect=expect)).run()
                for query, expect in [("ro.probe.test.", ["10.0.0.3", "10.0.0.2"]),
                                      ("app.probe.test.", ["10.0.0.9"]),
                                      ("ro.probe.test.", ["10.0.0.2"])]]

    both, wrong, partial = asyncio.run(scenario())
    assert both.ok
    assert not wrong.ok and wrong.reason == "expected 10.0.0.9, got 10.0.0.1"
    assert not partial.ok and partial.reason == "expected 10.0.0.2, got 10.0.0.2, 10.0.0.3"


def test_dns_missing_name_and_missing_type(named: NamedServer) -> None:
    async def scenario() -> list[ProbeResult]:
        return [await DnsProbe(dns_check(named, "gone.probe.test.")).run(),
                await DnsProbe(dns_check(named, "app.probe.test.", record_type="AAAA")).run()]

    gone, no_aaaa = asyncio.run(scenario())
    assert not gone.ok and gone.reason == "NXDOMAIN: gone.probe.test. does not exist"
    assert not no_aaaa.ok and no_aaaa.reason == "app.probe.test. has no AAAA record"


def test_dns_hung_server_times_out(named: NamedServer) -> None:
    named.pause()
    try:
        result = asyncio.run(DnsProbe(dns_check(named, "app.probe.test.")).run())
    finally:
        named.resume()
    assert_timed_out(result, 0.5)
