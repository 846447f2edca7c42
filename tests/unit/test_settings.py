"""Settings come from the environment; secrets never print."""

from __future__ import annotations

import pytest

from streams.errors import EXIT_INVALID
from streams.settings import IngestSettings, Settings, SettingsError


def test_environment_is_read_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "b1:9092,b2:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://opsloop:s3cr3t-pw@db/opsloop")
    monkeypatch.setenv("OPSLOOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_PASSWORD", "hunter2-secret")
    settings = Settings.from_env()
    assert settings.kafka_bootstrap == "b1:9092,b2:9092"
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "hunter2-secret" not in text and "s3cr3t-pw" not in text
    config = settings.kafka_client_config()
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "hunter2-secret"  # handed to the client only
    assert config["ssl_context"] is not None


def test_faust_gets_sasl_credentials_over_ssl(monkeypatch):
    monkeypatch.setenv("OPSLOOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_PASSWORD", "pw")
    creds = Settings.from_env().faust_broker_credentials()
    assert type(creds).__name__ == "SASLCredentials"
    assert Settings.from_env(kafka_security_protocol="PLAINTEXT").faust_broker_credentials() is None


def test_defaults_are_the_embedded_ones(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings.from_env()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.database_url.get_secret_value().startswith("sqlite:///")


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("OPSLOOP_DECIDE_BATCH_MAX", "hunter2-not-a-number", "a valid integer"),
        ("OPSLOOP_TIMER_TICK_S", "0", "greater than 0"),
        ("OPSLOOP_TIMER_CLOCK", "hunter2-clock", "'event', 'wall' or 'hybrid'"),
        ("OPSLOOP_SINK_MAX_ATTEMPTS", "-1", "greater than 0"),
        ("OPSLOOP_INGEST_PORT", "70000", "less than or equal to 65535"),
        ("OPSLOOP_WEB_PORT", "-1", "greater than or equal to 0"),
        ("OPSLOOP_ACK_TTL_S", "soon", "a valid integer"),
        ("OPSLOOP_INGEST_RESOLVE_TIMEOUT_S", "1e30", "less than or equal to 3153600000"),  # past an Avro long
        ("OPSLOOP_INGEST_RESOLVE_TIMEOUT_S", "0", "greater than 0"),
    ],
)
def test_a_bad_variable_is_named_with_its_reason_and_never_echoed(monkeypatch, variable, value, reason):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert message.startswith(f"invalid settings: {variable}: Input should be {reason}"), message
    assert value not in message.removeprefix(
        f"invalid settings: {variable}: Input should be {reason}"
    )  # may be a secret
    assert caught.value.exit_code == EXIT_INVALID


def test_every_bad_variable_of_the_root_is_named_at_once(monkeypatch):
    monkeypatch.setenv("OPSLOOP_DECIDE_BATCH_MAX", "0")
    monkeypatch.setenv("OPSLOOP_COMMIT_INTERVAL_S", "never")
    with pytest.raises(SettingsError, match=r"OPSLOOP_COMMIT_INTERVAL_S: .*; OPSLOOP_DECIDE_BATCH_MAX: "):
        Settings.from_env()


def test_every_bad_variable_of_every_section_is_named_at_once(monkeypatch):
    """README: one entry per variable. A section's error hid every other's (a tester saw only
    OPSLOOP_ACK_TTL_S of two bad variables), and the root's."""
    monkeypatch.setenv("OPSLOOP_INGEST_MAX_BODY_BYTES", "abc")
    monkeypatch.setenv("OPSLOOP_ACK_TTL_S", "-5")
    monkeypatch.setenv("OPSLOOP_TIMER_TICK_S", "0")
    monkeypatch.setenv("OPSLOOP_DECIDE_BATCH_MAX", "0")
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    named = [entry.split(":")[0] for entry in str(raised.value).removeprefix("invalid settings: ").split("; ")]
    assert sorted(named) == [
        "OPSLOOP_ACK_TTL_S",
        "OPSLOOP_DECIDE_BATCH_MAX",
        "OPSLOOP_INGEST_MAX_BODY_BYTES",
        "OPSLOOP_TIMER_TICK_S",
    ]
    assert "abc" not in str(raised.value) and "-5" not in str(raised.value)


@pytest.mark.parametrize(
    "good", ["h1", "h1:9092", "b1:9092, b2:9093", "10.0.0.7:29092", "[::1]:9092", "[fe80::1]", "kafka-0.kafka.svc:9092"]
)
def test_bootstrap_servers_aiokafka_reads_are_taken(monkeypatch, good):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", good)
    assert Settings.from_env().kafka_bootstrap == good


@pytest.mark.parametrize("bad", [":::", "::1", "a:b", "h:0", "h:65536", "h:9092,", "", "h :1", "h:09092"])
def test_a_bootstrap_typo_is_refused_at_start_naming_the_entry(monkeypatch, bad):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", bad)
    with pytest.raises(SettingsError, match=r"^invalid settings: KAFKA_BOOTSTRAP: '.*' is not host:port"):
        Settings.from_env()


def test_a_section_variable_is_named_with_its_own_prefix(monkeypatch):
    monkeypatch.setenv("OPSLOOP_INGEST_MAX_BODY_BYTES", "0")
    with pytest.raises(SettingsError, match=r"^invalid settings: OPSLOOP_INGEST_MAX_BODY_BYTES: "):
        IngestSettings.from_env()
