"""Process settings, read from the environment when asked, never at import time.

pydantic-settings gives typed parsing with clear errors and ``SecretStr`` values
that print as ``**********``; secrets (SASL password, a DATABASE_URL with a
password in it) therefore cannot leak through ``repr``, logs or error messages.
All variables are prefixed ``OPSLOOP_`` except the two every tool knows:
``KAFKA_BOOTSTRAP`` and ``DATABASE_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSLOOP_", frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "OPSLOOP_KAFKA_BOOTSTRAP")
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_client_id: str = "opsloop"

    # SQL (audit store, delivery ledger). SQLite is the embedded default.
    database_url: SecretStr = Field(
        SecretStr("sqlite:///opsloop.db"), validation_alias=AliasChoices("DATABASE_URL", "OPSLOOP_DATABASE_URL")
    )

    # The faust app
    app_id: str = "opsloop"
    # Physical topic = prefix + the name in topics.yaml ("prod." on a shared cluster;
    # a fresh prefix per test keeps tests on one broker apart).
    topic_prefix: str = ""
    data_dir: Path = Path(".opsloop")
    topics_file: Path = ROOT / "topics.yaml"
    schemas_dir: Path = ROOT / "schemas"
    runbooks_dir: Path = ROOT / "runbooks"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    web_enabled: bool = True
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"

    # Consumer-group timing. faust's defaults (60 s session timeout) make a restarted
    # worker wait up to a minute to rejoin; production keeps them, tests lower them.
    broker_session_timeout_s: float = 60.0
    broker_heartbeat_interval_s: float = 3.0
    broker_rebalance_timeout_s: float = 60.0
    commit_interval_s: float = 2.8

    # The decide agent's micro-batch: take up to N events, waiting at most this long.
    decide_batch_max: int = 500
    decide_batch_within_s: float = 0.01

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for the log redaction filter."""
        values = [self.kafka_sasl_password.get_secret_value(), self.database_url.get_secret_value()]
        url = self.database_url.get_secret_value()
        if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
            values.append(url.split("@", 1)[0].split("//", 1)[-1].split(":", 1)[1])  # the password alone
        return [v for v in values if v]

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        """Read the process environment now (not at import), then apply explicit overrides."""
        return cls(**overrides)

    def kafka_client_config(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        config: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
            "client_id": self.kafka_client_id,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            config["ssl_context"] = create_ssl_context(
                cafile=self.kafka_ssl_cafile or None,
                certfile=self.kafka_ssl_certfile or None,
                keyfile=self.kafka_ssl_keyfile or None,
            )
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return config

    def faust_broker_credentials(self) -> object | None:
        """faust's credentials object for SASL/SSL clusters (MSK, Confluent Cloud), or None."""
        import faust

        ssl_context = None
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            ssl_context = create_ssl_context(
                cafile=self.kafka_ssl_cafile or None,
                certfile=self.kafka_ssl_certfile or None,
                keyfile=self.kafka_ssl_keyfile or None,
            )
        if self.kafka_security_protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.kafka_sasl_password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=ssl_context,
            )
        if ssl_context is not None:
            return faust.SSLCredentials(ssl_context)
        return None
