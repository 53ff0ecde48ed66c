"""The controller listens where its URL says."""

from __future__ import annotations

from failover.controller.process import listen_address


def test_listen_address_reads_the_controller_url() -> None:
    assert listen_address("http://127.0.1.1:8700") == ("127.0.1.1", 8700)
    assert listen_address("http://[::1]:8700/") == ("::1", 8700)
    assert listen_address("https://ctl.example") == ("ctl.example", 443)
    assert listen_address("http://ctl.example") == ("ctl.example", 80)
