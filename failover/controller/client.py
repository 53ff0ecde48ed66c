"""Signed requests to controllers from the CLI (status, history, operator verbs).

`tls` verifies controllers at `https://` URLs: `Topology.api_client_tls()`, the CAs of
`fleet.toml`'s `api.ca_file` (None: the system's store, for `http://` fleets)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from failover.coordination.signing import sign
from failover.errors import FailoverError, UserError


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class ControllerUnreachable(Exception):
    pass


def call(base_url: str, method: str, path: str, *, key: bytes | None, body: Any = None,
         query: str = "", timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> Reply:
    """One request; `key` signs it. ControllerUnreachable when nothing answers in time."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers.update(sign(key, method, path, data))
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"controller URL {base_url!r} is not http(s)")
    url = base_url.rstrip("/") + path + (f"?{query}" if query else "")
    request = urllib.request.Request(url, data=data if method != "GET" else None,  # noqa: S310 - scheme checked above
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:  # noqa: S310
            return Reply(response.status, json.loads(response.read() or b"null"))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return Reply(exc.code, json.loads(raw))
        except ValueError:
            return Reply(exc.code, {"error": raw.decode(errors="replace")[:300]})
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControllerUnreachable(f"{base_url}: {reason}") from exc


Statuses = dict[str, dict[str, Any] | str]


def fleet_statuses(controllers: dict[str, str], timeout: float = 2.0, *,
                   tls: ssl.SSLContext | None = None) -> Statuses:
    """Every controller's /v1/status by region, or why it did not answer."""
    out: Statuses = {}
    for region, url in controllers.items():
        try:
            reply = call(url, "GET", "/v1/status", key=None, timeout=timeout, tls=tls)
            out[region] = reply.body if isinstance(reply.body, dict) else f"HTTP {reply.status}"
        except ControllerUnreachable as exc:
            out[region] = f"unreachable: {exc}"
    return out


def acting_view(statuses: Statuses) -> dict[str, Any] | None:
    """The view of the controller the fleet names executor, else any with a quorum, else any."""
    views = [s for s in statuses.values() if isinstance(s, dict)]
    for view in views:
        if view.get("executor") == view.get("region") and view.get("has_quorum"):
            return view
    return next((v for v in views if v.get("has_quorum")), views[0] if views else None)


class NoControllerAnswered(FailoverError):
    pass


def require_an_answer(statuses: Statuses) -> None:
    """NoControllerAnswered, saying why of each, unless one of `statuses` is an answer."""
    if not any(isinstance(status, dict) for status in statuses.values()):
        raise NoControllerAnswered("no controller answered (" + "; ".join(
            f"{name}: {status}" for name, status in statuses.items()) + ")")


def send_operator(controllers: dict[str, str], key: Callable[[], bytes], verb: str,
                  body: dict[str, Any], *, timeout: float = 300.0,
                  tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """Ask the acting controller (the fleet's executor) to run an operator's verb, so that
    the fleet's epochs and journal apply and the controllers never fight the operator.
    The answer carries `via`: the region whose controller ran it. `key` is read only once
    a controller answered: with none running, that is what the operator needs to hear."""
    statuses = fleet_statuses(controllers, tls=tls)
    require_an_answer(statuses)
    secret = key()
    acting = acting_view(statuses)
    order = sorted(controllers, key=lambda name: name != (acting or {}).get("region"))
    errors = []
    for name in order:
        try:
            reply = call(controllers[name], "POST", f"/v1/operator/{verb}", key=secret,
                         body=body, timeout=timeout, tls=tls)
        except ControllerUnreachable as exc:
            errors.append(f"{name}: {exc}")
            continue
        result = reply.body if isinstance(reply.body, dict) else {}
        if reply.status == 200:
            return {**result, "via": name}
        if reply.status == 400:
            raise UserError(str(result.get("error")), result.get("problems"))
        raise FailoverError(f"{name} refused: {result.get('error', reply.status)}")
    raise NoControllerAnswered("no controller answered (" + "; ".join(errors) + ")")
