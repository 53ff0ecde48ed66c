"""The few etcd v3 calls the coordinator makes, over every configured endpoint.

Built on etcd3gw, which speaks the gRPC gateway's JSON API (`/v3/` from etcd
3.4 on). A call goes to the endpoint that answered last; when it does not
answer in time (down, hung, partitioned from its cluster's quorum) the call
moves on to the next endpoint, once round. Calls are synchronous: the
coordinator runs them in a worker thread.

TLS: `ca_file` verifies the members, `cert_file`/`key_file` is the client
certificate. etcd refuses a gateway request whose client certificate carries
a common name (it could not be used as the user name there), so that
certificate must have none; authenticate with `user` and `password_env`.

Every write the coordinator makes is safe to send twice: a transaction that
timed out on one endpoint may have been applied before it is sent to the
next, so callers read back what a failed compare found instead of trusting it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors
from etcd3gw.lease import Lease
from pydantic import SecretStr

from failover.errors import FailoverError, UserError

T = TypeVar("T")
# The gateway's path from etcd 3.4 on; fixed, rather than discovered by one more request.
API_PATH = "/v3/"

# gRPC status codes the gateway returns in its JSON errors.
_UNAUTHENTICATED = 16  # an auth token expired: authenticate again
_NOT_FOUND = 5


class EtcdUnavailable(FailoverError):
    """No endpoint answered in time: the cluster is down, hung, or has lost its quorum."""


class EtcdRefused(FailoverError):
    """An endpoint answered with an error that asking again will not change."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code  # the gRPC status code, when the gateway sent one


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction: a put's own revision
    ranges: tuple[tuple[KeyValue, ...], ...]  # one per range request of the branch taken


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


# ---------------------------------------------------------------- transaction parts


def created_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: `key` was created at `revision` (0: the key does not exist)."""
    return {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": revision}


def modified_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: `key` was last written at `revision` (0: the key does not exist)."""
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": revision}


def put(key: str, value: bytes, lease: int | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease is not None:
        request["lease"] = lease
    return {"request_put": request}


def get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def get_prefix(prefix: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}}


def delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def _key_value(raw: dict[str, Any]) -> KeyValue:
    # The gateway omits zero values and sends 64-bit integers as strings.
    return KeyValue(
        key=base64.b64decode(raw["key"]).decode(),
        value=base64.b64decode(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _grpc_code(exc: etcd_errors.Etcd3Exception) -> int | None:
    try:
        code = json.loads(exc.detail_text or "").get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _describe(exc: etcd_errors.Etcd3Exception) -> str:
    """etcd's own error message, or the root cause of a transport error, in one short line."""
    text = exc.detail_text or ""
    try:
        message = json.loads(text).get("error")
    except (ValueError, AttributeError):
        message = None
    if message:
        return str(message)[:200]
    if isinstance(exc, etcd_errors.ConnectionTimeoutError):
        return "no answer in time"
    # requests nests the cause several exceptions deep; the OS or TLS reason is what helps.
    cause = re.search(r"\[Errno -?\d+\] ([^\"')]+)|\[SSL[^\]]*\] ([^\"']+)"
                      r"|Caused by \w+\(\w+\(-?\d+, '([^']+)'", text)
    if cause:
        return next(group for group in cause.groups() if group).strip()
    return (text or type(exc).__name__)[:200]


def gateway_client(endpoint: str, *, timeout: float, ca_file: str | None = None,
                   cert_file: str | None = None, key_file: str | None = None
                   ) -> etcd3gw.Etcd3Client:
    """A client of one endpoint's gateway, configured by its arguments alone.

    requests lets REQUESTS_CA_BUNDLE override a session's own CA file and
    routes through proxies from the environment: neither may silently change
    how the controller reaches its coordination store, so the environment is ignored.
    """
    scheme, host, port = _parse_endpoint(endpoint)
    session = requests.Session()
    session.trust_env = False
    if ca_file is not None:
        session.verify = ca_file
    if cert_file is not None and key_file is not None:
        session.cert = (cert_file, key_file)
    return etcd3gw.Etcd3Client(host=host, port=port, protocol=scheme, timeout=timeout,
                               session=session, api_path=API_PATH)


def _parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"fleet.toml: coordination.etcd.endpoints: expected http://host:port or "
                        f"https://host:port, got {endpoint!r}")
    try:
        port = parts.port or 2379
    except ValueError:
        raise UserError(f"fleet.toml: coordination.etcd.endpoints: bad port in {endpoint!r}"
                        ) from None
    return parts.scheme, parts.hostname, port


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, timeout: float,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, user: str | None = None,
                 password: SecretStr | None = None) -> None:
        if (user is None) != (password is None):
            raise UserError("fleet.toml: coordination.etcd: user and password_env go together; "
                            "set both or neither")
        if (cert_file is None) != (key_file is None):
            raise UserError("fleet.toml: coordination.etcd: cert_file and key_file go together; "
                            "set both or neither")
        self.endpoints = list(endpoints)
        self._clients = [gateway_client(endpoint, timeout=timeout, ca_file=ca_file,
                                        cert_file=cert_file, key_file=key_file)
                         for endpoint in self.endpoints]
        self._user = user
        self._password = password
        self._authenticated: set[int] = set()
        self._current = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------- calls

    def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> TxnResult:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        answer = self._call(lambda client: client.transaction(body))
        ranges = tuple(
            tuple(_key_value(kv) for kv in response["response_range"].get("kvs", []))
            for response in answer.get("responses", []) if "response_range" in response
        )
        return TxnResult(succeeded=bool(answer.get("succeeded", False)),
                         revision=int(answer["header"]["revision"]), ranges=ranges)

    def grant(self, ttl: int) -> int:
        return self._call(lambda client: client.lease(ttl).id)

    def keepalive(self, lease: int) -> int:
        """The lease's renewed TTL in seconds; 0 or less when it already expired."""
        return self._call(lambda client: Lease(lease, client).refresh())

    def revoke(self, lease: int) -> None:
        try:
            self._call(lambda client: Lease(lease, client).revoke())
        except EtcdRefused as exc:
            if exc.code != _NOT_FOUND:
                raise

    def close(self) -> None:
        for client in self._clients:
            client.session.close()

    # ---------------------------------------------------------- endpoints

    def _authenticate(self, index: int) -> None:
        if self._user is None or self._password is None:
            return
        client = self._clients[index]
        # etcd checks a token before the call: an expired one would fail this too.
        client.session.headers.pop("Authorization", None)
        answer = client.post(client.get_url("/auth/authenticate"), json={
            "name": self._user, "password": self._password.get_secret_value()})
        client.session.headers["Authorization"] = str(answer["token"])
        self._authenticated.add(index)

    def _on(self, index: int, call: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        if index not in self._authenticated:
            self._authenticate(index)
        try:
            return call(self._clients[index])
        except etcd_errors.Etcd3Exception as exc:
            if _grpc_code(exc) != _UNAUTHENTICATED or self._user is None:
                raise
        self._authenticate(index)  # the token expired; a fresh one is worth one more try
        return call(self._clients[index])

    def _call(self, call: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        with self._lock:
            first = self._current
        failures: list[str] = []
        for step in range(len(self._clients)):
            index = (first + step) % len(self._clients)
            try:
                result = self._on(index, call)
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError,
                    etcd_errors.InternalServerError) as exc:
                failures.append(f"{self.endpoints[index]}: {_describe(exc)}")
                continue
            except etcd_errors.Etcd3Exception as exc:
                raise EtcdRefused(f"etcd at {self.endpoints[index]} refused: {_describe(exc)}",
                                  _grpc_code(exc)) from exc
            with self._lock:
                self._current = index
            return result
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(failures))
