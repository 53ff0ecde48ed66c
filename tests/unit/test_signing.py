"""Signed requests between controllers: forged, unsigned and replayed ones are refused."""

from __future__ import annotations

import pytest

from failover.coordination.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRejected,
    Verifier,
    sign,
)

KEY = b"fleet-key"
BODY = b'{"observer": "us-east-1"}'


def test_a_signed_request_is_accepted_once() -> None:
    verifier = Verifier(KEY, window=30)
    headers = sign(KEY, "POST", "/v1/observations", BODY, now=1000.0)
    verifier.verify("POST", "/v1/observations", headers, BODY, now=1001.0)
    with pytest.raises(SignatureRejected) as info:
        verifier.verify("POST", "/v1/observations", headers, BODY, now=1002.0)
    assert info.value.reason == "replayed"


@pytest.mark.parametrize(
    ("method", "path", "body", "key"),
    [
        ("POST", "/v1/observations", BODY + b" ", KEY),  # body altered
        ("POST", "/v1/operator/promote", BODY, KEY),  # re-aimed at another verb
        ("PUT", "/v1/observations", BODY, KEY),
        ("POST", "/v1/observations", BODY, b"another-fleet"),  # signed with the wrong key
    ],
)
def test_anything_altered_is_a_bad_signature(method: str, path: str, body: bytes, key: bytes) -> None:
    headers = sign(key, "POST", "/v1/observations", BODY, now=1000.0)
    with pytest.raises(SignatureRejected) as info:
        Verifier(KEY, window=30).verify(method, path, headers, body, now=1000.0)
    assert info.value.reason == "bad-signature"


def test_unsigned_is_refused() -> None:
    with pytest.raises(SignatureRejected) as info:
        Verifier(KEY, window=30).verify("POST", "/v1/observations", {}, BODY, now=1.0)
    assert info.value.reason == "unsigned"


@pytest.mark.parametrize("skew", [-31.0, 31.0])
def test_a_timestamp_outside_the_window_is_a_replay(skew: float) -> None:
    headers = sign(KEY, "POST", "/v1/observations", BODY, now=1000.0)
    with pytest.raises(SignatureRejected) as info:
        Verifier(KEY, window=30).verify("POST", "/v1/observations", headers, BODY, now=1000.0 + skew)
    assert info.value.reason == "replayed"


def test_a_forged_timestamp_breaks_the_signature() -> None:
    headers = sign(KEY, "POST", "/v1/observations", BODY, now=1000.0)
    headers[TIMESTAMP_HEADER] = "2000.000000"
    with pytest.raises(SignatureRejected) as info:
        Verifier(KEY, window=30).verify("POST", "/v1/observations", headers, BODY, now=2000.0)
    assert info.value.reason == "bad-signature"
    assert SIGNATURE_HEADER in headers


def test_memory_of_seen_signatures_is_bounded() -> None:
    verifier = Verifier(KEY, window=1)
    for i in range(1000):
        now = float(i)
        verifier.verify("POST", "/p", sign(KEY, "POST", "/p", BODY, now=now), BODY, now=now)
    assert len(verifier._seen) <= 3
