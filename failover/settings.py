"""Process settings: `FAILOVER_*` environment variables, or a `failover.env` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAILOVER_", env_file="failover.env",
                                      extra="ignore")

    topology: Path | None = None
    region: str | None = None
    state_dir: Path = Path("/var/lib/failover")
    log_level: str = "INFO"
    fleet_key: SecretStr | None = None
    pg_bindir: Path | None = None
