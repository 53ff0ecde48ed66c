"""JSON-lines logging for the controller, with the plan id and epoch on every line of a plan."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

plan_context: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "plan_context", default=None)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "region": self.region,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(plan_context.get() or {})
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(region: str, level: LogLevel = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(region))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # APScheduler logs every job run at INFO: one line a probe would drown the log.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@contextmanager
def in_plan(plan_id: str, epoch: int, service: str) -> Iterator[None]:
    """Every log line inside carries the plan id, epoch and service."""
    token = plan_context.set({"plan_id": plan_id, "epoch": epoch, "service": service})
    try:
        yield
    finally:
        plan_context.reset(token)
