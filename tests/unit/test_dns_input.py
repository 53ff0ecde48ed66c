"""Bad DNS input is the user's to fix: a UserError that names what to change, and
nothing sent to any server. A server that never answers is a different error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.dns import DnsUnavailable, RecordKey, RecordSet
from failover.dns.factory import provider_from_topology
from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.route53 import Route53Provider
from failover.dns.tsig import generate_key, key_from_env, load_key_file
from failover.dns.wire import Endpoint
from failover.errors import UserError
from failover.topology import load_topology
from tests.support.bind import write_topology
from tests.support.loopback import allocate_block

KEY_FILE = 'key "failover." {\n\talgorithm %s;\n\tsecret "%s";\n};\n'
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldCE="


class Listener:
    """A DNS-shaped endpoint (UDP + TCP) that only records whether anyone spoke to it."""

    def __init__(self, host: str) -> None:
        self.tcp = socket.create_server((host, 0))
        self.tcp.setblocking(False)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, self.port))
        self.udp.setblocking(False)
        self.endpoint = Endpoint(host, self.port)

    def contacted(self) -> bool:
        try:
            self.udp.recv(512)
            return True
        except BlockingIOError:
            pass
        try:
            self.tcp.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener(allocate_block().address(1))
    yield server
    server.close()


def test_rfc2136_record_outside_the_zone_is_refused_before_sending(listener: Listener) -> None:
    provider = Rfc2136Provider("dns.test.", listener.endpoint, generate_key("failover"))
    outside = RecordKey("orders.example.com.", "A")

    with pytest.raises(UserError, match=r"outside the zone 'dns.test.'"):
        provider.compare_and_set(None, RecordSet(outside, 30, frozenset({"192.0.2.1"})))
    with pytest.raises(UserError, match="outside the zone"):
        provider.read(outside)

    assert not listener.contacted()


def test_route53_record_outside_the_zone_is_refused_before_sending(listener: Listener) -> None:
    provider = Route53Provider("dns.test.", "Z123", endpoint_url=f"http://{listener.endpoint}",
                               region_name="us-east-1")

    with pytest.raises(UserError, match="outside the zone"):
        provider.compare_and_set(None, RecordSet(RecordKey("dns.test.evil.", "A"), 30,
                                                 frozenset({"192.0.2.1"})))

    assert not listener.contacted()


def test_a_value_that_is_not_an_address_is_refused_before_sending(listener: Listener) -> None:
    provider = Rfc2136Provider("dns.test.", listener.endpoint, generate_key("failover"))

    with pytest.raises(UserError, match="'not-an-ip' is not a valid A value"):
        provider.compare_and_set(None, RecordSet(RecordKey("orders.dns.test."), 30,
                                                 frozenset({"not-an-ip"})))

    assert not listener.contacted()


def test_missing_key_file_names_the_path_and_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        load_key_file(tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in str(error.value)
    assert "tsig-keygen" in str(error.value)


def test_key_file_is_read_with_name_algorithm_and_secret(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(KEY_FILE % ("hmac-sha256", SECRET))

    key = load_key_file(path, algorithm="hmac-sha256")

    assert (key.name, key.algorithm, key.secret.get_secret_value()) == (
        "failover.", "hmac-sha256", SECRET)
    assert SECRET not in repr(key)


def test_key_with_an_unsupported_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(KEY_FILE % ("hmac-md5", SECRET))
    with pytest.raises(UserError, match="'hmac-md5', which is not supported"):
        load_key_file(path)


def test_key_whose_algorithm_differs_from_the_topology_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(KEY_FILE % ("hmac-sha512", SECRET))
    with pytest.raises(UserError, match=r"is hmac-sha512 but the topology's dns\.rfc2136\.algorithm"):
        load_key_file(path, algorithm="hmac-sha256")


def test_key_file_with_several_keys_needs_a_key_name(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(KEY_FILE % ("hmac-sha256", SECRET)
                    + (KEY_FILE % ("hmac-sha256", SECRET)).replace("failover.", "other."))
    with pytest.raises(UserError, match="key_name"):
        load_key_file(path)
    assert load_key_file(path, key_name="other").name == "other."


def test_secret_that_is_not_base64_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(KEY_FILE % ("hmac-sha256", "not base64!"))
    with pytest.raises(UserError, match="not valid base64"):
        load_key_file(path)


def test_key_from_an_unset_environment_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_TSIG_SECRET", raising=False)
    with pytest.raises(UserError, match="TEST_TSIG_SECRET is not set"):
        key_from_env("TEST_TSIG_SECRET", "failover", "hmac-sha256")
    monkeypatch.setenv("TEST_TSIG_SECRET", SECRET)
    assert key_from_env("TEST_TSIG_SECRET", "failover", "hmac-sha256").name == "failover."


def test_topology_with_a_missing_key_file_fails_when_the_provider_is_built(tmp_path: Path) -> None:
    topo = load_topology(write_topology(
        tmp_path / "topo",
        f'provider = "rfc2136"\n[dns.rfc2136]\nserver = "192.0.2.53"\n'
        f'key_file = "{tmp_path / "missing.key"}"\n'))
    with pytest.raises(UserError, match=r"missing\.key does not exist"):
        provider_from_topology(topo)


def test_topology_without_dns_has_no_provider(tmp_path: Path) -> None:
    topo = load_topology(write_topology(tmp_path / "topo", 'provider = "none"'))
    with pytest.raises(UserError, match='is "none"'):
        provider_from_topology(topo)


@pytest.mark.parametrize("text", ["", "host:port", "[::1]:99999", "a:b:c"])
def test_bad_server_addresses_are_named(text: str) -> None:
    with pytest.raises(UserError, match=r"dns\.rfc2136\.authoritative"):
        Endpoint.parse(text, default_port=53, field_name="dns.rfc2136.authoritative")


def test_server_addresses_parse() -> None:
    assert Endpoint.parse("192.0.2.1", default_port=53, field_name="f") == Endpoint("192.0.2.1", 53)
    assert Endpoint.parse("192.0.2.1:5300", default_port=53, field_name="f").port == 5300
    assert Endpoint.parse("[2001:db8::1]:5300", default_port=53, field_name="f") == Endpoint(
        "2001:db8::1", 5300)


def test_a_server_that_never_answers_is_unavailable_not_a_traceback(listener: Listener) -> None:
    provider = Rfc2136Provider("dns.test.", listener.endpoint, generate_key("failover"),
                               timeout=0.2, attempts=2)

    with pytest.raises(DnsUnavailable, match=r"did not answer after 2 attempts \(Timeout"):
        provider.read(RecordKey("orders.dns.test."))

    assert listener.contacted()
