"""HMAC-SHA256 signatures on every request between controllers (and from operators).

The signature covers the method, the path, a timestamp and a digest of the
body, so a captured request cannot be re-aimed at another verb or altered.
A request whose timestamp is outside the window is a replay; inside the
window, an exact repeat of a signature already seen is a replay too.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

TIMESTAMP_HEADER = "X-Failover-Timestamp"
SIGNATURE_HEADER = "X-Failover-Signature"


class SignatureRejected(Exception):
    """Why a request was refused: `reason` is one of unsigned, bad-signature, replayed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _message(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{timestamp}\n{digest}".encode()


def sign(key: bytes, method: str, path: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers to add to a request."""
    timestamp = f"{time.time() if now is None else now:.6f}"
    signature = hmac.new(key, _message(method, path, timestamp, body), hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature}


class Verifier:
    """Checks signatures; remembers recent ones to refuse exact repeats inside the window."""

    def __init__(self, key: bytes, window: float) -> None:
        self._key = key
        self.window = window
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, headers: dict[str, str], body: bytes,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        timestamp = headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise SignatureRejected("unsigned", f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
        expected = hmac.new(self._key, _message(method, path, timestamp, body),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise SignatureRejected("bad-signature", "the signature does not match the fleet key")
        try:
            sent = float(timestamp)
        except ValueError:
            raise SignatureRejected("bad-signature", "the timestamp is not a number") from None
        if abs(now - sent) > self.window:
            raise SignatureRejected(
                "replayed", f"timestamp {now - sent:+.1f} s away, outside the {self.window:g} s window"
            )
        with self._lock:
            # A signature stays acceptable until its timestamp leaves the window,
            # at most 2 windows after it was first seen: remember it that long.
            while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
                self._seen.popitem(last=False)
            if signature in self._seen:
                raise SignatureRejected("replayed", "this exact request was already received")
            self._seen[signature] = now
