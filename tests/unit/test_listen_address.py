"""The controller listens where its URL says, or where `api.listen` says."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from failover.topology import Region


def region(url: str, **api: Any) -> Region:
    tls = {"cert_file": "ctl.crt", "key_file": "ctl.key"} if url.startswith("https") else {}
    return Region.model_validate({"name": "r", "controller_url": url, "address": "127.0.0.1",
                                  "api": {**tls, **api}})


def test_listen_address_reads_the_controller_url() -> None:
    assert region("http://127.0.1.1:8700").listen_address == ("127.0.1.1", 8700)
    assert region("http://[::1]:8700/").listen_address == ("::1", 8700)
    assert region("https://ctl.example").listen_address == ("ctl.example", 443)
    assert region("http://ctl.example").listen_address == ("ctl.example", 80)


def test_api_listen_is_apart_from_the_advertised_url() -> None:
    assert region("https://ctl.example:8700", listen="0.0.0.0:8700").listen_address == (
        "0.0.0.0", 8700)
    assert region("http://10.0.0.1:8700", listen="[::]:9000").listen_address == ("::", 9000)


@pytest.mark.parametrize("listen", ["0.0.0.0", ":8700", "0.0.0.0:0", "0.0.0.0:70000",
                                    "host:port", "0.0.0.0:8700/x", "u@0.0.0.0:8700",
                                    "[::1:8700", "0.0.0.0:8700?q"])
def test_api_listen_needs_an_address_and_a_port(listen: str) -> None:
    with pytest.raises(ValidationError, match="expected address:port"):
        region("http://127.0.0.1:8700", listen=listen)
