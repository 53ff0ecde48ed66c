"""Chaos scenarios against the real lab: three regions, real PostgreSQL, BIND9, controllers.

Every scenario breaks the lab the way production breaks and checks what users
rely on: one plan executed once, no write accepted by two primaries, no
duplicate key after a promotion, no failover where none is due. Safety is
judged from outside: clients pinned to every region write through each scenario,
and the checker (tests/chaos/safety.py) reads their logs and every database. The lab runs
on fixed loopback addresses, so this file holds every scenario (xdist keeps a
file on one worker). Rounds per scenario: FAILOVER_CHAOS_ROUNDS (default 3).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.controller.client import call, send_operator
from failover.controller.executor import CRASH_AFTER_STEP_ENV
from failover.dns import RecordKey, RecordSet
from failover.dns.factory import provider_from_topology
from failover.dns.wire import Endpoint, answer
from failover.errors import FailoverError
from failover.lab import processes
from failover.lab import state as lab
from failover.lab.audit import journals as fleet_journals
from failover.lab.build import service_view, start_controller, wait_healthy
from failover.lab.checker import SafetyWatch
from failover.lab.drill import RoundResult, back_in_service, drill
from failover.lab.faults import fault, heal
from failover.lab.launch import region_server
from failover.lab.unprivileged import region_user
from failover.lab.writers import probe_writable
from failover.topology import load_topology
from tests.chaos.safety import QUIET_SETTLE, SETTLE, assert_safe
from tests.support.lab import running_lab, say

ROUNDS = int(os.environ.get("FAILOVER_CHAOS_ROUNDS", "3"))

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    with running_lab(Path("/tmp/failover-chaos-lab"), "peers") as directory:
        yield directory


def journals(state: lab.LabState, since: float) -> list[dict[str, Any]]:
    """Every reachable controller's journal from `since`, as one timeline."""
    secret = load_topology(Path(state.topology)).fleet_key()
    assert secret is not None
    by_region = fleet_journals(state, secret.get_secret_value().encode(), since)
    return sorted((e for entries in by_region.values() for e in entries), key=lambda e: e["ts"])


def promotions_done(entries: list[dict[str, Any]]) -> list[str]:
    """Plan ids of automatic failovers that ended ok, once per controller journal."""
    started = {e["plan_id"]: e for e in entries if e["kind"] == "plan" and e["event"] == "start"
               and any(a["type"] == "PromoteSubscriber"
                       for a in (e.get("plan") or {}).get("actions", []))}
    return [e["plan_id"] for e in entries if e["kind"] == "plan" and e["event"] == "end"
            and e.get("outcome") == "ok" and e["plan_id"] in started]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (AssertionError, FailoverError) as exc:  # e.g. controllers just restarted, no quorum
            last = f" (last: {exc})"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{last}")


def assert_clean_failover(result: RoundResult) -> None:
    assert result.failed_over, f"{result.kind}: the writer did not move"
    assert result.rto_s is not None, "no write was acknowledged by the new writer"
    assert result.duplicate_keys == 0
    assert not result.false_failover
    assert result.rejoined_by_fleet is not False, (
        f"the fleet did not rejoin {result.old_writer} in time (the drill did it instead)")


@pytest.mark.parametrize("kind", ["crash", "hang", "isolate"])
def test_writer_failure_fails_over_once_without_split_brain(lab_dir: Path, kind: str) -> None:
    since = time.time()
    report = drill(lab_dir, [kind], ROUNDS, say, settle=SETTLE)
    rounds = [RoundResult(**r) for r in report["rounds"]]
    for result in rounds:
        assert_clean_failover(result)
        say(f"{kind}: RTO {result.rto_s:.2f} s, detection {result.detection_s}, "
            f"lost {result.lost}")
    entries = journals(lab.load(lab_dir), since)
    done = promotions_done(entries)
    assert len(done) == len(set(done)) == ROUNDS, f"one plan per round expected: {done}"
    if kind == "isolate":
        assert_fenced_itself(entries, rounds)
    if kind == "crash":
        assert_history_shows(lab.load(lab_dir), done)
    assert_safe(*(result.checker for result in rounds))


def assert_history_shows(state: lab.LabState, plans: list[str]) -> None:
    """`failover history` merges every controller's journal into the postmortem timeline."""
    import json
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "failover", "history", "-t", state.topology,
                            "--since", "15m", "--json"], capture_output=True, text=True,
                           check=False, timeout=60)
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)["entries"]
    for plan in plans:
        steps = [e for e in entries if e.get("plan_id") == plan and e["kind"] == "step"]
        assert any(e["step"].startswith("bump the epoch") for e in steps), plan
        assert any(e["step"].startswith("point app.lab.test.") for e in steps), plan
    kinds = {e["kind"] for e in entries}
    assert {"threshold", "verdict", "plan", "step"} <= kinds, kinds


def assert_fenced_itself(entries: list[dict[str, Any]], rounds: list[RoundResult]) -> None:
    """Each cut-off writer's controller fenced its database around the promotion.

    Not necessarily before it: the fence is defence in depth. What ends the old writer's
    writes is its lease, checked by every statement and again at every commit, which ends
    before the new writer's promotion; on a loaded machine the fence can finish a little
    after (seen in CI: 0.24 s). The pinned clients (assert_safe) measure that no write was
    taken by both."""
    def ended(step: str, source: str | None = None) -> list[float]:
        return [e["ts"] for e in entries if e["kind"] == "step" and e["event"] == "end"
                and e.get("outcome") == "ok" and e["step"].startswith(step)
                and (source is None or e["source"] == source)]

    writable = sorted(ended("bump the epoch"))
    assert len(writable) >= len(rounds), f"promotions seen: {writable}"
    for result, became_writable in zip(rounds, writable, strict=False):
        fenced = [t for t in ended("terminate client sessions", result.old_writer)
                  if became_writable - 30 < t < became_writable + 30]
        assert fenced, f"{result.old_writer} never fenced itself"


def _quiet_round(lab_dir: Path, inject: Callable[[lab.LabState], None],
                 undo: Callable[[lab.LabState], None], watch: float) -> None:
    state = lab.load(lab_dir)
    before = service_view(state)
    inject(state)
    try:
        time.sleep(watch)
        during = service_view(lab.load(lab_dir))
    finally:
        undo(lab.load(lab_dir))
    assert (during["writer"], during["epoch"]) == (before["writer"], before["epoch"]), \
        f"a failover happened: {before['writer']}@{before['epoch']} -> " \
        f"{during['writer']}@{during['epoch']}"


def test_an_isolated_non_writer_region_causes_no_failover(lab_dir: Path) -> None:
    with SafetyWatch(lab_dir) as watch:
        for _ in range(ROUNDS):
            writer = service_view(lab.load(lab_dir))["writer"]
            other = next(r.name for r in lab.load(lab_dir).regions if r.name != writer)
            _quiet_round(lab_dir, lambda s, o=other: say(fault(lab_dir, o, "isolate")),
                         lambda s, o=other: say(heal(lab_dir, o)), watch=6.0)
            wait_healthy(lab.load(lab_dir), 60.0, say)
        watch.finish(QUIET_SETTLE)
    assert_safe(watch.report())


def test_a_blip_shorter_than_the_threshold_causes_no_failover(lab_dir: Path) -> None:
    # unhealthy_threshold 3 at a 1 s interval: a 1.2 s hang fails at most two probes.
    with SafetyWatch(lab_dir) as watch:
        for _ in range(ROUNDS):
            writer = service_view(lab.load(lab_dir))["writer"]

            def blip(state: lab.LabState, w: str = writer) -> None:
                say(fault(lab_dir, w, "hang"))
                time.sleep(1.2)
                say(heal(lab_dir, w))

            _quiet_round(lab_dir, blip, lambda s: None, watch=4.0)
        watch.finish(QUIET_SETTLE)
    assert_safe(watch.report())


@pytest.mark.parametrize("kind", ["controller-crash", "dns-down"])
def test_faults_that_must_not_fail_over(lab_dir: Path, kind: str) -> None:
    report = drill(lab_dir, [kind], ROUNDS, say, settle=SETTLE)
    for result in report["rounds"]:
        assert not result["failed_over"] and not result["false_failover"]
        assert result["lost"] == 0 and result["duplicate_keys"] == 0
    assert_safe(*(result["checker"] for result in report["rounds"]))


def test_executing_controller_killed_mid_plan_completes_once(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    # The executor is the highest-priority controller outside the DOWN region.
    executor = max((r for r in state.regions if r.name != writer),
                   key=lambda r: lab.PRIORITIES[r.name]).name
    say(fault(lab_dir, executor, "controller-crash"))
    state = lab.load(lab_dir)
    os.environ["FAILOVER_TEST_CRASH_AFTER_STEP"] = "create the publication"
    try:
        state.region(executor).controller_pid = start_controller(
            lab_dir, Path(state.topology), executor, region_user(executor))
    finally:
        del os.environ["FAILOVER_TEST_CRASH_AFTER_STEP"]
    state.faults.pop(executor)
    lab.save(state, lab_dir)
    wait_healthy(lab.load(lab_dir), 60.0, say)
    since = time.time()
    with SafetyWatch(lab_dir) as watch:
        say(fault(lab_dir, writer, "crash"))
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 90, "a new writer")
        # The killed executor comes back and must not run the plan a second time.
        state = lab.load(lab_dir)
        state.region(executor).controller_pid = start_controller(
            lab_dir, Path(state.topology), executor, region_user(executor))
        lab.save(state, lab_dir)
        time.sleep(4)
        entries = journals(lab.load(lab_dir), since)
        done = promotions_done(entries)
        assert len(set(done)) == 1 and len(done) == 1, f"plans ended ok: {done}"
        crashed = [e for e in entries if e["source"] == executor and e["kind"] == "step"
                   and e["step"] == "create the publication" and e["event"] == "end"]
        assert crashed, "the executor never reached the step it was to die after: " + "; ".join(
            f"{e['source']} {e['kind']} {e.get('step', '')} {e.get('event', '')}"
            for e in entries if e["kind"] in ("plan", "step"))
        say(heal(lab_dir, writer))
        watch.finish(SETTLE)
    _rejoin(lab_dir, writer)
    assert_safe(watch.report())


def test_dns_records_changed_by_hand_are_put_back(lab_dir: Path) -> None:
    """Level-triggered DNS: whoever leads compares the writer and reader records with the
    fleet record and repairs them, whatever left them behind."""
    state = lab.load(lab_dir)
    topo = load_topology(Path(state.topology))
    service = topo.services[state.service.name]
    assert service.reader_record is not None
    writer = service_view(state)["writer"]
    other = next(r for r in state.regions if r.name != writer)
    writer_key, reader_key = RecordKey(service.writer_record, "A"), RecordKey(service.reader_record, "A")
    provider = provider_from_topology(topo)
    readers_before = provider.read(reader_key)
    assert readers_before is not None and other.address in readers_before.values
    current = provider.read(writer_key)
    assert current is not None
    provider.compare_and_set(current, RecordSet(writer_key, current.ttl,
                                                frozenset({other.address})))
    provider.remove_value(reader_key, other.address)
    say(f"by hand: {service.writer_record} -> {other.address}, {other.address} out of "
        f"{service.reader_record}")

    def put_back() -> bool:
        now_writer, now_readers = provider.read(writer_key), provider.read(reader_key)
        return (now_writer is not None and now_writer.values == frozenset(
            {state.region(writer).address}) and now_readers is not None
            and now_readers.values == readers_before.values)

    wait_for(put_back, 30, "both records back to what the fleet records")


def _restart_controller(lab_dir: Path, region: str, *, crash_after: str | None = None) -> None:
    """Start `region`'s controller again (its process is gone); `crash_after`: it exits
    right after the step of that name ends (the executor's test hook)."""
    state = lab.load(lab_dir)
    if crash_after is not None:
        os.environ[CRASH_AFTER_STEP_ENV] = crash_after
    try:
        state.region(region).controller_pid = start_controller(
            lab_dir, Path(state.topology), region, region_user(region))
    finally:
        os.environ.pop(CRASH_AFTER_STEP_ENV, None)
    state.faults.pop(region, None)
    lab.save(state, lab_dir)


def test_a_rejoin_interrupted_midway_completes_once_after_its_controller_restarts(
        lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    # The rejoin runs once every region is UP again: the highest-priority controller leads
    # then, whichever region writes (the old writer's own, when it has the highest).
    executor = max(state.regions, key=lambda r: lab.PRIORITIES[r.name]).name
    midway = "drop stale slots and the publication"  # after the listing, before the resync
    say(fault(lab_dir, executor, "controller-crash"))
    _restart_controller(lab_dir, executor, crash_after=midway)
    wait_healthy(lab.load(lab_dir), 60.0, say)
    since = time.time()
    with SafetyWatch(lab_dir) as watch:
        say(fault(lab_dir, writer, "crash"))
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 90, "a new writer")
        say(heal(lab_dir, writer))  # its server starts: the fleet rejoins it
        pid = lab.load(lab_dir).region(executor).controller_pid
        assert pid is not None
        wait_for(lambda: not processes.alive(pid), 90, f"{executor}'s controller to die midway")
        _restart_controller(lab_dir, executor)
        _rejoin(lab_dir, writer)
        watch.finish(SETTLE)
    entries = journals(lab.load(lab_dir), since)
    crashed = [e for e in entries if e["source"] == executor and e["kind"] == "step"
               and e["step"] == midway and e["event"] == "end"]
    assert crashed, f"{executor} never ran the step it was to die after"
    rejoins = {e["plan_id"] for e in entries if e["kind"] == "plan" and e["event"] == "start"
               and any(a["type"] == "RejoinRegion" and a.get("region") == writer
                       for a in (e.get("plan") or {}).get("actions", []))}
    done = [e["plan_id"] for e in entries if e["kind"] == "plan" and e["event"] == "end"
            and e.get("outcome") == "ok" and e["plan_id"] in rejoins]
    assert done, f"no rejoin plan of {writer} ended ok (of {rejoins})"
    # The copy happens once. Another controller may run the rejoin while this one is down
    # (it executes then), and this one's resumed plan then finds the region subscribed; but
    # no controller plans it again from a view of the region read before its rejoin ended.
    resync = f"resync {writer} from {service_view(lab.load(lab_dir))['writer']}"
    resyncs = [(e["source"], e.get("detail") or "") for e in entries if e["kind"] == "step"
               and e["event"] == "end" and e.get("outcome") == "ok" and e["step"] == resync]
    copies = [detail for _, detail in resyncs if "copying" in detail]
    assert len(copies) == 1, f"the resync copied {len(copies)} times: {resyncs}"
    assert all("already subscribed" in detail for _, detail in resyncs
               if "copying" not in detail), resyncs
    sources = [source for source, _ in resyncs]
    assert len(sources) == len(set(sources)), f"a controller ran the resync twice: {resyncs}"
    assert_safe(watch.report())


def _rejoin(lab_dir: Path, old: str) -> None:
    """The old writer serving again: the fleet's doing in a lab whose service rejoins
    automatically (the chaos labs do), the operator's otherwise."""
    writer = service_view(lab.load(lab_dir))["writer"]
    by_fleet = back_in_service(lab_dir, old, writer, "chaos", say)
    assert by_fleet is not False, f"the fleet did not rejoin {old} as a subscriber of {writer}"


def test_dns_down_during_a_failover_catches_up_and_shows_degraded(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    with SafetyWatch(lab_dir) as watch:
        say(fault(lab_dir, writer, "dns-down"))
        say(fault(lab_dir, writer, "crash"))
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 40, "the promotion")
        # The promotion is recorded before the DNS step has failed: degraded follows within
        # its retries.
        wait_for(lambda: "writer record" in (service_view(lab.load(lab_dir))["degraded"] or ""),
                 30, "status to show the writer record degraded")
        new = service_view(lab.load(lab_dir))["writer"]
        say(heal(lab_dir, writer, "dns-down"))
        new_address = lab.load(lab_dir).region(new).address
        server = Endpoint(state.dns.address, state.dns.port)

        def dns_points_at_new() -> bool:
            try:
                found = answer(server, state.service.writer_record, "A", 1.0)
                return found is not None and found[1] == frozenset({new_address})
            except Exception:
                return False

        wait_for(dns_points_at_new, 30, f"the writer record to point at {new}")
        wait_for(lambda: not service_view(lab.load(lab_dir))["degraded"], 10, "degraded to clear")
        say(heal(lab_dir, writer, "crash"))
        watch.finish(SETTLE)
    _rejoin(lab_dir, writer)
    assert_safe(watch.report())


def test_planned_switchover_under_load_loses_no_acknowledged_write(lab_dir: Path) -> None:
    report = drill(lab_dir, ["switchover"], ROUNDS, say, settle=SETTLE)
    for result in report["rounds"]:
        assert result["failed_over"], "the writer did not move"
        assert result["lost"] == 0, f"{result['lost']} acknowledged writes missing"
        assert result["duplicate_keys"] == 0
        say(f"switchover: write pause {result['write_pause_s']:.2f} s")
    # The controllers do not undo an operator's switchover.
    writer = service_view(lab.load(lab_dir))["writer"]
    time.sleep(3)
    assert service_view(lab.load(lab_dir))["writer"] == writer
    assert_safe(*(result["checker"] for result in report["rounds"]))


def _as_region_user(state: lab.LabState, region: str, *command: str) -> None:
    """`command` as the region's PostgreSQL user, as its init system would run it."""
    subprocess.run(["runuser", "-u", state.region(region).user, "--", *command], check=True,
                   capture_output=True, text=True, timeout=90)


def _supervisor_start(lab_dir: Path, region: str) -> None:
    """`pg_ctl start` as the server's user, retried as systemd's Restart= would: it is
    refused while the killed postmaster's PID still exists (a zombie not yet reaped)."""
    state = lab.load(lab_dir)
    server = region_server(state, region)
    # A supervisor reaps the server it ran; here the lab (maybe this process) started it.
    killed = state.region(region).postmaster_pid
    wait_for(lambda: not processes.alive(killed), 30, "the killed postmaster to be reaped")
    deadline = time.monotonic() + 60
    while True:
        try:
            _as_region_user(state, region, str(server.bindir / "pg_ctl"), "start", "--wait",
                            "-D", str(server.datadir), "-l", str(server.logfile))
            break
        except subprocess.CalledProcessError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"pg_ctl start kept failing: {exc.stderr}") from exc
            time.sleep(1)
    # The lab's own bookkeeping, so that later tests find the server it started.
    current = lab.load(lab_dir)
    current.region(region).postmaster_pid = int(
        (server.datadir / "postmaster.pid").read_text().split()[0])
    lab.save(current, lab_dir)


def test_an_old_writer_started_again_by_its_supervisor_takes_no_writes(lab_dir: Path) -> None:
    """The first case of the one-writer issue, with plain tools: the writer's PostgreSQL
    is killed, the fleet fails over, and the old server is started again with `pg_ctl`
    as its user, not through the lab. Its controller, and no lab verb, keeps it fenced."""
    state = lab.load(lab_dir)
    old = service_view(state)["writer"]
    with SafetyWatch(lab_dir) as watch:
        subprocess.run(["pkill", "-KILL", "-u", state.region(old).user, "-x", "postgres"],
                       check=True, timeout=10)
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != old, 40, "the promotion")
        _supervisor_start(lab_dir, old)
        watch.finish(SETTLE)
    status = service_view(lab.load(lab_dir))["replication"][old]
    assert status["role"] != "primary" or status["fenced"], f"{old} shows as {status}"
    _rejoin(lab_dir, old)
    assert_safe(watch.report())


def test_a_firewall_rule_on_the_writers_database_port_leaves_one_writer(lab_dir: Path) -> None:
    """The second case, with plain iptables in the OUTPUT chain (not the lab's rules):
    the writer's database port is cut off from the other regions' processes while its
    controller is still heard; the rule is removed after the failover."""
    state = lab.load(lab_dir)
    old = service_view(state)["writer"]
    writer = state.region(old)
    rules = [["OUTPUT", "-d", writer.address, "-p", "tcp", "--dport", str(writer.pg_port),
              "-m", "owner", "--gid-owner", str(pwd.getpwnam(other.user).pw_gid), "-j", "DROP"]
             for other in state.regions if other.name != old]
    with SafetyWatch(lab_dir) as watch:
        try:
            for rule in rules:
                subprocess.run(["iptables", "-w", "5", "-I", *rule], check=True, timeout=10)
            wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != old, 40,
                     "the promotion")
            time.sleep(5)  # the old writer's clients keep trying while the rule holds
        finally:
            for rule in rules:
                subprocess.run(["iptables", "-w", "5", "-D", *rule], check=False, timeout=10)
        watch.finish(SETTLE)
    _rejoin(lab_dir, old)
    assert_safe(watch.report())


def test_an_application_session_cannot_write_where_the_writer_is_not(lab_dir: Path) -> None:
    # A subscriber's database is read-only by default only; the session asks for a
    # read-write transaction, as pgJDBC's setReadOnly(false) does.
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    # Judged on a probe in which the writer takes the write (a scenario before may have left
    # its lease lapsing): the subject here is that nowhere else does.
    def only_the_writer() -> bool:
        writable = probe_writable(state, int(time.time() * 1000), read_write=True)
        others = [r for r, why in writable.items() if why is None and r != writer]
        assert not others, f"an application session wrote outside the writer: {writable}"
        return writable[writer] is None

    wait_for(only_the_writer, 30, f"{writer} to take writes, and no other region")


def _fleet_key(state: lab.LabState) -> bytes:
    secret = load_topology(Path(state.topology)).fleet_key()
    assert secret is not None
    return secret.get_secret_value().encode()


def test_forged_unsigned_and_replayed_observations_are_refused_and_counted(
        lab_dir: Path) -> None:
    import json
    import urllib.request

    from failover.coordination.signing import sign

    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    target = next(r for r in state.regions if r.name != writer)
    # A payload claiming, as a real peer, that the writer region is unhealthy.
    peer = next(r.name for r in state.regions if r.name not in (writer, target.name))
    lie = {"observer": peer, "records": [], "observations": [
        {"observer": peer, "target": writer, "health": "unhealthy", "consecutive": 99,
         "observed_at": time.time() + 5, "services": []}]}
    body = json.dumps(lie).encode()

    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{target.controller_url}/v1/observations", data=body,
                                         method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=5, context=state.api_tls()) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def rejected() -> dict[str, float]:
        text = urllib.request.urlopen(f"{target.controller_url}/metrics", timeout=5,
                                      context=state.api_tls()).read().decode()
        counts = {}
        for line in text.splitlines():
            if line.startswith("failover_peer_requests_rejected_total{"):
                reason = line.split('reason="')[1].split('"')[0]
                counts[reason] = float(line.rsplit(" ", 1)[1])
        return counts

    with SafetyWatch(lab_dir) as watch:
        before = rejected()
        assert post({}) == 401
        assert post(sign(b"not-the-fleet-key", "POST", "/v1/observations", body)) == 401
        old = sign(_fleet_key(state), "POST", "/v1/observations", body, now=time.time() - 3600)
        assert post(old) == 401
        after = rejected()
        for reason in ("unsigned", "bad-signature", "replayed"):
            assert after.get(reason, 0) == before.get(reason, 0) + 1, (reason, before, after)
        time.sleep(2)
        verdicts = call(target.controller_url, "GET", "/v1/status", key=None,
                        tls=state.api_tls()).body["verdicts"]
        assert verdicts[writer]["verdict"] == "UP", "a refused observation changed a verdict"
        watch.finish(QUIET_SETTLE)
    assert_safe(watch.report())


def _operator(state: lab.LabState, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    return send_operator(state.controllers(), lambda: _fleet_key(state), verb, body,
                         timeout=60, tls=state.api_tls())


def test_a_paused_service_is_not_failed_over(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    writer = service_view(state)["writer"]
    with SafetyWatch(lab_dir) as watch:
        _operator(state, "pause", {"service": state.service.name, "by": "test"})
        try:
            wait_for(lambda: service_view(lab.load(lab_dir))["paused"], 5, "the pause to spread")
            say(fault(lab_dir, writer, "crash"))
            time.sleep(7)
            now = service_view(lab.load(lab_dir))
            assert now["writer"] == writer and now["paused"], "a paused service was failed over"
        finally:
            _operator(lab.load(lab_dir), "resume", {"service": state.service.name, "by": "test"})
        # Resumed: the fleet fails it over now.
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 40, "the failover")
        say(heal(lab_dir, writer))
        watch.finish(SETTLE)
    _rejoin(lab_dir, writer)
    assert_safe(watch.report())


def test_a_failing_pre_promote_hook_aborts_the_promotion(lab_dir: Path) -> None:
    state = lab.load(lab_dir)
    fleet = Path(state.topology) / "fleet.toml"
    original = fleet.read_text()
    before = service_view(state)
    writer = before["writer"]

    def restart_controllers() -> None:
        for region in lab.load(lab_dir).regions:
            say(fault(lab_dir, region.name, "controller-crash"))
            say(heal(lab_dir, region.name, "controller-crash"))

    fleet.write_text(original.replace('app_roles = [', 'pre_promote = ["sh", "-c", '
                                      '"echo not today >&2; exit 1"]\napp_roles = ['))
    with SafetyWatch(lab_dir) as watch:
        try:
            restart_controllers()
            wait_healthy(lab.load(lab_dir), 60.0, say)
            # An operator's switchover runs the hook too, and is refused by it.
            target = next(r.name for r in state.regions if r.name != writer)
            with pytest.raises(FailoverError, match="pre_promote hook"):
                _operator(lab.load(lab_dir), "switchover",
                          {"service": state.service.name, "region": target, "by": "test"})
            assert service_view(lab.load(lab_dir))["writer"] == writer
            since = time.time()
            say(fault(lab_dir, writer, "crash"))
            wait_for(lambda: any(e["kind"] == "plan" and e["event"] == "end"
                                 and "pre_promote hook" in str(e.get("error"))
                                 for e in journals(lab.load(lab_dir), since)), 30,
                     "the refused promotion in the journal")
            now = service_view(lab.load(lab_dir))
            assert (now["writer"], now["epoch"]) == (writer, before["epoch"])
        finally:
            fleet.write_text(original)
            restart_controllers()
        wait_for(lambda: service_view(lab.load(lab_dir))["writer"] != writer, 60, "the failover")
        say(heal(lab_dir, writer))
        watch.finish(SETTLE)
    _rejoin(lab_dir, writer)
    assert_safe(watch.report())


def test_a_claim_that_never_became_a_promotion_does_not_stop_the_writer(lab_dir: Path) -> None:
    """The fault: an executor claimed the next epoch on a majority and died before promoting
    (injected as its signed claim requests, sent to every other controller). Those acceptors
    stop vouching for the writer, whose lease then runs out; the fleet must confirm the
    writer at a newer epoch instead of leaving the service without one for good."""
    state = lab.load(lab_dir)
    before = service_view(state)
    writer, epoch = before["writer"], before["epoch"]
    claimant, target = sorted(r.name for r in state.regions if r.name != writer)
    secret = load_topology(Path(state.topology)).fleet_key()
    assert secret is not None
    with SafetyWatch(lab_dir) as watch:
        for region in state.regions:
            if region.name != claimant:
                reply = call(region.controller_url, "POST", "/v1/claim",
                             key=secret.get_secret_value().encode(),
                             body={"service": state.service.name, "epoch": epoch + 1,
                                   "claimant": claimant, "target": target},
                             tls=state.api_tls())
                assert reply.body.get("granted") is True, reply.body
        wait_for(lambda: service_view(lab.load(lab_dir))["epoch"] > epoch + 1, 30,
                 f"{writer} confirmed above the stalled epoch {epoch + 1}")
        watch.finish(QUIET_SETTLE)
    after = service_view(lab.load(lab_dir))
    assert after["writer"] == writer, f"the writer moved to {after['writer']}"
    # One confirmation: another, planned from a view of the writer read before the first
    # ended, would claim again and void the acceptors' word for the writer once more.
    assert after["epoch"] == epoch + 2, f"confirmed {after['epoch'] - epoch - 1} times"
    assert_safe(watch.report())
