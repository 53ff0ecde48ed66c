"""Route 53 through boto3 against a real moto server, with a real HTTP proxy in
between that can answer Throttling, count requests per second, and show a
change as PENDING before INSYNC (moto says INSYNC at once)."""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from failover.dns import (
    DnsUnavailable,
    RecordConflict,
    RecordKey,
    RecordSet,
    Routing,
    VisibilityTimeout,
)
from failover.dns.route53 import Route53Provider
from failover.errors import UserError
from tests.support.loopback import allocate_block
from tests.support.moto_server import MotoServer, start_moto_server

pytestmark = pytest.mark.integration

ZONE = "r53.test."
THROTTLED = (b'<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/'
             b'2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate '
             b'exceeded</Message></Error><RequestId>proxy</RequestId></ErrorResponse>')


@dataclass
class Proxy:
    """A loopback HTTP hop in front of moto that misbehaves the way Route 53 can."""

    upstream: tuple[str, int]
    throttle_first: int = 0
    max_per_second: int | None = None
    pending_answers: int = 0
    requests: int = 0
    throttled: int = 0
    paths: list[str] = field(default_factory=list)
    _recent: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, path: str) -> bool:
        """Count the request; False when it must be answered with Throttling."""
        with self._lock:
            now = time.monotonic()
            self.requests += 1
            self.paths.append(path)
            self._recent.append(now)
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            too_fast = self.max_per_second is not None and len(self._recent) > self.max_per_second
            if self.requests <= self.throttle_first or too_fast:
                self.throttled += 1
                return False
            return True

    def rewrite(self, body: bytes) -> bytes:
        with self._lock:
            if self.pending_answers > 0 and b"<Status>INSYNC</Status>" in body:
                self.pending_answers -= 1
                return body.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        return body


def serve_proxy(proxy: Proxy, host: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not proxy.admit(self.path):
                self.send_response(400)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(THROTTLED)))
                self.end_headers()
                self.wfile.write(THROTTLED)
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = upstream.getresponse()
                payload = proxy.rewrite(response.read())
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                upstream.close()

        do_GET = do_POST = do_DELETE = _forward

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Route53Lab:
    moto: MotoServer
    proxy: Proxy
    proxy_url: str
    session: boto3.Session
    zone_id: str

    def direct(self) -> Any:
        """A plain boto3 client straight to moto, for setup and for looking."""
        return self.session.client("route53", endpoint_url=self.moto.url, region_name="us-east-1")

    def provider(self, **options: Any) -> Route53Provider:
        options = {"verify_before_change": True, "requests_per_second": 1000.0,
                   "poll_interval": 0.02, "timeout": 5.0, **options}
        return Route53Provider(ZONE, self.zone_id, endpoint_url=self.proxy_url,
                               session=self.session, **options)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    block = allocate_block()
    server = start_moto_server(block.address(1), Path(tempfile.gettempdir()))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(moto: MotoServer) -> Iterator[Route53Lab]:
    moto.reset()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1")
    client = session.client("route53", endpoint_url=moto.url, region_name="us-east-1")
    zone_id = client.create_hosted_zone(Name=ZONE, CallerReference=uuid.uuid4().hex)[
        "HostedZone"]["Id"]
    proxy = Proxy(upstream=(moto.host, moto.port))
    server = serve_proxy(proxy, moto.host)
    try:
        yield Route53Lab(moto, proxy, f"http://{moto.host}:{server.server_address[1]}", session,
                         zone_id)
    finally:
        server.shutdown()
        server.server_close()


def record(name: str, *values: str, ttl: int = 30, set_id: str | None = None,
           routing: Routing | None = None) -> RecordSet:
    return RecordSet(RecordKey(f"{name}.{ZONE}", "A", set_id), ttl, frozenset(values),
                     routing or Routing())


def create(lab: Route53Lab, *records: RecordSet) -> None:
    """Put records in place straight on moto (not through the proxy under test)."""
    changes = [{"Action": "CREATE",
                "ResourceRecordSet": Route53Provider._to_api(item)} for item in records]
    lab.direct().change_resource_record_sets(HostedZoneId=lab.zone_id,
                                             ChangeBatch={"Changes": changes})


def test_compare_and_set_moves_the_record_and_waits_for_insync(lab: Route53Lab) -> None:
    old = record("writer", "192.0.2.1")
    create(lab, old)
    lab.proxy.pending_answers = 3  # the change and two polls say PENDING
    provider = lab.provider()

    change = provider.compare_and_set(old, record("writer", "192.0.2.2"))
    provider.wait_visible(change, timeout=30)

    assert change.pending
    assert sum("/change/" in path for path in lab.proxy.paths) == 3  # polled until INSYNC
    assert provider.read(old.key) == record("writer", "192.0.2.2")


def test_wait_fails_at_its_deadline_while_the_change_stays_pending(lab: Route53Lab) -> None:
    old = record("writer", "192.0.2.1")
    create(lab, old)
    lab.proxy.pending_answers = 10**6
    provider = lab.provider()
    change = provider.compare_and_set(old, record("writer", "192.0.2.2"))

    with pytest.raises(VisibilityTimeout, match="still PENDING"):
        provider.wait_visible(change, timeout=0.3)


def test_stale_compare_and_set_fails_naming_what_is_there_and_changes_nothing(
        lab: Route53Lab) -> None:
    current = record("writer", "192.0.2.7")
    create(lab, current)
    provider = lab.provider()

    with pytest.raises(RecordConflict) as conflict:
        provider.compare_and_set(record("writer", "192.0.2.1"), record("writer", "192.0.2.9"))

    assert conflict.value.found == current
    assert "192.0.2.7" in str(conflict.value)
    assert provider.read(current.key) == current


def test_creating_a_record_that_exists_is_a_conflict(lab: Route53Lab) -> None:
    create(lab, record("writer", "192.0.2.7"))

    with pytest.raises(RecordConflict):
        lab.provider().compare_and_set(None, record("writer", "192.0.2.9"))


def test_moto_itself_accepts_a_stale_delete_which_is_why_the_provider_checks_first(
        lab: Route53Lab) -> None:
    """Real Route 53 rejects a DELETE whose values differ (InvalidChangeBatch); moto 5.2
    accepts it once such a record has ever existed. If this starts failing, moto
    enforces exact-match DELETE and the emulator check can go."""
    create(lab, record("writer", "192.0.2.1"))
    unguarded = lab.provider(verify_before_change=False)
    unguarded.compare_and_set(record("writer", "192.0.2.1"), record("writer", "192.0.2.2"))

    unguarded.compare_and_set(record("writer", "192.0.2.1"), record("writer", "192.0.2.3"))

    assert unguarded.read(record("writer").key) == record("writer", "192.0.2.3")


def test_the_writer_can_move_back_and_forth(lab: Route53Lab) -> None:
    # moto refuses DELETE+CREATE when that CREATE happened before; the emulator
    # mode's UPSERT must keep a writer that returns to a region working.
    create(lab, record("writer", "192.0.2.1"))
    provider = lab.provider()
    for old, new in [("192.0.2.1", "192.0.2.2"), ("192.0.2.2", "192.0.2.1")] * 2:
        provider.compare_and_set(record("writer", old), record("writer", new))

    assert provider.read(record("writer").key) == record("writer", "192.0.2.1")


def test_weighted_records_change_one_set_identifier_and_leave_the_other(
        lab: Route53Lab) -> None:
    east = record("app", "192.0.2.1", set_id="app-east", routing=Routing(weight=100))
    west = record("app", "192.0.2.2", set_id="app-west", routing=Routing(weight=0))
    create(lab, east, west)
    provider = lab.provider()

    provider.compare_and_set(east, RecordSet(east.key, 30, east.values, Routing(weight=0)))
    provider.compare_and_set(west, RecordSet(west.key, 30, west.values, Routing(weight=100)))

    assert provider.read(east.key) == RecordSet(east.key, 30, east.values, Routing(weight=0))
    assert provider.read(west.key) == RecordSet(west.key, 30, west.values, Routing(weight=100))
    assert len(provider.record_sets(east.key.name, "A")) == 2


def test_failover_routing_records_move_the_primary_address(lab: Route53Lab) -> None:
    primary = record("db", "192.0.2.1", set_id="db-primary", routing=Routing(failover="PRIMARY"))
    secondary = record("db", "192.0.2.2", set_id="db-secondary",
                       routing=Routing(failover="SECONDARY"))
    create(lab, primary, secondary)
    provider = lab.provider()

    moved = RecordSet(primary.key, 30, frozenset({"192.0.2.2"}), primary.routing)
    provider.compare_and_set(primary, moved)

    assert provider.read(primary.key) == moved
    assert provider.read(secondary.key) == secondary


def test_add_and_remove_one_value_of_a_multi_value_record(lab: Route53Lab) -> None:
    create(lab, record("readers", "192.0.2.1", "192.0.2.2"))
    provider = lab.provider()

    provider.wait_visible(provider.add_value(record("readers").key, "192.0.2.3", 30), 10)
    provider.wait_visible(provider.remove_value(record("readers").key, "192.0.2.1"), 10)

    assert provider.read(record("readers").key) == record("readers", "192.0.2.2", "192.0.2.3")


def test_throttled_requests_are_retried_and_each_attempt_is_sent_once(lab: Route53Lab) -> None:
    old = record("writer", "192.0.2.1")
    create(lab, old)
    lab.proxy.throttle_first = 3
    provider = lab.provider()

    provider.compare_and_set(old, record("writer", "192.0.2.2"))

    assert lab.proxy.throttled == 3
    # 3 throttled + the check read + the change: botocore did not retry on its own.
    assert lab.proxy.requests == 5
    assert provider.read(old.key) == record("writer", "192.0.2.2")


def test_throttling_that_does_not_stop_gives_up_with_a_clear_error(lab: Route53Lab) -> None:
    old = record("writer", "192.0.2.1")
    create(lab, old)
    lab.proxy.throttle_first = 10**6

    with pytest.raises(DnsUnavailable, match="still answers Throttling"):
        lab.provider(attempts=3).compare_and_set(old, record("writer", "192.0.2.2"))

    assert lab.proxy.requests == 3


def test_an_unknown_hosted_zone_is_named(lab: Route53Lab) -> None:
    provider = Route53Provider(ZONE, "ZNOSUCHZONE", endpoint_url=lab.proxy_url,
                               session=lab.session)

    with pytest.raises(UserError, match=r"dns\.route53\.hosted_zone_id: .*'ZNOSUCHZONE'"):
        provider.read(record("writer").key)


def test_a_burst_of_200_changes_across_100_services_stays_under_the_rate(
        lab: Route53Lab) -> None:
    services = [f"svc{n:03d}" for n in range(100)]
    create(lab, *(record(name, "192.0.2.1") for name in services))
    # Unpaced, 16 threads reach about 35 requests/s against moto here, so the
    # proxy's limit of 25/s would answer Throttling if the bucket did not pace
    # them at 15/s; the gap absorbs requests that a loaded machine delays
    # after pacing and delivers together. (No check read: one request per
    # change, and moto says INSYNC at once.)
    lab.proxy.max_per_second = 25
    provider = lab.provider(requests_per_second=15.0, verify_before_change=False)

    def fail_over_twice(name: str) -> None:
        for old, new in (("192.0.2.1", "192.0.2.2"), ("192.0.2.2", "192.0.2.3")):
            change = provider.compare_and_set(record(name, old), record(name, new))
            provider.wait_visible(change, timeout=30)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fail_over_twice, services))

    assert lab.proxy.throttled == 0
    assert lab.proxy.requests == 200
    listing = lab.direct().list_resource_record_sets(HostedZoneId=lab.zone_id, MaxItems="300")
    moved = {item["Name"]: [v["Value"] for v in item["ResourceRecords"]]
             for item in listing["ResourceRecordSets"] if item["Type"] == "A"}
    assert moved == {f"{name}.{ZONE}": ["192.0.2.3"] for name in services}
