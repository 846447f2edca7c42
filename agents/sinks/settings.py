"""Sink settings (env prefix ``OPSLOOP_SINK_``), read when the sinks start, never at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings import Settings


class SinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSLOOP_SINK_", frozen=True, extra="ignore")

    # Receivers: the routing file the decide engine reads (default: routing.yaml in the
    # runbooks dir). A missing file leaves only the built-in `log` receiver.
    receivers_file: Path | None = None
    # Ledger database; empty: DATABASE_URL when set, else SQLite in the data dir.
    database_url: SecretStr = SecretStr("")

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_attempts: int = 6
    max_total_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # After a timeout with unknown outcome, a non-idempotent sink waits this long, then tries once more.
    ambiguous_pause_s: float = 5.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    breaker_cooldown_max_s: float = 300.0
    # Effects waiting for one destination; past it, new ones are dead-lettered (the others keep flowing).
    backlog_per_destination: int = 1000
    # Effects read from outbox and not yet settled, over all destinations (back-pressure on the reader).
    max_in_flight: int = 5000
    # Runbook remediations are called only when this is true AND the step says dry_run: false;
    # otherwise they are logged and receipted as dry_run (agents/sinks/channels/remediate.py).
    remediation_enabled: bool = False

    @classmethod
    def from_env(cls, **overrides: object) -> "SinkSettings":
        return cls(**overrides)

    def receivers_path(self, settings: Settings) -> Path:
        return self.receivers_file or Path(settings.runbooks_dir) / "routing.yaml"

    def ledger_url(self, settings: Settings) -> str:
        if self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        if "database_url" in settings.model_fields_set:
            return settings.database_url.get_secret_value()
        return f"sqlite:///{(Path(settings.data_dir) / 'ledger.db').resolve()}"

    @property
    def lease_ms(self) -> int:
        """How long a claim is honoured: longer than any one delivery can take."""
        return int((self.max_total_s + self.ambiguous_pause_s + self.read_timeout_s + 30.0) * 1000)
