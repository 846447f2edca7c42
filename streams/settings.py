"""Process settings: one root :class:`Settings`, read from the environment once, where a command starts.

pydantic-settings gives typed parsing with clear errors and ``SecretStr`` values
that print as ``**********``; secrets (SASL password, a DATABASE_URL with a
password in it, tokens, signing keys) therefore cannot leak through ``repr``, logs
or error messages. All variables are prefixed ``OPSLOOP_`` except the two every
tool knows: ``KAFKA_BOOTSTRAP`` and ``DATABASE_URL``.

The root holds the process-wide settings and one section per area, each with its own
variable prefix: ``timers`` (``OPSLOOP_TIMER_*``), ``ack`` (``OPSLOOP_ACK_*``),
``sinks`` (``OPSLOOP_SINK_*``), ``ingest`` (``OPSLOOP_INGEST_*``). A section is read
when the root is built (``Settings.from_env()``), and the built object is handed to
whatever needs it; nothing reads the environment later or at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.credentials import too_short
from streams.errors import InvalidInputError

ROOT = Path(__file__).resolve().parent.parent

MIB = 1024 * 1024
ClockMode = Literal["event", "wall", "hybrid"]
# host, host:port, [IPv6]:port; no empty entries, a port of digits not starting with 0
_BOOTSTRAP_ENTRY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\],]+)(?::(?P<port>[1-9][0-9]{0,4}))?")
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port


def port_number(text: str) -> int:
    """``--port``'s type: a port (0: any free one), so a typo is argparse's one-line error, not bind()'s traceback."""
    import argparse

    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


class SettingsError(InvalidInputError):
    """An environment variable that does not parse. The message names each variable and why; it never
    repeats the value, which may be a secret (a token, a password in a URL)."""


def settings_error(*excs: ValidationError) -> SettingsError:
    """pydantic's errors (of one or more sections), one entry per variable, under the names a user sets
    (``OPSLOOP_TIMER_TICK_S``)."""
    lines = []
    for exc in excs:
        model = _SECTIONS.get(exc.title, Settings)
        for err in exc.errors(include_input=False, include_url=False):
            reason = err["msg"].removeprefix("Value error, ")
            lines.append(f"{_variable(model, err['loc'])}: {reason}")
    return SettingsError("invalid settings: " + "; ".join(lines))


def _variable(model: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable a field is read from (pydantic names an aliased field by the alias it read)."""
    prefix = str(model.model_config.get("env_prefix", ""))
    if not loc:
        return prefix.rstrip("_")
    field = str(loc[0])
    info = model.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return " or ".join(str(choice) for choice in alias.choices)
    return field if info is None else prefix + field.upper()


class TimerSettings(BaseSettings):
    """The ticker's and the scheduler's clock (``OPSLOOP_TIMER_*``; see streams/core/timers.py)."""

    model_config = SettingsConfigDict(env_prefix="OPSLOOP_TIMER_", frozen=True, extra="ignore")

    clock: ClockMode = "hybrid"
    tick_s: PositiveFloat = 0.5
    idle_s: PositiveFloat = 2.0


class AckSettings(BaseSettings):
    """Acknowledge links: ``OPSLOOP_ACK_SECRET`` (HMAC key), ``OPSLOOP_ACK_BASE_URL`` (ingest's ack endpoint), TTL."""

    model_config = SettingsConfigDict(env_prefix="OPSLOOP_ACK_", frozen=True, extra="ignore")

    secret: SecretStr = SecretStr("")
    base_url: str = ""
    ttl_s: PositiveInt = 24 * 3600

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        """A short key can be found from one link it signed (streams.credentials)."""
        if why := too_short(value.get_secret_value()):
            raise ValueError(why)
        return value


class SinkSettings(BaseSettings):
    """The sinks (``OPSLOOP_SINK_*``): delivery timeouts, retries, breaker, backlog, the ledger."""

    model_config = SettingsConfigDict(env_prefix="OPSLOOP_SINK_", frozen=True, extra="ignore")

    # Receivers: the routing file the decide engine reads (default: routing.yaml in the
    # runbooks dir). A missing file leaves only the built-in `log` receiver.
    receivers_file: Path | None = None
    # Ledger database; empty: DATABASE_URL when set, else SQLite in the data dir.
    database_url: SecretStr = SecretStr("")
    # A SQLite ledger is a file on one host: a worker refuses to start with one unless this
    # says it is the only worker (agents/sink.py check_ledger; README "Sinks: delivering once").
    single_node: bool = False

    connect_timeout_s: PositiveFloat = 5.0
    read_timeout_s: PositiveFloat = 10.0
    max_attempts: PositiveInt = 6
    max_total_s: PositiveFloat = 120.0
    backoff_base_s: NonNegativeFloat = 0.5
    backoff_max_s: NonNegativeFloat = 30.0
    # After a timeout with unknown outcome, a non-idempotent sink waits this long, then tries once more.
    ambiguous_pause_s: NonNegativeFloat = 5.0
    breaker_threshold: PositiveInt = 5
    breaker_cooldown_s: NonNegativeFloat = 30.0
    breaker_cooldown_max_s: NonNegativeFloat = 300.0
    # Effects waiting for one destination in memory; past it, new ones spill to the delivery ledger (durable: their
    # offsets may be committed) and are taken back in order as the destination drains (agents/sinks/dispatch.py).
    backlog_per_destination: PositiveInt = 1000
    # Effects read from outbox and not yet settled, over all destinations (back-pressure on the reader).
    max_in_flight: PositiveInt = 5000
    # Deliveries to one destination at once (its lanes; one session's effects always take the same lane, in
    # order). A receiver's rate limit still applies across them. Each lane can leave one delivery of unknown
    # outcome when the worker is killed (sent, not yet completed in the ledger), which the next owner sends
    # again: 1 keeps that to one per destination per kill (the fault harness's bound); raise it for receivers
    # that deduplicate by the Idempotency-Key / dedup_key, for throughput.
    concurrency_per_destination: PositiveInt = 1
    # Effects a lane of an idempotent sink (webhook, PagerDuty) claims in one ledger batch before sending them
    # in order; above 1 a kill can leave that many sent-but-not-completed, re-sent with the same key.
    claim_ahead: PositiveInt = 1
    # Runbook remediations are called only when this is true AND the step says dry_run: false;
    # otherwise they are logged and receipted as dry_run (agents/sinks/channels/remediate.py).
    remediation_enabled: bool = False

    # A worker beats its ledger-owner row this often; one silent for owner_timeout_s is dead, and its
    # unfinished claims go at once to the partition's owner in a newer group generation (agents/sinks/ledger.py).
    owner_heartbeat_s: PositiveFloat = 2.0
    owner_timeout_s: PositiveFloat = 10.0

    @property
    def lease_ms(self) -> int:
        """How long a claim is honoured: longer than any one delivery can take."""
        return int((self.max_total_s + self.ambiguous_pause_s + self.read_timeout_s + 30.0) * 1000)


class IngestSettings(BaseSettings):
    """The HTTP front door (``OPSLOOP_INGEST_*``); Kafka connection settings are the root's."""

    model_config = SettingsConfigDict(env_prefix="OPSLOOP_INGEST_", frozen=True, extra="ignore")

    # All interfaces by default: ingest is a network service (every post is authenticated).
    host: str = "0.0.0.0"
    port: Port = 8080

    # Bearer tokens of the unsigned endpoints, one per producer: "prometheus=s3cr3t,alertmanager=...".
    # OPSLOOP_INGEST_TOKEN_<NAME>=<token> variables add one producer each (see auth.producer_tokens).
    tokens: SecretStr = SecretStr("")
    # What each producer may write (orgs, kinds, types, control events; see streams/ingest/scopes.py):
    # a YAML file (default ingest-scopes.yaml in the runbooks dir) and/or the same YAML inline.
    scopes_file: Path | None = None
    scopes: str = ""
    # Each signed-webhook provider's HMAC secret is OPSLOOP_INGEST_WEBHOOK_SECRET_<NAME>, read when
    # ingest starts (streams.ingest.webhooks.webhook_secrets): a provider is one entry, no field here.
    # Slack app's signing secret: enables POST /ingest/slack/interactivity (buttons in messages).
    slack_signing_secret: SecretStr = SecretStr("")

    # The org of events whose sender does not name one (an `org` label or ?org=).
    default_org: str = "default"
    # Session-key rules; empty: sessions.yaml in the runbooks dir (OPSLOOP_RUNBOOKS_DIR).
    sessions_file: Path | None = None

    max_body_bytes: PositiveInt = MIB
    # A request body must keep coming: each read waits at most read_timeout_s, the whole body body_timeout_s (408).
    read_timeout_s: PositiveFloat = 10.0
    body_timeout_s: PositiveFloat = 30.0
    # Request line / one header line, and the number of headers (aiohttp's parser refuses more with a 400).
    max_header_bytes: PositiveInt = 8190
    max_headers: PositiveInt = 64
    # An alert pushed to /api/v2/alerts without endsAt ends this long after it arrived, unless sent again
    # (Alertmanager's resolve_timeout; Prometheus always sends an end).
    resolve_timeout_s: Annotated[float, Field(gt=0, le=36_500 * 86_400)] = 300.0  # at most 100 years, as durations
    # Signed-webhook replay memory: a body seen before under a new delivery id is refused (409) for this long.
    webhook_replay_window_s: NonNegativeFloat = 24 * 3600.0
    # At most this many signatures in one header (PagerDuty sends two while a secret is rotated).
    max_signatures: PositiveInt = 4
    # Events queued to Kafka but not yet acknowledged, across all requests: past this,
    # 429 rather than unbounded memory.
    max_in_flight: PositiveInt = 20_000
    # How long one post may wait for Kafka's acknowledgement before it is answered 503.
    send_timeout_s: PositiveFloat = 5.0
    # After a failed connection attempt, posts answer 503 at once for this long.
    reconnect_backoff_s: NonNegativeFloat = 1.0
    retry_after_s: NonNegativeInt = 5
    backpressure_retry_after_s: NonNegativeInt = 1
    kafka_request_timeout_ms: PositiveInt = 5000

    # Recently accepted event ids answered "duplicate" without producing again.
    dedupe_capacity: NonNegativeInt = 100_000
    dedupe_ttl_s: NonNegativeFloat = 3600.0

    @classmethod
    def from_env(cls, **overrides: object) -> IngestSettings:
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise settings_error(exc) from None


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
    web_port: Port = 6066
    web_host: str = "127.0.0.1"
    web_enabled: bool = True
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"

    # Consumer-group timing. faust's defaults (60 s session timeout) make a restarted
    # worker wait up to a minute to rejoin; production keeps them, tests lower them.
    broker_session_timeout_s: PositiveFloat = 60.0
    broker_heartbeat_interval_s: PositiveFloat = 3.0
    broker_rebalance_timeout_s: PositiveFloat = 60.0
    commit_interval_s: PositiveFloat = 2.8

    # The decide agent's batch (streams/kafka/batches.py): what arrived while the previous
    # batch was handled, up to N events; under load batches grow by themselves. A batch
    # smaller than N may wait this long for more first (0: it is handled at once; a wait
    # makes batches larger and cheaper at a steady low rate, and adds that much latency).
    decide_batch_max: PositiveInt = 500
    decide_batch_within_s: NonNegativeFloat = 0.0

    # Sections, each read from its own prefix when the root is built.
    timers: TimerSettings = Field(default_factory=TimerSettings)
    ack: AckSettings = Field(default_factory=AckSettings)
    sinks: SinkSettings = Field(default_factory=SinkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)

    def receivers_path(self) -> Path:
        return self.sinks.receivers_file or Path(self.runbooks_dir) / "routing.yaml"

    def sessions_path(self) -> Path:
        return self.ingest.sessions_file or Path(self.runbooks_dir) / "sessions.yaml"

    def ledger_url(self) -> str:
        """The delivery ledger's database: OPSLOOP_SINK_DATABASE_URL, else DATABASE_URL, else SQLite in the data dir."""
        if self.sinks.database_url.get_secret_value():
            return self.sinks.database_url.get_secret_value()
        if "database_url" in self.model_fields_set:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(Path(self.data_dir) / 'ledger.db').resolve()}"

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for the log redaction filter."""
        values = [
            self.kafka_sasl_password.get_secret_value(),
            self.database_url.get_secret_value(),
            self.sinks.database_url.get_secret_value(),
            self.ack.secret.get_secret_value(),
            self.ingest.slack_signing_secret.get_secret_value(),
        ]
        url = self.database_url.get_secret_value()
        if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
            values.append(url.split("@", 1)[0].split("//", 1)[-1].split(":", 1)[1])  # the password alone
        return [v for v in values if v]

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read the process environment now (not at import), then apply explicit overrides.

        Raises :class:`SettingsError` (exit code 1 on the command line) naming each variable that does not parse,
        in every section: each section is read on its own first, or the first section's error hid the others'."""
        errors: list[ValidationError] = []
        sections: dict[str, Any] = {}
        for name, section in SECTION_FIELDS.items():
            if name not in overrides:
                try:
                    sections[name] = section()
                except ValidationError as exc:
                    errors.append(exc)
        if not errors:
            try:
                return cls(**sections, **overrides)
            except ValidationError as exc:
                raise settings_error(exc) from None
        defaults: dict[str, Any] = {name: section.model_construct() for name, section in SECTION_FIELDS.items()}
        try:  # a section failed: the root's own variables are named too (read with each section's defaults)
            cls(**{**defaults, **overrides})
        except ValidationError as exc:
            errors.append(exc)
        raise settings_error(*errors) from None

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_servers(cls, value: str) -> str:
        """host[:port][,host[:port]...] as aiokafka reads it, checked here so that a typo is named at start."""
        for entry in (e.strip() for e in value.split(",")):
            match = _BOOTSTRAP_ENTRY.fullmatch(entry)
            if match is None or int(match["port"] or 1) > 65535:
                raise ValueError(
                    f"{entry!r} is not host:port (a comma-separated list; the port 1-65535; an IPv6 address as [addr]:port)"
                )
        return value

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


SECTION_FIELDS: dict[str, type[BaseSettings]] = {
    "timers": TimerSettings,
    "ack": AckSettings,
    "sinks": SinkSettings,
    "ingest": IngestSettings,
}
_SECTIONS: dict[str, type[BaseSettings]] = {
    cls.__name__: cls for cls in (Settings, TimerSettings, AckSettings, SinkSettings, IngestSettings)
}
