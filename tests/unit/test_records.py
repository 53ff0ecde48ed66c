"""The fleet's record of a service, from what the fleet holds and what the databases say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from failover.controller.records import (
    adopt,
    after_plan,
    discover_writer,
    planning_state,
    promoted,
    reader_record_repairs,
    to_store,
    with_discovered,
    writer_record_repair,
)
from failover.coordination.base import ServiceRecord
from failover.engine import (
    AddReader,
    ConfirmWriter,
    Health,
    Observation,
    Plan,
    PromoteSubscriber,
    Replication,
    Role,
    SetDnsWriter,
)

REGIONS = ("east", "south", "west")


def seen(target: str, role: Role, epoch: int | None, *, fenced: bool = False,
         observer: str = "west") -> Observation:
    return Observation(observer, target, Health.HEALTHY, 3, 100.0,
                       (Replication("orders", role, fenced=fenced, epoch=epoch),))


def test_the_unfenced_primary_with_the_highest_epoch_is_the_writer() -> None:
    observations = [seen("east", Role.PRIMARY, 4), seen("west", Role.PRIMARY, 7, fenced=True),
                    seen("south", Role.PRIMARY, 5), seen("west", Role.SUBSCRIBER, 9)]
    found = discover_writer(observations, "orders", REGIONS)
    assert found == ServiceRecord("orders", "south", 5, readers=("east", "south", "west"))


def test_no_primary_means_no_record() -> None:
    assert discover_writer([seen("east", Role.SUBSCRIBER, 3)], "orders", REGIONS) is None
    assert discover_writer([seen("east", Role.PRIMARY, None)], "orders", REGIONS) is None
    assert discover_writer([seen("east", Role.PRIMARY, 3)], "billing", REGIONS) is None


def test_a_higher_epoch_in_a_database_wins_and_keeps_the_operators_settings() -> None:
    held = ServiceRecord("orders", "east", 3, last_failover_at=50.0, paused=True,
                         readers=("east",), version=4)
    found = ServiceRecord("orders", "west", 5, readers=REGIONS)
    assert adopt(held, found) == ServiceRecord("orders", "west", 5, last_failover_at=50.0,
                                               paused=True, readers=("east",))
    assert adopt(held, ServiceRecord("orders", "west", 3)) is None
    assert adopt(None, found) == found
    assert adopt(held, None) is None


def test_with_discovered_reports_what_it_adopted() -> None:
    held = {"orders": ServiceRecord("orders", "east", 3)}
    records, adopted = with_discovered(held, [seen("west", Role.PRIMARY, 4)],
                                       {"orders": REGIONS, "billing": REGIONS})
    assert records["orders"].writer == "west"
    assert [r.service for r in adopted] == ["orders"]
    assert "billing" not in records


def test_to_store_bumps_the_version_within_an_epoch_and_never_goes_back() -> None:
    held = ServiceRecord("orders", "east", 3, version=2)
    assert to_store(held, ServiceRecord("orders", "east", 3, version=0)) is None
    assert to_store(held, ServiceRecord("orders", "east", 3, paused=True)) == ServiceRecord(
        "orders", "east", 3, paused=True, version=3)
    assert to_store(held, ServiceRecord("orders", "west", 4)) == ServiceRecord("orders", "west", 4)
    assert to_store(held, ServiceRecord("orders", "west", 2)) is None
    assert to_store(None, ServiceRecord("orders", "west", 2)) == ServiceRecord("orders", "west", 2)


def test_after_plan_moves_writer_epoch_and_readers() -> None:
    record = ServiceRecord("orders", "east", 3, readers=("east", "south"))
    plan = Plan(200.0, (PromoteSubscriber("orders", 4, "west", "east", "east is DOWN"),
                        SetDnsWriter("orders", 4, "east", "west", "move"),
                        AddReader("orders", 4, "west", "UP")))
    assert after_plan(record, plan) == ServiceRecord(
        "orders", "west", 4, last_failover_at=200.0, readers=("east", "south", "west"))


def test_promoted_keeps_pause_and_readers() -> None:
    held = ServiceRecord("orders", "east", 3, paused=True, readers=("south",), version=5)
    action = PromoteSubscriber("orders", 4, "west", "east", "operator switchover")
    assert promoted(held, action, 10.0) == ServiceRecord("orders", "west", 4, 10.0, True,
                                                         ("south",))


def test_a_confirmation_raises_only_the_epoch_of_the_writer_it_names() -> None:
    held = ServiceRecord("orders", "east", 3, 50.0, paused=False, readers=("south",), version=2)
    confirm = ConfirmWriter("orders", 5, "east", "a claim of epoch 4 stalled")
    assert promoted(held, confirm, 99.0) == ServiceRecord("orders", "east", 5, 50.0, False,
                                                          ("south",), version=2)
    # A promotion finished meanwhile: the confirmation must not put the old writer back.
    moved = ServiceRecord("orders", "west", 4, 60.0)
    assert promoted(moved, confirm, 99.0) is None
    assert promoted(None, confirm, 99.0) is None


@given(st.lists(st.tuples(st.sampled_from(REGIONS), st.sampled_from(list(Role)),
                          st.none() | st.integers(0, 9), st.booleans()), max_size=8))
def test_a_discovered_writer_is_always_an_unfenced_primary_at_the_top_epoch(
        seen_list: list[tuple[str, Role, int | None, bool]]) -> None:
    observations = [seen(target, role, epoch, fenced=fenced)
                    for target, role, epoch, fenced in seen_list]
    found = discover_writer(observations, "orders", REGIONS)
    candidates = [(epoch, target) for target, role, epoch, fenced in seen_list
                  if role is Role.PRIMARY and not fenced and epoch is not None]
    if not candidates:
        assert found is None
    else:
        assert found is not None
        assert (found.epoch, found.writer) == max(candidates)


@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 3))
def test_to_store_never_stores_an_older_epoch(held_epoch: int, wanted_epoch: int,
                                              version: int) -> None:
    held = ServiceRecord("orders", "east", held_epoch, version=version)
    stored = to_store(held, ServiceRecord("orders", "west", wanted_epoch))
    if stored is not None:
        assert stored.newer_than(held)


ADDRESSES = {"east": "127.0.1.1", "west": "127.0.2.1", "south": "127.0.3.1"}


def test_a_writer_record_that_differs_from_the_fleets_is_repaired_from_where_it_points() -> None:
    record = ServiceRecord("orders", "west", 4)
    assert writer_record_repair(record, frozenset({"127.0.2.1"}), ADDRESSES) is None
    repair = writer_record_repair(record, frozenset({"127.0.1.1"}), ADDRESSES)
    assert repair is not None
    assert (repair.from_region, repair.to_region, repair.epoch) == ("east", "west", 4)
    assert "points at 127.0.1.1" in repair.reason
    missing = writer_record_repair(record, None, ADDRESSES)
    assert missing is not None and "points at nothing" in missing.reason
    assert writer_record_repair(ServiceRecord("orders", None, 0), None, ADDRESSES) is None


def test_a_reader_record_that_differs_from_the_fleets_readers_is_put_back() -> None:
    record = ServiceRecord("orders", "west", 4, readers=("east", "west"))
    assert reader_record_repairs(record, frozenset({"127.0.1.1", "127.0.2.1"}), ADDRESSES) == []
    # A reader missing (say, a crash between recording and moving DNS, or a hand edit), a
    # region the fleet took out, and an address of no region (not failover's to remove).
    moves = reader_record_repairs(record, frozenset({"127.0.2.1", "127.0.3.1", "10.9.9.9"}),
                                  ADDRESSES)
    assert [(type(m).__name__, m.region, m.epoch) for m in moves] == [
        ("AddReader", "east", 4), ("RemoveReader", "south", 4)]
    assert "the reader record holds 10.9.9.9, 127.0.2.1, 127.0.3.1" in moves[0].reason
    absent = reader_record_repairs(record, frozenset(), ADDRESSES)
    assert [(type(m).__name__, m.region) for m in absent] == [("AddReader", "east"),
                                                             ("AddReader", "west")]
    assert "holds nothing" in absent[0].reason


def test_the_engine_plans_above_an_epoch_a_stalled_claimant_holds() -> None:
    records = {"orders": ServiceRecord("orders", "east", 3), "billing": ServiceRecord(
        "billing", "west", 7)}
    state = planning_state(records, {"orders": 5, "billing": 2}).by_service()
    assert (state["orders"].writer, state["orders"].epoch) == ("east", 5)
    assert state["billing"].epoch == 7

