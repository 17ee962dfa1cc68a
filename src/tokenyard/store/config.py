"""The `database` settings section: which SQL database the store uses."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SQLITE_FILE_NAME = "tokenyard.db"


class DatabaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL: sqlite:///FILE, postgresql+psycopg://... or mysql+pymysql://...; "
        "default: a SQLite file under the data directory (TOKENYARD_HOME)",
    )
    pool_size: int = Field(default=5, ge=1, description="connections kept open per process (server databases)")

    def resolved_url(self, home: Path) -> str:
        """The configured URL, or the default SQLite file under `home`."""
        if self.url:
            return self.url
        return f"sqlite:///{home.expanduser() / SQLITE_FILE_NAME}"
