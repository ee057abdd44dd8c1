"""Settings shared by every service; each service extends the base class."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "loyalty-dev-secret-change-me-in-production"


class LoyaltySettings(BaseSettings):
    """Environment of the platform (all optional, see CONTRACT.md §1)."""

    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore")

    database_url: str | None = None
    kafka_bootstrap: str | None = None
    home: Path = Path(".loyalty")
    jwt_secret: str = Field(default=DEV_JWT_SECRET, min_length=32)
    jwt_public_key: str | None = None
    points_port: int = Field(default=8001, ge=1, le=65535)
    redemption_port: int = Field(default=8002, ge=1, le=65535)
    lottery_port: int = Field(default=8003, ge=1, le=65535)
    points_url: str | None = None
    business_timezone: str = "Asia/Shanghai"
    log_level: str = "INFO"

    def endpoints_file(self) -> Path:
        return self.home / "endpoints.json"

    def resolved_database_url(self) -> str:
        """The configured DSN, else the one `loyalty up` recorded for its embedded Postgres."""
        if self.database_url:
            return self.database_url
        return self._recorded("database_url", "LOYALTY_DATABASE_URL")

    def resolved_kafka_bootstrap(self) -> str:
        """The configured broker, else the one `loyalty up` recorded for its embedded broker."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return self._recorded("kafka_bootstrap", "LOYALTY_KAFKA_BOOTSTRAP")

    def _recorded(self, key: str, variable: str) -> str:
        path = self.endpoints_file()
        try:
            value = json.loads(path.read_text())[key]
        except (OSError, ValueError, KeyError):
            raise ConfigurationError(
                f"{variable} is not set and no embedded system is running "
                f"(no {path}). Start one with `loyalty up`, or set {variable}."
            ) from None
        return str(value)


class ConfigurationError(RuntimeError):
    """The environment does not say where the database or broker is."""
