"""The controller process's settings: `FAILOVER_*` environment variables or a `failover.env`
file, overridden by command-line flags. Everything about the fleet is in the topology."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from failover.errors import UserError


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAILOVER_", env_file="failover.env",
                                      extra="ignore")

    topology: Path | None = None
    region: str | None = None
    state_dir: Path = Path("/var/lib/failover")
    log_level: str = "INFO"


def controller_settings(**flags: object) -> ControllerSettings:
    """Settings from the environment and failover.env, with the flags given (not None) on top."""
    try:
        return ControllerSettings.model_validate(
            {k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"FAILOVER_{str(error['loc'][0]).upper()}: {error['msg']}") from None
