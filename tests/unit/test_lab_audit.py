"""The drill's audit of journals: a plan or an epoch carried out by two controllers, and
how long a returning old writer took to be back in the reader record."""

from __future__ import annotations

from typing import Any

from failover.lab.audit import back_in_readers, plans_run_twice


def _step(plan: str, step: str, epoch: int, outcome: str = "ok") -> dict[str, object]:
    return {"kind": "step", "event": "end", "plan_id": plan, "step": step, "epoch": epoch,
            "outcome": outcome}


def test_one_executor_per_plan_and_epoch_is_clean() -> None:
    journals = {
        "us-west-2": [_step("app-e3-aa", "claim epoch 3 and wait until us-east-1 takes no writes", 3),
                      _step("app-e3-aa", "record us-west-2 as the writer of app", 3)],
        "eu-west-1": [_step("app-e3-fence-eu-west-1-1", "fence eu-west-1", 3)],
        "us-east-1": [_step("app-e2-bb", "record us-east-1 as the writer of app", 2, "error")],
    }
    assert plans_run_twice(journals) == []


def test_the_same_plan_finished_by_two_controllers_is_reported() -> None:
    journals = {
        "us-west-2": [_step("app-e3-aa", "point app.lab.test. at us-west-2", 3)],
        "eu-west-1": [_step("app-e3-aa", "point app.lab.test. at us-west-2", 3)],
    }
    assert plans_run_twice(journals) == ["plan app-e3-aa: steps finished by eu-west-1, us-west-2"]


def test_one_epoch_promoted_by_two_controllers_under_different_plans_is_reported() -> None:
    journals = {
        "us-west-2": [_step("app-e3-aa", "claim epoch 3 and wait until us-east-1 takes no writes", 3)],
        "eu-west-1": [_step("app-e3-cc", "record eu-west-1 as the writer of app", 3)],
    }
    assert plans_run_twice(journals) == ["epoch 3: promoted by eu-west-1, us-west-2"]


def test_the_rejoin_time_runs_from_the_heal_to_the_plan_that_adds_the_old_writer_back() -> None:
    def plan(plan_id: str, ts: float, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"kind": "plan", "event": "start", "plan_id": plan_id, "ts": ts,
                 "plan": {"actions": actions}},
                {"kind": "plan", "event": "end", "plan_id": plan_id, "ts": ts + 1.0,
                 "outcome": "ok"}]

    add_a = [{"type": "AddReader", "region": "a"}]
    journal = {"b": [*plan("old", 90.0, add_a),  # before the heal: an earlier round's
                     *plan("other", 101.0, [{"type": "AddReader", "region": "c"}]),
                     *plan("rejoin", 102.0, [{"type": "RejoinRegion", "region": "a"}]),
                     *plan("back", 110.0, add_a)],
               "c": plan("back", 110.0, add_a)}
    assert back_in_readers(journal, "a", since=100.0) == 11.0
    assert back_in_readers(journal, "c", since=200.0) is None
