"""DNS re-routing figures: how long until a change is served, and API calls per change.

    .venv/bin/python benchmarks/dns.py [--changes 50] [--route53-changes 20]

1. BIND9 on loopback (a primary and a NOTIFY-fed secondary, both authoritative):
   time from the compare-and-set call until `wait_visible` returns, i.e. until
   both servers answer the new value; median and p99 (target p99 < 200 ms).
2. Route 53 on a moto server: API calls per compare-and-set + INSYNC wait,
   counted per operation with a botocore `before-call` hook (target: 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

# Run as a script, this file's folder heads sys.path, and this very file would
# shadow dnspython's `dns` package: the repository root takes its place.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from failover.dns import RecordKey, RecordSet
from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.route53 import Route53Provider
from failover.dns.tsig import generate_key
from failover.dns.wire import Endpoint
from failover.lab.bind import free_port, start_primary, start_secondary
from tests.support.loopback import allocate_block
from tests.support.moto_server import start_moto_server

ZONE = "bench.test."


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bind_visibility(changes: int) -> dict[str, Any]:
    block = allocate_block()
    primary_at, secondary_at = block.address(1), block.address(2)
    port = free_port([primary_at, secondary_at])
    workdir = Path(tempfile.mkdtemp(prefix="failover-bench-dns-"))
    key = generate_key("bench")
    servers = []
    try:
        primary = start_primary(workdir / "primary", Endpoint(primary_at, port), ZONE, key,
                                nameservers=[primary_at, secondary_at],
                                notify=[Endpoint(secondary_at, port)])
        servers.append(primary)
        servers.append(start_secondary(workdir / "secondary", Endpoint(secondary_at, port), ZONE,
                                       primary.endpoint, key))
        provider = Rfc2136Provider(ZONE, primary.endpoint, key, timeout=1.0)
        record_key = RecordKey(f"writer.{ZONE}")
        current = None
        provider.authoritative_servers()  # found once per provider, not per change
        update_ms, total_ms = [], []
        for n in range(changes):
            desired = RecordSet(record_key, 30, frozenset({f"192.0.2.{n % 2 + 1}"}))
            started = time.perf_counter()
            change = provider.compare_and_set(current, desired)
            updated = time.perf_counter()
            provider.wait_visible(change, timeout=10)
            served = time.perf_counter()
            update_ms.append((updated - started) * 1000)
            total_ms.append((served - started) * 1000)
            current = desired
        return {
            "servers": len(provider.authoritative_servers()),
            "changes": changes,
            "update_ms_median": round(statistics.median(update_ms), 1),
            "served_everywhere_ms_median": round(statistics.median(total_ms), 1),
            "served_everywhere_ms_p99": round(percentile(total_ms, 0.99), 1),
            "served_everywhere_ms_max": round(max(total_ms), 1),
        }
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def count_calls(provider: Route53Provider) -> Counter[str]:
    """API operations the provider calls, once per operation (botocore retries are off)."""
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    provider.client.meta.events.register("before-call.route53", count)
    return calls


def route53_calls(changes: int) -> dict[str, Any]:
    block = allocate_block()
    log_dir = Path(tempfile.mkdtemp(prefix="failover-bench-moto-"))
    moto = start_moto_server(block.address(1), log_dir)
    try:
        session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench",
                                region_name="us-east-1")
        client = session.client("route53", endpoint_url=moto.url, region_name="us-east-1")
        zone_id = client.create_hosted_zone(Name=ZONE, CallerReference=uuid.uuid4().hex)[
            "HostedZone"]["Id"]
        figures: dict[str, Any] = {"changes": changes}
        for guarded in (False, True):
            provider = Route53Provider(ZONE, zone_id, endpoint_url=moto.url, session=session,
                                       requests_per_second=1000, poll_interval=0.05,
                                       verify_before_change=guarded)
            calls = count_calls(provider)
            record_key = RecordKey(f"writer-{int(guarded)}.{ZONE}")
            current = None
            for n in range(changes):
                # Fresh values each time: moto refuses a CREATE it has seen before.
                desired = RecordSet(record_key, 30, frozenset({f"192.0.2.{n + 1}"}))
                provider.wait_visible(provider.compare_and_set(current, desired), timeout=30)
                current = desired
            label = "with_emulator_check" if guarded else "as_on_route53"
            figures[label] = {"calls_per_change": sum(calls.values()) / changes,
                              "by_operation": {op: n / changes for op, n in calls.items()}}
        return figures
    finally:
        moto.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--route53-changes", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps({"bind9_loopback": bind_visibility(args.changes),
                      "route53_moto": route53_calls(args.route53_changes)}, indent=2))


if __name__ == "__main__":
    main()
