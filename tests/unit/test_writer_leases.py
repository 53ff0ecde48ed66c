"""Which writers' leases a controller renews besides its own region's."""

from failover.controller.local import silent_writers
from failover.coordination.base import ServiceRecord
from failover.engine import Health, Observation


def test_silent_writers_are_those_whose_controller_sent_nothing_lately() -> None:
    records = {"orders": ServiceRecord("orders", "east", 3),
               "users": ServiceRecord("users", "west", 1),
               "billing": ServiceRecord("billing", "south", 2),
               "mine": ServiceRecord("mine", "north", 2),
               "none": ServiceRecord("none", None, 0)}
    heard = [Observation("east", "west", Health.HEALTHY, 3, 95.0),  # 5 s ago: silent
             Observation("west", "east", Health.HEALTHY, 3, 99.5),
             Observation("west", "west", Health.HEALTHY, 3, 90.0)]  # its newest counts
    # south never spoke; north is the deciding controller itself.
    assert silent_writers(records, heard, 100.0, 2.0, "north") == {"orders": "east",
                                                                    "billing": "south"}
