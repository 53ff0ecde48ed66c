"""A stand-in controller for the HTTP API: a journal and metrics, nothing else."""

from __future__ import annotations

from typing import Any

from failover.controller.journal import Journal
from failover.controller.metrics import Metrics


class View:
    def __init__(self, journal: Journal, metrics: Metrics | None = None) -> None:
        self.region = "us-east-1"
        self.metrics = metrics or Metrics(self.region)
        self.journal = journal

    def status(self) -> dict[str, Any]:
        return {}

    def exchange_payload(self) -> dict[str, Any]:
        return {}

    def ingest_peer(self, payload: Any) -> None:
        pass

    def local_role(self, service: str) -> str | None:
        return None

    async def operator(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        return {}
