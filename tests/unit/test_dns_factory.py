"""provider_from_topology builds the provider fleet.toml describes, and sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.dns.factory import provider_from_topology
from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.route53 import Route53Provider
from failover.dns.tsig import generate_key
from failover.dns.wire import Endpoint
from failover.topology import load_topology
from tests.support.bind import write_topology


def test_rfc2136_with_a_key_file_and_an_authoritative_list(tmp_path: Path) -> None:
    key = generate_key("failover")
    (tmp_path / "tsig.key").write_text(key.bind_config())
    topo = load_topology(write_topology(tmp_path / "topo", (
        'provider = "rfc2136"\n[dns.rfc2136]\nserver = "192.0.2.53"\nport = 5300\n'
        f'key_file = "{tmp_path / "tsig.key"}"\n'
        'authoritative = ["192.0.2.53", "192.0.2.54:53"]\n')))

    provider = provider_from_topology(topo)

    assert isinstance(provider, Rfc2136Provider)
    assert provider.server == Endpoint("192.0.2.53", 5300)
    assert provider.authoritative_servers() == (Endpoint("192.0.2.53", 5300),
                                                Endpoint("192.0.2.54", 53))
    assert key.secret.get_secret_value() not in repr(provider)


def test_rfc2136_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TSIG", generate_key("lab").secret.get_secret_value())
    topo = load_topology(write_topology(tmp_path / "topo", (
        'provider = "rfc2136"\n[dns.rfc2136]\nserver = "192.0.2.53"\n'
        'key_secret_env = "LAB_TSIG"\nkey_name = "lab"\n')))

    assert isinstance(provider_from_topology(topo), Rfc2136Provider)


@pytest.mark.parametrize(("endpoint", "checks_first"), [
    ('endpoint_url = "http://127.0.0.1:9"\n', True),  # an emulator may not enforce DELETE
    ("", False),
])
def test_route53_checks_the_record_first_only_behind_an_endpoint_url(
        tmp_path: Path, endpoint: str, checks_first: bool) -> None:
    topo = load_topology(write_topology(tmp_path / "topo", (
        'provider = "route53"\n[dns.route53]\nhosted_zone_id = "/hostedzone/Z123"\n'
        f"requests_per_second = 7\n{endpoint}")))

    provider = provider_from_topology(topo)

    assert isinstance(provider, Route53Provider)
    assert provider.hosted_zone_id == "Z123"
    assert provider.bucket.rate == 7
    assert provider.verify_before_change is checks_first
