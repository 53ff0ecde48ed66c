"""The CLI's contract: one duration syntax for every flag, exit codes that say what happened
(2 bad input, naming the flag or field; 1 nothing answered), --json documents that always
carry a version (errors included), help text shown as written, `validate --strict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.text import Text

from failover.cli import _register, app
from tests.support.cli import EAST_DOWN, controller_answering, invoke, quiet_topology

KEY = {"FAILOVER_FLEET_KEY": "test-fleet-key"}


@pytest.fixture
def topo(tmp_path: Path) -> Path:
    return quiet_topology(tmp_path / "topology")


def json_of(out: str) -> dict[str, Any]:
    document = json.loads(out)
    assert isinstance(document, dict) and document["version"] == 1, document
    return document


# ---------------------------------------------------------------- duration flags

DURATION_FLAGS = {
    "dns set-writer": ["dns", "set-writer", "orders", "--to", "west"],
    "switchover": ["switchover", "orders", "west"],
}


@pytest.mark.parametrize("command", DURATION_FLAGS)
@pytest.mark.parametrize("value", ["0", "0s", "nan", "inf", "-1s", "2x", "1d"])
def test_a_bad_duration_flag_exits_2_naming_the_flag(topo: Path, command: str,
                                                     value: str) -> None:
    done = invoke(*DURATION_FLAGS[command], "-t", str(topo), "--timeout", value)
    assert done.code == 2, done.output
    assert "Invalid value for '--timeout':" in done.err and "Traceback" not in done.output


@pytest.mark.parametrize("command", DURATION_FLAGS)
@pytest.mark.parametrize("value", ["2m", "30s", "1500ms", "45"])
def test_every_duration_flag_takes_the_topology_syntax(topo: Path, command: str,
                                                       value: str) -> None:
    # Past the flag, each stops on something else before anything is sent: the sample
    # topology has no DNS provider, and a switchover asks for --yes.
    done = invoke(*DURATION_FLAGS[command], "-t", str(topo), "--timeout", value)
    assert done.code == 2, done.output
    assert "--timeout" not in done.err
    assert "dns.provider" in done.err or "pass --yes" in done.err


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "soon"])
def test_a_bad_since_exits_2_naming_the_flag(topo: Path, value: str) -> None:
    done = invoke("history", "-t", str(topo), "--since", value, env=KEY)
    assert done.code == 2 and "Invalid value for '--since':" in done.err, done.output


# ---------------------------------------------------------------- controller run


def test_an_unknown_log_level_names_the_flag_and_the_levels(tmp_path: Path, topo: Path) -> None:
    state = tmp_path / "state"
    done = invoke("controller", "run", "-t", str(topo), "--region", "east", "--state-dir",
                  str(state), "--log-level", "LOUD", env=KEY)
    assert done.code == 2, done.output
    assert "--log-level: 'LOUD' is not valid" in done.err
    assert all(level in done.err for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    assert "Traceback" not in done.output and not state.exists()


def test_an_unknown_log_level_from_the_environment_names_the_variable(topo: Path) -> None:
    done = invoke("controller", "run", "-t", str(topo), "--region", "east",
                  env={**KEY, "FAILOVER_LOG_LEVEL": "chatty"})
    assert done.code == 2 and "FAILOVER_LOG_LEVEL (environment or failover.env)" in done.err


def test_help_shows_bracketed_text_as_written() -> None:
    done = invoke("controller", "run", "--help")
    assert done.code == 0
    for text in ("[env FAILOVER_TOPOLOGY]", "[env FAILOVER_REGION]",
                 "[env FAILOVER_STATE_DIR; /var/lib/failover]", "[env FAILOVER_LOG_LEVEL; INFO]"):
        assert text in done.out, done.out


def test_no_help_text_is_eaten_as_rich_markup() -> None:
    """Typer renders help as Rich markup, where "[word]" is a style and vanishes."""
    _register([])  # every verb's module
    lost = []

    def visit(command: Any, path: str) -> None:
        texts = [(path, command.help or "")] + [
            (f"{path} {param.name}", getattr(param, "help", None) or "")
            for param in command.params]
        for where, text in texts:
            if Text.from_markup(text).plain != text.replace("\\[", "["):
                lost.append(f"{where}: {text!r}")
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, f"{path} {name}")

    visit(typer.main.get_command(app), "failover")
    assert not lost, lost


# ---------------------------------------------------------------- status, history, pause


def test_status_exits_1_when_no_controller_answers(topo: Path) -> None:
    done = invoke("status", "-t", str(topo))
    assert done.code == 1, done.output
    assert "no controller answered (east: unreachable: http://127.0.0.1:9" in done.err
    as_json = invoke("status", "-t", str(topo), "--json")
    assert as_json.code == 1
    error = json_of(as_json.out)["error"]
    assert error["exit_code"] == 1 and error["message"].startswith("no controller answered")


def test_status_json_has_one_shape_for_every_controller(topo: Path) -> None:
    with controller_answering(topo, "west"):
        done = invoke("status", "-t", str(topo), "--json")
    assert done.code == 0, done.output
    controllers = json_of(done.out)["controllers"]
    assert {name: sorted(entry) for name, entry in controllers.items()} == {
        name: ["answered", "error", "status"] for name in ("east", "south", "west")}
    assert controllers["west"]["answered"] is True and controllers["west"]["error"] is None
    assert controllers["west"]["status"]["region"] == "west"
    assert controllers["east"]["answered"] is False and controllers["east"]["status"] is None
    assert controllers["east"]["error"].startswith("unreachable: http://127.0.0.1:9")


def test_history_exits_1_when_no_journal_can_be_read(topo: Path) -> None:
    done = invoke("history", "-t", str(topo), "--since", "10m", env=KEY)
    assert done.code == 1, done.output
    assert "no controller's journal could be read (east: http://127.0.0.1:9" in done.err
    as_json = invoke("history", "-t", str(topo), "--json", env=KEY)
    assert as_json.code == 1 and json_of(as_json.out)["error"]["exit_code"] == 1


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_pause_without_controllers_gives_advice_it_can_follow(topo: Path, verb: str) -> None:
    done = invoke(verb, "orders", "-t", str(topo), env=KEY)
    assert done.code == 1, done.output
    assert "--direct" not in done.err
    assert f"nothing acts on orders automatically: run `failover {verb} orders` again" in done.err


# ---------------------------------------------------------------- --json documents


def test_json_answers_carry_a_version(topo: Path) -> None:
    valid = invoke("topology", "validate", str(topo), "--json")
    assert valid.code == 0 and json_of(valid.out)["valid"] is True
    plan = invoke("plan", "-t", str(topo), "-o", str(EAST_DOWN), "--json")
    assert plan.code == 0 and json_of(plan.out)["me"] == "west"


@pytest.mark.parametrize(("args", "exit_code", "named"), [
    (["topology", "validate", "{topo}/missing"], 2, "PATH:"),
    (["topology", "validate", "{topo}", "--bogus"], 2, "--bogus"),
    (["plan", "-t", "{topo}", "-o", "{topo}/nothing.json"], 2, "--observations:"),
    (["dns", "set-writer", "orders", "-t", "{topo}", "--to", "west", "--timeout", "0"], 2,
     "'--timeout'"),
    (["status", "-t", "{topo}"], 1, "no controller answered"),
])
def test_json_failures_are_a_json_error_on_stdout_with_the_exit_code(
        topo: Path, args: list[str], exit_code: int, named: str) -> None:
    done = invoke(*(arg.format(topo=topo) for arg in args), "--json")
    assert done.code == exit_code, done.output
    error = json_of(done.out)["error"]
    assert error["exit_code"] == exit_code
    assert named in error["message"] and all(named in p for p in error["problems"][:1])
    assert named in done.err  # and still said to whoever watches the terminal


def test_a_failed_topology_lists_every_problem_in_the_json_error(topo: Path) -> None:
    for region in ("east", "south"):
        path = topo / f"{region}.toml"
        path.write_text(path.read_text().replace('interval = "1s"', 'interval = "0"'))
    done = invoke("topology", "validate", str(topo), "--json")
    assert done.code == 2
    problems = json_of(done.out)["error"]["problems"]
    assert [p.split(": ")[1] for p in problems] == ["checks[0].interval"] * 2, problems


# ---------------------------------------------------------------- validate --strict


def test_strict_validation_reads_every_secret_and_names_each_field(
        tmp_path: Path, topo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_FLEET_KEY", raising=False)
    monkeypatch.delenv("TEST_ETCD_PASSWORD", raising=False)
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    fleet = topo / "fleet.toml"
    fleet.write_text(fleet.read_text().replace('self_fence_after = "2s"\n', '''\
self_fence_after = "2s"

[coordination]
backend = "etcd"
[coordination.etcd]
endpoints = ["http://127.0.0.1:9"]
ca_file = "missing-ca.pem"
user = "failover"
password_env = "TEST_ETCD_PASSWORD"

[dns]
provider = "rfc2136"
zone = "sample.test."
[dns.rfc2136]
server = "127.0.0.1"
key_file = "missing-tsig.key"
'''))
    east, south = topo / "east.toml", topo / "south.toml"
    east.write_text(east.read_text().replace('user = "failover"\n',
                                             'user = "failover"\npassword_file = "nope"\n', 1))
    south.write_text(south.read_text().replace(
        'user = "failover"\n', f'user = "failover"\npassword_file = "{tmp_path}/latin1.txt"\n', 1))
    assert invoke("topology", "validate", str(topo)).code == 0  # the files alone are valid

    done = invoke("topology", "validate", str(topo), "--strict", "--json")
    assert done.code == 2, done.output
    problems = json_of(done.out)["error"]["problems"]
    expected = [
        f"{fleet}: coordination.key_env: the fleet key comes from the environment variable "
        "FAILOVER_FLEET_KEY, which is not set",
        f"{east}: postgres.orders.password_file: cannot read the PostgreSQL password from "
        f"{topo}/nope",
        f"{south}: postgres.orders.password_file: {tmp_path}/latin1.txt is not UTF-8 text",
        f"{fleet}: dns.rfc2136.key_file: {topo}/missing-tsig.key does not exist",
        f"{fleet}: coordination.etcd.password_env names TEST_ETCD_PASSWORD, which is not set",
        f"{fleet}: coordination.etcd.ca_file: cannot read {topo}/missing-ca.pem",
    ]
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)
