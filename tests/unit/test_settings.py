"""Settings come from the environment; secrets never print."""

from __future__ import annotations

from streams.settings import Settings


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
