"""`failover dns show` and `failover dns set-writer` against the session's real BIND9."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from failover.cli import main
from failover.dns import RecordKey, RecordSet
from failover.dns.wire import answer

if TYPE_CHECKING:
    from tests.support.bind import BindPair

pytestmark = pytest.mark.integration

EAST, WEST = "192.0.2.1", "192.0.2.2"


@dataclass
class Outcome:
    code: int
    out: str
    err: str  # with rich's line wrapping undone


Run = Callable[..., Outcome]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """The `failover` command in this process: the same entry point as the console script."""
    def invoke(*args: str) -> Outcome:
        monkeypatch.setattr(sys, "argv", ["failover", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return Outcome(int(exited.value.code or 0), captured.out, " ".join(captured.err.split()))
    return invoke


def put(pair: BindPair, name: str, *values: str) -> None:
    """Set a record to `values` whatever it is now."""
    provider = pair.provider()
    key = RecordKey(f"{name}.{pair.zone}")
    provider.wait_visible(provider.compare_and_set(provider.read(key),
                                                   RecordSet(key, 15, frozenset(values))), 10)


def writer_everywhere(pair: BindPair) -> list[frozenset[str] | None]:
    found = [answer(server, f"orders.{pair.zone}", "A", 2.0) for server in pair.servers]
    return [entry[1] if entry else None for entry in found]


@pytest.fixture
def topo(bind_pair: BindPair, tmp_path: Path) -> Path:
    put(bind_pair, "orders", EAST)
    put(bind_pair, "orders-ro", EAST, WEST, "198.51.100.9")
    return bind_pair.topology(tmp_path / "topology")


def test_show_names_the_region_of_every_value(run: Run, topo: Path, bind_pair: BindPair) -> None:
    result = run("dns", "show", "orders", "--topology", str(topo), "--json")

    assert result.code == 0, result.err
    shown = json.loads(result.out)
    writer, reader = shown["records"]
    assert (writer["role"], writer["name"], writer["ttl"]) == ("writer", f"orders.{bind_pair.zone}",
                                                               15)
    assert writer["values"] == [{"value": EAST, "region": "east"}]
    assert reader["values"] == [{"value": EAST, "region": "east"},
                                {"value": WEST, "region": "west"},
                                {"value": "198.51.100.9", "region": None}]


def test_set_writer_moves_the_record_and_every_server_serves_it(
        run: Run, topo: Path, bind_pair: BindPair) -> None:
    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo),
                 "--yes", "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["changed"] is True
    assert report["before"]["values"] == [{"value": EAST, "region": "east"}]
    assert writer_everywhere(bind_pair) == [frozenset({WEST})] * 2


def test_set_writer_dry_run_changes_nothing(run: Run, topo: Path, bind_pair: BindPair) -> None:
    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo),
                 "--dry-run")

    assert result.code == 0, result.err
    assert "would change" in result.out and WEST in result.out
    assert writer_everywhere(bind_pair) == [frozenset({EAST})] * 2


def test_set_writer_without_yes_and_no_terminal_refuses(
        run: Run, topo: Path, bind_pair: BindPair) -> None:
    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo))

    assert result.code == 2
    assert "--yes" in result.err
    assert writer_everywhere(bind_pair) == [frozenset({EAST})] * 2


def test_set_writer_to_the_current_region_does_nothing(run: Run, topo: Path) -> None:
    result = run("dns", "set-writer", "orders", "--to", "east", "--topology", str(topo), "--yes")

    assert result.code == 0, result.err
    assert "nothing to do" in result.out


def test_unknown_region_is_named(run: Run, topo: Path, bind_pair: BindPair) -> None:
    result = run("dns", "set-writer", "orders", "--to", "mars", "--topology", str(topo), "--yes")

    assert result.code == 2
    assert "--to: no region 'mars'" in result.err
    assert writer_everywhere(bind_pair) == [frozenset({EAST})] * 2


def test_missing_key_file_exits_2_and_changes_nothing(
        run: Run, bind_pair: BindPair, tmp_path: Path) -> None:
    put(bind_pair, "orders", EAST)
    topo = bind_pair.topology(tmp_path / "t", key_file=f'"{tmp_path / "gone.key"}"')

    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo), "--yes")

    assert result.code == 2
    assert "gone.key does not exist" in result.err and "tsig-keygen" in result.err
    assert writer_everywhere(bind_pair) == [frozenset({EAST})] * 2


def test_key_with_the_wrong_algorithm_exits_2_and_changes_nothing(
        run: Run, bind_pair: BindPair, tmp_path: Path) -> None:
    put(bind_pair, "orders", EAST)
    topo = bind_pair.topology(tmp_path / "t", algorithm='"hmac-sha512"')

    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo), "--yes")

    assert result.code == 2
    assert "is hmac-sha256 but the topology's dns.rfc2136.algorithm is hmac-sha512" in result.err
    assert writer_everywhere(bind_pair) == [frozenset({EAST})] * 2


def test_record_outside_the_zone_exits_2(run: Run, bind_pair: BindPair, tmp_path: Path) -> None:
    topo = bind_pair.topology(tmp_path / "t")
    fleet = topo / "fleet.toml"
    fleet.write_text(fleet.read_text().replace(f'writer_record = "orders.{bind_pair.zone}"',
                                               'writer_record = "orders.example.com."'))

    result = run("dns", "show", "orders", "--topology", str(topo))

    assert result.code == 2
    assert "writer_record: orders.example.com. is outside the zone" in result.err


def test_region_without_an_address_exits_2(run: Run, bind_pair: BindPair, tmp_path: Path) -> None:
    topo = bind_pair.topology(tmp_path / "t")
    west = topo / "west.toml"
    west.write_text(west.read_text().replace(f'address = "{WEST}"\n', ""))

    result = run("dns", "set-writer", "orders", "--to", "west", "--topology", str(topo), "--yes")

    assert result.code == 2
    assert "west.toml: address" in result.err
