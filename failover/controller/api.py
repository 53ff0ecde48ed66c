"""The controller's HTTP API: peers, operators, load balancers and Prometheus.

- `POST /v1/observations` (signed): a peer's exchange; answers with ours.
- `POST /v1/claim` (signed): a peer claims a promotion's epoch (peers mode).
- `GET /v1/status`: what this controller sees and decided, as JSON.
- `GET /v1/journal?since=TS&limit=N` (signed): this controller's journal, for `failover
  history`: the newest `limit` entries (default 5,000) at or after `since`, in time order.
- `POST /v1/operator/<verb>` (signed): an operator's command, run by this controller.
- `GET /healthz`, `GET /metrics`.
- `GET /primary/<service>`, `GET /replica/<service>`: 200 only where this region
  holds that role, so a load balancer can route without DNS (as Patroni does).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from failover.controller.journal import Journal
from failover.controller.metrics import Metrics
from failover.coordination.signing import SignatureRejected, Verifier
from failover.errors import ConflictError, FailoverError, SafetyRefusal, UserError

# A whole journal (up to 100,000 entries) is tens of megabytes of JSON, built in
# the event loop: a reply is bounded, and older entries are asked for with `since`.
JOURNAL_LIMIT = 5_000
JOURNAL_LIMIT_MAX = 100_000

OperatorHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControllerView(Protocol):
    """What the API needs from the controller."""

    region: str
    metrics: Metrics
    journal: Journal

    def status(self) -> dict[str, Any]: ...

    def exchange_payload(self) -> dict[str, Any]: ...

    def ingest_peer(self, payload: Any) -> None: ...

    def promise(self, payload: Any) -> dict[str, Any]:
        """A peer claims a promotion's epoch: promise it or say who holds it."""
        ...

    def local_role(self, service: str) -> str | None:
        """primary, subscriber, or None when unknown (the database is not answering)."""
        ...

    async def operator(self, verb: str, args: dict[str, Any]) -> dict[str, Any]: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def build_app(view: ControllerView, verifier: Verifier) -> web.Application:
    async def verified_body(request: web.Request) -> bytes:
        body = await request.read()
        try:
            verifier.verify(request.method, request.path, dict(request.headers), body)
        except SignatureRejected as exc:
            view.metrics.rejected.labels(reason=exc.reason).inc()
            raise web.HTTPUnauthorized(text=json.dumps({"error": str(exc)}),
                                       content_type="application/json") from None
        return body

    async def observations(request: web.Request) -> web.Response:
        body = await verified_body(request)
        try:
            view.ingest_peer(json.loads(body))
        except ValueError as exc:  # pydantic's ValidationError and JSONDecodeError are ValueErrors
            view.metrics.rejected.labels(reason="malformed").inc()
            return _json({"error": f"malformed exchange: {str(exc)[:300]}"}, status=400)
        return _json(view.exchange_payload())

    async def claim(request: web.Request) -> web.Response:
        body = await verified_body(request)
        try:
            return _json(view.promise(json.loads(body)))
        except ValueError as exc:
            view.metrics.rejected.labels(reason="malformed").inc()
            return _json({"error": f"malformed claim: {str(exc)[:300]}"}, status=400)

    async def status(request: web.Request) -> web.Response:
        return _json(view.status())

    async def journal(request: web.Request) -> web.Response:
        await verified_body(request)
        since_text = request.query.get("since")
        try:
            since = float(since_text) if since_text else None
        except ValueError:
            return _json({"error": "since must be epoch seconds"}, status=400)
        limit_text = request.query.get("limit")
        try:
            limit = int(limit_text) if limit_text else JOURNAL_LIMIT
        except ValueError:
            limit = 0  # refused below, with the out-of-range values
        if not 1 <= limit <= JOURNAL_LIMIT_MAX:
            return _json({"error": f"limit must be an integer from 1 to {JOURNAL_LIMIT_MAX}"},
                         status=400)
        return _json({"source": view.region, "entries": view.journal.entries(since, limit),
                      "limit": limit})

    async def operator(request: web.Request) -> web.Response:
        body = await verified_body(request)
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return _json({"error": f"malformed request: {exc}"}, status=400)
        verb = request.match_info["verb"]
        try:
            result = await view.operator(verb, args)
        except UserError as exc:
            return _json({"error": str(exc), "problems": exc.problems}, status=400)
        except (SafetyRefusal, ConflictError) as exc:
            return _json({"error": str(exc), "refused": True}, status=409)
        except FailoverError as exc:
            return _json({"error": str(exc)}, status=500)
        return _json(result)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=view.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def role_check(wanted: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            role = view.local_role(request.match_info["service"])
            body = {"region": view.region, "service": request.match_info["service"], "role": role}
            return _json(body, status=200 if role == wanted else 503)

        return handler

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.add_routes([
        web.post("/v1/observations", observations),
        web.post("/v1/claim", claim),
        web.get("/v1/status", status),
        web.get("/v1/journal", journal),
        web.post("/v1/operator/{verb}", operator),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/primary/{service}", role_check("primary")),
        web.get("/replica/{service}", role_check("subscriber")),
    ])
    return app
