"""`failover plan`: replaying snapshots, and exit 2 naming the file and field for bad ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from failover.cli import main
from failover.engine.policy import policy_from_topology
from failover.engine.snapshot import dump_snapshot, parse_snapshot
from failover.topology import load_topology

DATA = Path(__file__).parents[1] / "data" / "observations"
TOPOLOGY = DATA / "topology"
EAST_DOWN = DATA / "east-down.json"


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["failover", "plan", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    assert isinstance(code, int)
    return code, out, " ".join(err.split())  # the error console wraps long lines


def broken(tmp_path: Path, edit: Any) -> Path:
    """A copy of east-down.json changed by `edit(document)`."""
    document = json.loads(EAST_DOWN.read_text())
    edit(document)
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(document))
    return path


def test_json_output_holds_verdicts_votes_and_the_failover_plan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o", str(EAST_DOWN), "--json")
    assert code == 0
    decision = json.loads(out)
    assert (decision["me"], decision["executor"], decision["executes"]) == ("west", "west", True)
    verdicts = {v["region"]: v for v in decision["verdicts"]}
    assert verdicts["east"]["verdict"] == "DOWN"
    east_vote = next(v for v in verdicts["east"]["votes"] if v["observer"] == "east")
    assert east_vote["counted"] is False and east_vote["note"].startswith("stale: 14.5s old")
    assert [(a["type"], a["service"], a["epoch"]) for a in decision["plan"]] == [
        ("RemoveReader", "billing", 2),
        ("FenceRegion", "orders", 5),
        ("PromoteSubscriber", "orders", 5),
        ("RepointSubscribers", "orders", 5),
        ("SetDnsWriter", "orders", 5),
        ("RemoveReader", "orders", 5),
    ]
    promote = decision["plan"][2]
    assert promote["region"] == "west" and "applied 0/16B374D8" in promote["reason"]
    assert all(action["reason"] for action in decision["plan"])


def test_the_table_output_through_the_installed_command() -> None:
    command = Path(sys.executable).with_name("failover")
    result = subprocess.run(
        [str(command), "plan", "--topology", str(TOPOLOGY), "--observations", str(EAST_DOWN)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "west at 2025-11-27T00:00:00+00:00: hears 2 observer(s) (south, west)" in out
    assert "executor: west (this controller runs the plan)" in out
    assert "east: healthy (stale: 14.5s old, max age 10s)" in out
    assert "PromoteSubscriber" in out and "west (was east)" in out
    assert "south -> west" in out and "east -> west" in out


def test_a_cut_off_writer_plans_its_own_fence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o",
                       str(DATA / "east-cut-off.json"), "--json")
    assert code == 0
    decision = json.loads(out)
    assert decision["has_quorum"] is False and decision["isolated_for"] == pytest.approx(5.0)
    assert [(a["type"], a["service"]) for a in decision["plan"]] == [
        ("NoOp", "billing"), ("FenceRegion", "orders")]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("now"), "now: Field required"),
        (lambda d: d["observations"][1].update(health="dead"),
         "observations[1].health: Input should be 'healthy', 'unhealthy' or 'unknown'"),
        (lambda d: d["observations"][4].update(target="mars"),
         "observations[4].target: unknown region 'mars' (known: east, south, west)"),
        (lambda d: d.update(me="mars"), "me: unknown region 'mars' (known: east, south, west)"),
        (lambda d: d["observations"][0]["services"][0].update(service="payroll"),
         "observations[0].services[0].service: unknown service 'payroll' "
         "(known: billing, orders)"),
        (lambda d: d["observations"][0]["services"][1].update(applied_lsn="3000A10"),
         "observations[0].services[1].applied_lsn: expected an LSN like \"0/3000060\""),
        (lambda d: d["observations"][0].update(observed_at="yesterday"),
         "observations[0].observed_at: Input should be a valid number"),
        (lambda d: d["observations"][0].update(colour="blue"),
         "observations[0].colour: Extra inputs are not permitted"),
        (lambda d: d["state"]["services"].pop(0),
         "state.services: missing 'billing'; give the state of every service"),
        (lambda d: d["state"]["services"][1].update(writer="mars"),
         "state.services[1].writer: unknown region 'mars'"),
        (lambda d: d["state"]["services"][1].update(epoch=-1),
         "state.services[1].epoch: Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_snapshot_exits_2_naming_the_file_and_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    edit: Any, message: str,
) -> None:
    path = broken(tmp_path, edit)
    code, out, err = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o", str(path))
    assert code == 2
    assert out == ""
    assert f"error: {path}: {message}" in err


def test_malformed_json_is_reported_with_line_and_column(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text('{\n  "now": 1,\n  "me": "east"\n  "state": {}\n}\n')
    code, _, err = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o", str(path))
    assert code == 2
    assert f"error: {path}: line 4, column 3: malformed JSON: Expecting ',' delimiter" in err


def test_every_problem_is_reported_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def two_problems(document: dict[str, Any]) -> None:
        document["observations"][0]["target"] = "mars"
        document["observations"][1]["observer"] = "venus"

    code, _, err = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o",
                       str(broken(tmp_path, two_problems)))
    assert code == 2
    assert "observations[0].target: unknown region 'mars'" in err
    assert "observations[1].observer: unknown region 'venus'" in err


def test_an_unreadable_snapshot_or_topology_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.json"
    code, _, err = run(capsys, monkeypatch, "-t", str(TOPOLOGY), "-o", str(missing))
    assert code == 2
    assert f"error: --observations: cannot read {missing}: No such file or directory" in err
    code, _, err = run(capsys, monkeypatch, "-t", str(tmp_path), "-o", str(EAST_DOWN))
    assert code == 2
    assert "fleet.toml: missing" in err


def test_a_dumped_snapshot_reads_back_the_same() -> None:
    policy = policy_from_topology(load_topology(TOPOLOGY))
    snapshot = parse_snapshot(EAST_DOWN.read_text(), str(EAST_DOWN), policy)
    assert parse_snapshot(dump_snapshot(snapshot), "dumped", policy) == snapshot
    lsns = {r.applied_lsn for o in snapshot.observations for r in o.services}
    assert 0x16B374D8 in lsns  # "0/16B374D8" in the file


def test_the_policy_follows_the_topology() -> None:
    policy = policy_from_topology(load_topology(TOPOLOGY))
    assert policy.quorum == 2
    assert policy.priority == {"east": 30, "west": 20, "south": 10}
    assert policy.observation_max_age == 10.0 and policy.self_fence_after == 2.0
    orders = policy.service["orders"]
    assert orders.regions == {"east", "west", "south"}
    assert (orders.max_lag_bytes, orders.max_lag_seconds, orders.cooldown) == (1048576, 30.0, 300.0)
    assert not orders.force
