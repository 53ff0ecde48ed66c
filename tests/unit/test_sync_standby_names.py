"""synchronous_standby_names as PostgreSQL reads it, and as failover writes it."""

from __future__ import annotations

import pytest

from failover.engine import SyncStandbys
from failover.postgres.names import standby_name
from failover.postgres.sync import format_standby_names, parse_standby_names


@pytest.mark.parametrize(("text", "meaning"), [
    ("", SyncStandbys()),
    ("  ", SyncStandbys()),
    ("s1", SyncStandbys(("s1",), 1, quorum=False)),
    ("s2, s1", SyncStandbys(("s2", "s1"), 1, quorum=False)),  # FIRST keeps the order
    ("2 (s1, s2, s3)", SyncStandbys(("s1", "s2", "s3"), 2, quorum=False)),
    ("first 1 (S1,s2)", SyncStandbys(("s1", "s2"), 1, quorum=False)),
    ('ANY 2 ("failover_app_us_west_2", s1)', SyncStandbys(("failover_app_us_west_2", "s1"), 2)),
    ('ANY 1 ("we""ird", b)', SyncStandbys(("b", 'we"ird'), 1)),  # ANY sorts: order is moot
    ("*", SyncStandbys(("*",), 1, quorum=False)),
])
def test_every_form_postgres_accepts_is_understood(text: str, meaning: SyncStandbys) -> None:
    assert parse_standby_names(text) == meaning


@pytest.mark.parametrize("text", ["ANY 1 ()", "ANY (s1)", "0 (s1)", "s1 s2", "ANY 1 s1", "s1,",
                                  "(s1)", "any", "ANY 1 (s1", "s1)", "ANY 1 (s1) s2"])
def test_what_postgres_refuses_is_not_guessed_at(text: str) -> None:
    assert parse_standby_names(text) is None


def test_what_failover_writes_reads_back_the_same() -> None:
    names = tuple(sorted(standby_name("app", region) for region in ("us-west-2", "eu-west-1")))
    standbys = SyncStandbys(names, 1)
    text = format_standby_names(standbys)
    assert text == 'ANY 1 ("failover_app_eu_west_1", "failover_app_us_west_2")'
    assert parse_standby_names(text) == standbys
    assert format_standby_names(SyncStandbys()) == ""
    assert parse_standby_names(None) is None


def test_each_region_reports_its_own_name_to_the_writer() -> None:
    assert standby_name("app", "us-west-2") == "failover_app_us_west_2"
    assert standby_name("app", "us-west-2") != standby_name("app", "eu-west-1")
