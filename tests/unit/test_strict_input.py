"""Strict topology input: durations, ports, URLs, timings that cannot work together and files
that are not UTF-8 are refused with exit 2, naming the file and the field, and nothing runs."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from failover.durations import parse_duration
from failover.errors import UserError
from failover.topology import load_topology
from tests.support.cli import EAST_DOWN, invoke, quiet_topology


@pytest.fixture
def topo_dir(tmp_path: Path) -> Path:
    return quiet_topology(tmp_path / "topology")


def set_field(path: Path, field: tuple[str | int, ...], value: Any) -> None:
    """Set `field` (keys and list indexes from the top of the file) to `value`."""
    document = tomllib.loads(path.read_text())
    parent: Any = document
    for step in field[:-1]:
        parent = parent.setdefault(step, {}) if isinstance(step, str) else parent[step]
    parent[field[-1]] = value
    path.write_text(tomli_w.dumps(document))


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        load_topology(folder)
    return info.value.problems


def only_problem(folder: Path, where: str) -> str:
    """The one problem of `folder`, which must begin with `where` (file: field)."""
    problems = problems_of(folder)
    assert len(problems) == 1, problems
    assert problems[0].startswith(where), problems
    return problems[0]


DURATION_FIELDS = [
    ("fleet.toml", ("observation_max_age",)),
    ("fleet.toml", ("self_fence_after",)),
    ("fleet.toml", ("self_fence_duration",)),
    ("fleet.toml", ("coordination", "exchange_interval")),
    ("fleet.toml", ("coordination", "request_window")),
    ("east.toml", ("checks", 0, "interval")),
    ("east.toml", ("checks", 0, "timeout")),
    ("east.toml", ("postgres", "orders", "connect_timeout")),
]


def dotted(field: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in field).lstrip(".")


@pytest.mark.parametrize(("file", "field"), DURATION_FIELDS, ids=str)
@pytest.mark.parametrize("value", [0, 0.0, "0s", "0ms", math.nan, math.inf, -1, "-5s"],
                         ids=repr)
def test_a_duration_that_is_zero_nan_infinite_or_negative_is_refused_by_name(
        topo_dir: Path, file: str, field: tuple[str | int, ...], value: object) -> None:
    set_field(topo_dir / file, field, value)
    problem = only_problem(topo_dir, f"{topo_dir / file}: {dotted(field)}: ")
    assert "duration" in problem or "longer than 0" in problem


@pytest.mark.parametrize("field", ["lease_ttl", "poll_interval"])
def test_etcd_durations_of_zero_are_refused(topo_dir: Path, field: str) -> None:
    set_field(topo_dir / "fleet.toml", ("coordination", "backend"), "etcd")
    set_field(topo_dir / "fleet.toml", ("coordination", "etcd"),
              {"endpoints": ["http://127.0.0.1:9"], field: 0})
    only_problem(topo_dir, f"{topo_dir / 'fleet.toml'}: coordination.etcd.{field}: must be longer "
                           "than 0")


def test_nan_never_reaches_plan_json(topo_dir: Path) -> None:
    set_field(topo_dir / "fleet.toml", ("observation_max_age",), math.nan)
    done = invoke("plan", "-t", str(topo_dir), "-o", str(EAST_DOWN), "--json")
    assert done.code == 2
    assert "fleet.toml: observation_max_age:" in done.err
    # stdout is JSON, NaN included nowhere: the error document
    document = json.loads(done.out, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert document["version"] == 1 and document["error"]["exit_code"] == 2


def test_nan_in_a_snapshot_is_refused(tmp_path: Path, topo_dir: Path) -> None:
    document = json.loads(EAST_DOWN.read_text())
    document["now"] = math.nan
    snapshot = tmp_path / "nan.json"
    snapshot.write_text(json.dumps(document))  # Python's json reads and writes NaN
    done = invoke("plan", "-t", str(topo_dir), "-o", str(snapshot), "--json")
    assert done.code == 2 and "now:" in done.err


def test_one_duration_syntax_for_files_and_flags() -> None:
    assert [parse_duration(v) for v in (5, 2.5, "30", "500ms", "5s", "2m", "1h")] == [
        5.0, 2.5, 30.0, 0.5, 5.0, 120.0, 3600.0]
    for value in ("1d", "5 sec", "", "1e3", True, None):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(value)


def test_an_hour_long_observation_age_is_read_as_an_hour_and_refused_against_detection(
        topo_dir: Path) -> None:
    set_field(topo_dir / "fleet.toml", ("observation_max_age",), "1h")
    problem = only_problem(topo_dir, f"{topo_dir / 'fleet.toml'}: observation_max_age: ")
    assert "3600 s must be at most the 10 s the fleet needs to declare a region DOWN" in problem


def test_zero_is_meaningful_for_cooldown_and_max_lag(topo_dir: Path) -> None:
    set_field(topo_dir / "fleet.toml", ("services", 0, "cooldown"), 0)
    set_field(topo_dir / "fleet.toml", ("services", 0, "max_lag_seconds"), "0s")
    service = load_topology(topo_dir).services["orders"]
    assert (service.cooldown, service.max_lag_seconds) == (0.0, 0.0)


def test_observations_must_outlive_an_exchange(topo_dir: Path) -> None:
    set_field(topo_dir / "fleet.toml", ("coordination", "exchange_interval"), "10s")
    set_field(topo_dir / "fleet.toml", ("self_fence_after",), "9s")
    set_field(topo_dir / "fleet.toml", ("self_fence_duration",), "3s")
    problem = only_problem(topo_dir, f"{topo_dir / 'fleet.toml'}: observation_max_age: ")
    assert "must be longer than coordination.exchange_interval (10 s)" in problem


def test_the_lease_must_outlast_the_check_cadence(topo_dir: Path) -> None:
    set_field(topo_dir / "fleet.toml", ("self_fence_after",), "500ms")
    set_field(topo_dir / "fleet.toml", ("self_fence_duration",), "1s")
    problem = only_problem(topo_dir, f"{topo_dir / 'fleet.toml'}: self_fence_after: ")
    assert "self_fence_duration = 1.5 s, must be longer than the slowest liveness check's " \
           "interval plus coordination.exchange_interval (1 s + 1 s)" in problem


def test_fast_interval_must_be_shorter_than_interval(topo_dir: Path) -> None:
    set_field(topo_dir / "east.toml", ("checks", 0, "fast_interval"), "1s")
    problem = only_problem(topo_dir, f"{topo_dir / 'east.toml'}: checks[0]")
    assert "fast_interval (1 s) must be shorter than interval (1 s)" in problem


@pytest.mark.parametrize(("fast", "field", "ridden_out"), [(None, "interval", "9"),
                                                          ("100ms", "fast_interval", "0.9")])
def test_a_min_outage_the_check_cannot_ride_out_names_what_to_raise(
        topo_dir: Path, fast: str | None, field: str, ridden_out: str) -> None:
    if fast is not None:
        set_field(topo_dir / "east.toml", ("checks", 0, "fast_interval"), fast)
    set_field(topo_dir / "east.toml", ("checks", 0, "min_outage"), "10s")
    problem = only_problem(topo_dir, f"{topo_dir / 'east.toml'}: checks[0]")
    assert (f"min_outage (10 s): a blip that long would turn the check unhealthy, since "
            f"(unhealthy_threshold - 1) x {field} is {ridden_out} s; raise {field} or "
            "unhealthy_threshold, or lower min_outage") in problem


def test_fast_re_probing_shortens_the_detection_time_the_timings_are_checked_against(
        topo_dir: Path) -> None:
    """1 s checks, 10 failures: 10 s to detect, or 1 s + 9 x 100 ms = 1.9 s when falling fast,
    which the observation age (and self_fence_after) must then fit in."""
    assert load_topology(topo_dir).regions["east"].checks[0].detection_time == 10.0
    set_field(topo_dir / "east.toml", ("checks", 0, "fast_interval"), "100ms")
    problems = problems_of(topo_dir)
    assert any("observation_max_age" in p and "1.9 s" in p for p in problems), problems


@pytest.mark.parametrize("field", ["address", "controller_url"])
def test_two_regions_cannot_share_an_address_or_a_controller(topo_dir: Path, field: str) -> None:
    east = tomllib.loads((topo_dir / "east.toml").read_text())
    set_field(topo_dir / "west.toml", (field,), east[field])
    problem = only_problem(topo_dir, f"{topo_dir / 'west.toml'}: {field}: ")
    assert f"is also the {field} of region 'east'" in problem


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/healthz", "http://127.0.0.1:0/",
                                 "http://127.0.0.1:http/"])
def test_an_http_check_port_out_of_range_exits_2_in_check(topo_dir: Path, url: str) -> None:
    set_field(topo_dir / "east.toml", ("checks", 0),
              {"name": "web", "kind": "http", "url": url, "interval": "1s", "timeout": "500ms",
               "unhealthy_threshold": 10})
    done = invoke("check", "-t", str(topo_dir))
    assert done.code == 2, done.output
    assert f"east.toml: checks[0].url: the port of '{url}'" in done.err
    assert "Traceback" not in done.output


def test_a_controller_url_port_out_of_range(topo_dir: Path) -> None:
    set_field(topo_dir / "east.toml", ("controller_url",), "http://127.0.0.1:70000")
    only_problem(topo_dir, f"{topo_dir / 'east.toml'}: controller_url: the port of")


@pytest.mark.parametrize("endpoint", ["not a url", "127.0.0.1:2379", "http://127.0.0.1:99999"])
def test_etcd_endpoints_are_urls(topo_dir: Path, endpoint: str) -> None:
    set_field(topo_dir / "fleet.toml", ("coordination", "backend"), "etcd")
    set_field(topo_dir / "fleet.toml", ("coordination", "etcd"), {"endpoints": [endpoint]})
    only_problem(topo_dir, f"{topo_dir / 'fleet.toml'}: coordination.etcd.endpoints: ")


@pytest.mark.parametrize("file", ["east.toml", "fleet.toml"])
def test_a_file_that_is_not_utf8_exits_2_naming_it(topo_dir: Path, file: str) -> None:
    path = topo_dir / file
    path.write_bytes(path.read_bytes().replace(b'"failover"', b'"fa\xefllover"', 1)
                     if file == "east.toml" else b'name = "\xff\xfe"\n')
    done = invoke("topology", "validate", str(topo_dir))
    assert done.code == 2, done.output
    assert f"{path}: not UTF-8 text" in done.err
    assert "Traceback" not in done.output
