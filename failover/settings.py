"""The controller process's settings: `FAILOVER_*` environment variables or a `failover.env`
file, overridden by command-line flags. Everything about the fleet is in the topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from failover.errors import UserError
from failover.logs import LogLevel


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAILOVER_", env_file="failover.env",
                                      extra="ignore")

    topology: Path | None = None
    region: str | None = None
    state_dir: Path = Path("/var/lib/failover")
    # Any case: `info` is INFO, as the logging module itself would read it.
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"


def controller_settings(**flags: object) -> ControllerSettings:
    """Settings from the environment and failover.env, with the flags given (not None) on top.

    A bad value is named where it came from: the flag if one was given, else the variable."""
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return ControllerSettings.model_validate(given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0])
            source = (f"--{field.replace('_', '-')}" if field in given
                      else f"FAILOVER_{field.upper()} (environment or failover.env)")
            problems.append(f"{source}: {error['input']!r} is not valid: {error['msg']}")
        raise UserError(problems[0], problems) from None
