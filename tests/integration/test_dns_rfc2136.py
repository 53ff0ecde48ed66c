"""RFC 2136 against a real BIND9 primary + secondary: signed updates, refusals,
compare-and-set, racing writers, and waiting until every server serves a change."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import dns.query
import dns.rcode
import dns.update
import pytest

from failover.dns import DnsRejected, RecordConflict, RecordKey, RecordSet, VisibilityTimeout
from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.tsig import TsigKey, generate_key
from failover.dns.wire import answer

if TYPE_CHECKING:
    from tests.support.bind import BindPair

pytestmark = pytest.mark.integration


def fresh_key(zone: str) -> RecordKey:
    return RecordKey(f"w-{uuid.uuid4().hex[:10]}.{zone}", "A")


def record(key: RecordKey, *values: str, ttl: int = 30) -> RecordSet:
    return RecordSet(key, ttl, frozenset(values))


def served_by_each(pair: BindPair, key: RecordKey) -> list[frozenset[str] | None]:
    """What every server answers right now, asked directly (as dig would)."""
    found = [answer(server, key.name, key.rtype, timeout=2.0) for server in pair.servers]
    return [entry[1] if entry else None for entry in found]


def created(pair: BindPair, *values: str) -> RecordSet:
    provider = pair.provider()
    key = fresh_key(pair.zone)
    provider.wait_visible(provider.compare_and_set(None, record(key, *values)), timeout=10)
    return record(key, *values)


def test_signed_update_moves_the_writer_and_every_server_answers_it(bind_pair: BindPair) -> None:
    provider = bind_pair.provider()
    old = created(bind_pair, "192.0.2.1")

    change = provider.compare_and_set(old, record(old.key, "192.0.2.2", ttl=15))
    provider.wait_visible(change, timeout=10)

    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.2"})] * 2
    assert provider.read(old.key) == record(old.key, "192.0.2.2", ttl=15)


def test_unsigned_update_is_refused_and_the_record_is_unchanged(bind_pair: BindPair) -> None:
    old = created(bind_pair, "192.0.2.1")
    update = dns.update.UpdateMessage(bind_pair.zone)  # no keyring: unsigned
    update.replace(old.key.name, 30, "A", "203.0.113.66")

    response = dns.query.tcp(update, bind_pair.primary.endpoint.host,
                             port=bind_pair.primary.endpoint.port, timeout=2.0)

    assert response.rcode() == dns.rcode.REFUSED
    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.1"})] * 2


@pytest.mark.parametrize(("key", "reason"), [
    pytest.param(generate_key("failover-test"), "BADSIG", id="right-name-wrong-secret"),
    pytest.param(generate_key("someone-else"), "BADKEY", id="unknown-key-name"),
])
def test_update_signed_with_a_wrong_key_is_refused_and_changes_nothing(
        bind_pair: BindPair, key: TsigKey, reason: str) -> None:
    old = created(bind_pair, "192.0.2.1")

    with pytest.raises(DnsRejected) as refused:
        bind_pair.provider(key).compare_and_set(old, record(old.key, "203.0.113.66"))

    assert f"NOTAUTH, {reason}" in str(refused.value)
    assert key.secret.get_secret_value() not in str(refused.value)
    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.1"})] * 2


def test_update_with_a_key_the_policy_does_not_grant_is_refused(bind_pair: BindPair) -> None:
    old = created(bind_pair, "192.0.2.1")

    with pytest.raises(DnsRejected, match=r"\(REFUSED\).*update-policy"):
        bind_pair.provider(bind_pair.unauthorised_key).compare_and_set(
            old, record(old.key, "203.0.113.66"))

    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.1"})] * 2


def test_update_sent_to_a_server_that_is_not_the_zone_primary_says_so(
        bind_pair: BindPair) -> None:
    elsewhere = Rfc2136Provider("elsewhere.test.", bind_pair.primary.endpoint, bind_pair.key)

    with pytest.raises(DnsRejected, match=r"\(NOTAUTH\): it is not the primary of elsewhere"):
        elsewhere.compare_and_set(None, record(RecordKey("w.elsewhere.test."), "192.0.2.1"))


def test_stale_compare_and_set_fails_naming_what_is_there_and_changes_nothing(
        bind_pair: BindPair) -> None:
    provider = bind_pair.provider()
    current = created(bind_pair, "192.0.2.7")
    stale = record(current.key, "192.0.2.1")

    with pytest.raises(RecordConflict) as conflict:
        provider.compare_and_set(stale, record(current.key, "192.0.2.9"))

    assert conflict.value.found == current
    assert "192.0.2.7" in str(conflict.value) and "192.0.2.1" in str(conflict.value)
    assert provider.read(current.key) == current


def test_creating_a_record_that_exists_is_a_conflict(bind_pair: BindPair) -> None:
    current = created(bind_pair, "192.0.2.7")

    with pytest.raises(RecordConflict):
        bind_pair.provider().compare_and_set(None, record(current.key, "192.0.2.9"))


def test_setting_what_is_already_there_succeeds_without_a_conflict(bind_pair: BindPair) -> None:
    # A retried update whose first answer was lost finds its own change in place.
    provider = bind_pair.provider()
    old = created(bind_pair, "192.0.2.1")
    provider.compare_and_set(old, record(old.key, "192.0.2.2"))

    change = provider.compare_and_set(old, record(old.key, "192.0.2.2"))

    provider.wait_visible(change, timeout=10)
    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.2"})] * 2


def test_racing_writers_exactly_one_wins(bind_pair: BindPair) -> None:
    old = created(bind_pair, "192.0.2.1")
    writers = 8
    start = threading.Barrier(writers)

    def race(n: int) -> str:
        provider = bind_pair.provider()  # one controller each
        start.wait()
        try:
            provider.compare_and_set(old, record(old.key, f"198.51.100.{n + 1}"))
        except RecordConflict:
            return "lost"
        return f"198.51.100.{n + 1}"

    with ThreadPoolExecutor(writers) as pool:
        outcomes = list(pool.map(race, range(writers)))

    winners = [outcome for outcome in outcomes if outcome != "lost"]
    assert len(winners) == 1
    assert bind_pair.provider().read(old.key) == record(old.key, winners[0])


def test_add_and_remove_one_value_of_a_multi_value_record(bind_pair: BindPair) -> None:
    provider = bind_pair.provider()
    readers = created(bind_pair, "192.0.2.1", "192.0.2.2")

    provider.wait_visible(provider.add_value(readers.key, "192.0.2.3", 30), timeout=10)
    provider.wait_visible(provider.remove_value(readers.key, "192.0.2.1"), timeout=10)

    assert served_by_each(bind_pair, readers.key) == [frozenset({"192.0.2.2", "192.0.2.3"})] * 2


def test_both_servers_of_the_zone_are_found_through_its_ns_records(bind_pair: BindPair) -> None:
    assert set(bind_pair.provider().authoritative_servers()) == set(bind_pair.servers)


def test_wait_returns_only_once_every_authoritative_server_serves_the_change(
        bind_pair: BindPair) -> None:
    provider = bind_pair.provider()
    old = created(bind_pair, "192.0.2.1")
    bind_pair.secondary.pause()
    try:
        change = provider.compare_and_set(old, record(old.key, "192.0.2.2"))
        waiter = threading.Thread(target=provider.wait_visible, args=(change, 30.0))
        waiter.start()
        waiter.join(timeout=1.5)
        still_waiting = waiter.is_alive()
    finally:
        bind_pair.secondary.resume()
    waiter.join(timeout=30)

    assert still_waiting, "the wait returned while the secondary could not answer"
    assert not waiter.is_alive()
    assert served_by_each(bind_pair, old.key) == [frozenset({"192.0.2.2"})] * 2


def test_wait_fails_at_its_deadline_naming_the_server_that_does_not_answer(
        bind_pair: BindPair) -> None:
    provider = bind_pair.provider(timeout=0.3)
    old = created(bind_pair, "192.0.2.1")
    bind_pair.secondary.pause()
    try:
        change = provider.compare_and_set(old, record(old.key, "192.0.2.2"))
        with pytest.raises(VisibilityTimeout) as timed_out:
            provider.wait_visible(change, timeout=1.0)
    finally:
        bind_pair.secondary.resume()

    message = str(timed_out.value)
    assert str(bind_pair.secondary.endpoint) in message
    assert str(bind_pair.primary.endpoint) not in message
    assert "1 of 2" in message
