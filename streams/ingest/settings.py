"""Settings of the ingest process, read from ``OPSLOOP_INGEST_*`` when asked.

Kafka connection settings stay in :class:`streams.settings.Settings` (shared with
the workers); only what is particular to the HTTP front door lives here. Tokens
are ``SecretStr`` so a repr, a log line or a validation error can never print them.
Webhook secrets are not fields: each provider's comes from the variable its name
derives (``OPSLOOP_INGEST_WEBHOOK_SECRET_<NAME>``, :func:`streams.ingest.webhooks.webhook_secrets`),
also as ``SecretStr``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings import ROOT

MIB = 1024 * 1024


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSLOOP_INGEST_", frozen=True, extra="ignore")

    # All interfaces by default: ingest is a network service (every post is authenticated).
    host: str = "0.0.0.0"
    port: int = 8080

    # Bearer tokens of the unsigned endpoints, one per producer: "prometheus=s3cr3t,alertmanager=...".
    # OPSLOOP_INGEST_TOKEN_<NAME>=<token> variables add one producer each (see auth.producer_tokens).
    tokens: SecretStr = SecretStr("")

    # The org of events whose sender does not name one (an `org` label or ?org=).
    default_org: str = "default"
    sessions_file: Path = ROOT / "runbooks" / "sessions.yaml"

    max_body_bytes: int = MIB
    # Events queued to Kafka but not yet acknowledged, across all requests: past this,
    # 429 rather than unbounded memory.
    max_in_flight: int = 20_000
    # How long one post may wait for Kafka's acknowledgement before it is answered 503.
    send_timeout_s: float = 5.0
    # After a failed connection attempt, posts answer 503 at once for this long.
    reconnect_backoff_s: float = 1.0
    retry_after_s: int = 5
    backpressure_retry_after_s: int = 1
    kafka_request_timeout_ms: int = 5000

    # Recently accepted event ids answered "duplicate" without producing again.
    dedupe_capacity: int = 100_000
    dedupe_ttl_s: float = 3600.0

    @classmethod
    def from_env(cls, **overrides: object) -> "IngestSettings":
        return cls(**overrides)
