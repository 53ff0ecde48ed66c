"""Operator verbs: what is checked before anything reads a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.controller.operator import OperatorRequest, parse_request, refusal
from failover.coordination.base import ServiceRecord
from failover.engine import Decision, Plan
from failover.errors import UserError
from failover.topology import load_topology

TOPOLOGY = Path(__file__).resolve().parents[1] / "data" / "observations" / "topology"


def decision(has_quorum: bool) -> Decision:
    return Decision(now=1.0, me="west", quorum=2, heard=("west",) if not has_quorum
                    else ("south", "west"), has_quorum=has_quorum, isolated_for=0.0,
                    executor=None, executor_reason="", verdicts=(), plan=Plan(1.0, ()),
                    ignored=())


def test_a_controller_without_a_quorum_refuses_and_says_where_to_go() -> None:
    assert refusal(decision(True), None) is None
    cut_off = refusal(decision(False), None)
    assert cut_off is not None and "hears 1 controller(s), quorum 2" in cut_off
    assert refusal(None, None) is not None
    assert refusal(decision(True), "etcd: no quorum") == "coordination: etcd: no quorum"


def test_requests_name_what_is_wrong() -> None:
    topo = load_topology(TOPOLOGY)
    service = next(iter(topo.services))
    with pytest.raises(UserError, match="service: 'nope' is not a service"):
        parse_request(topo, "promote", {"service": "nope", "region": "west"})
    with pytest.raises(UserError, match="unknown operator verb 'explode'"):
        parse_request(topo, "explode", {"service": service, "region": "west"})
    with pytest.raises(UserError, match="region: 'mars' holds no copy"):
        parse_request(topo, "switchover", {"service": service, "region": "mars"})
    request = parse_request(topo, "switchover", {"service": service, "region": "west",
                                                 "timeout": 12, "by": "ops"})
    assert (request.timeout, request.by, request.allow_data_loss) == (12.0, "ops", False)
    assert parse_request(topo, "pause", {"service": service}).region is None


def test_fencing_the_writer_pauses_the_service() -> None:
    request = OperatorRequest("fence", "orders", "east", "ops", 30.0, False)
    assert request.pauses(ServiceRecord("orders", "east", 3))
    assert not request.pauses(ServiceRecord("orders", "east", 3, paused=True))
    assert not request.pauses(ServiceRecord("orders", "west", 3))
