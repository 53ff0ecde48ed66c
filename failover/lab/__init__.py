"""Local test regions on this machine: servers, the lab, faults and the drill."""
