"""The lab's chaos scenarios with the controllers agreeing through a real etcd cluster.

The peer lab's scenarios on an etcd lab: writer crash and isolation fail over once
without split brain; an isolated non-writer, a blip, a controller crash, a DNS outage
and a paused service cause no failover; a switchover under load loses nothing; and a
failure of the coordination store itself (its leader killed during a failover) still
ends with exactly one plan executed once. Every one is judged by the checker too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.lab import state as lab
from failover.lab.build import service_view
from failover.lab.checker import SafetyWatch
from failover.lab.drill import RoundResult, drill
from failover.lab.faults import fault, heal

# The peer lab's scenarios are imported so that pytest collects them again here and runs
# them on this module's etcd lab (it resolves `lab_dir` where a test is collected). Two
# are not: forged observations concern the peer exchange only, and the killed-executor
# scenario predicts the executor by the peers' rule while etcd elects its leader
# (tests/integration/test_etcd_faults.py kills the elected one mid-plan). Nor are those
# whose subject runs the same whoever coordinates, once the executor acts: the
# pre_promote hook, DNS down during a failover, and the interrupted rejoin.
from tests.chaos.safety import SETTLE, assert_safe
from tests.chaos.test_lab_chaos import (
    ROUNDS,
    _rejoin,
    assert_clean_failover,
    journals,
    promotions_done,
    test_a_blip_shorter_than_the_threshold_causes_no_failover,  # noqa: F401
    test_a_paused_service_is_not_failed_over,  # noqa: F401
    test_an_application_session_cannot_write_where_the_writer_is_not,  # noqa: F401
    test_an_isolated_non_writer_region_causes_no_failover,  # noqa: F401
    test_faults_that_must_not_fail_over,  # noqa: F401
    test_planned_switchover_under_load_loses_no_acknowledged_write,  # noqa: F401
    wait_for,
)
from tests.support.lab import running_lab, say

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    with running_lab(Path("/tmp/failover-chaos-lab-etcd"), "etcd") as directory:
        yield directory


@pytest.mark.parametrize("kind", ["crash", "isolate"])
def test_writer_failure_fails_over_once_on_etcd(lab_dir: Path, kind: str) -> None:
    since = time.time()
    report = drill(lab_dir, [kind], ROUNDS, say, settle=SETTLE)
    rounds = [RoundResult(**r) for r in report["rounds"]]
    for result in rounds:
        assert_clean_failover(result)
        say(f"etcd {kind}: RTO {result.rto_s:.2f} s")
    done = promotions_done(journals(lab.load(lab_dir), since))
    assert len(done) == ROUNDS, f"expected {ROUNDS} failover plans, journals say {done}"
    assert_safe(*(result.checker for result in rounds))


def test_etcd_leader_killed_during_a_failover_ends_with_one_plan(lab_dir: Path) -> None:
    from failover.lab.etcd import etcd_binary  # noqa: F401 - the kit is installed

    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    since = time.time()
    with SafetyWatch(lab_dir) as watch:
        say(fault(lab_dir, writer, "crash"))
        time.sleep(2.5)  # the fleet is about to decide: kill etcd's leader under it
        leader = _etcd_leader(state)
        os.kill(leader, 9)
        say(f"etcd leader (pid {leader}) killed")
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 60, "the failover")
        time.sleep(3)
        done = promotions_done(journals(lab.load(lab_dir), since))
        assert len(done) == 1, f"plans ended ok: {done}"
        say(heal(lab_dir, writer))
        watch.finish(SETTLE)
    _rejoin(lab_dir, writer)
    assert_safe(watch.report())


def _etcd_leader(state: lab.LabState) -> int:
    import json
    import urllib.request

    for member in state.etcd:
        request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status",
                                         data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=2) as response:
            body = json.load(response)
        if body.get("leader") == body.get("header", {}).get("member_id"):
            assert member.pid is not None
            return member.pid
    raise AssertionError("no etcd member says it leads")
