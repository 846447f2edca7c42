"""docker-compose.yml is valid Compose and everything it names is in the repo.

No Docker engine runs here, so the file is checked against the Compose
Specification's JSON schema (vendored in tests/deploy/compose-spec/, Apache-2.0) instead of `docker
compose config`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).resolve().parent / "compose-spec" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_against_the_compose_specification(compose):
    schema = json.loads(SPEC.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)  # the spec declares draft-07; raises with the failing path


def test_required_services_are_there(compose):
    services = compose["services"]
    required = ("kafka", "topics", "postgres", "ingest", "worker", "projector", "api", "console")
    required += ("prometheus", "alertmanager", "grafana")
    for name in (*required, "mailpit"):
        assert name in services, name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["projector"]["command"] == ["projector", "--metrics-host", "0.0.0.0", "--metrics-port", "8083"]
    assert services["projector"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["projector"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    for name in ("ingest", "worker"):  # workers sign action links, ingest verifies them at this URL
        env = services[name]["environment"]
        assert "/ingest/ack" in env["OPSLOOP_ACK_BASE_URL"]
        assert "${OPSLOOP_ACK_SECRET" in env["OPSLOOP_ACK_SECRET"]
    for name in ("kafka", "postgres", "ingest", "worker", "api", "console", "prometheus"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["api"]["command"][0] == "api" and services["console"]["command"][0] == "ui"
    for name in ("api", "console"):  # in a container the server must listen beyond loopback
        assert services[name]["command"][services[name]["command"].index("--host") + 1] == "0.0.0.0"


def test_every_built_or_mounted_file_is_in_the_repo(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build.get("context", ".")
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: dockerfile"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repo"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (.+?) \./", dockerfile, flags=re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repo"


def test_no_secret_is_inline_and_every_variable_is_documented(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    referenced |= {s["environment"] for s in compose.get("secrets", {}).values() if "environment" in s}
    assert referenced <= documented, referenced - documented
    for service in compose["services"].values():
        env = service.get("environment") or {}
        for key, value in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key) and not key.endswith("_FILE"):
                assert isinstance(value, str) and "${" in value, f"{key} looks like an inline secret"


def test_every_secret_variable_a_receiver_names_is_in_env_example():
    from agents.sinks.channels import specs
    from streams.model.receivers import load_receivers

    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    named = {
        var
        for receiver in load_receivers(ROOT / "runbooks" / "routing.yaml", channels=specs()).values()
        for var in receiver.secret_env.values()
    }
    assert named and named <= documented, named - documented


# -- every command is an opsloop subcommand, every variable one opsloop reads ----------------


def opsloop_services(compose: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("opsloop") or "build" in service
    }


def opsloop_subcommands() -> set[str]:
    import argparse

    from streams.cli.main import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def settings_variables() -> set[str]:
    """Every variable streams.settings.Settings and its sections read: env_prefix + field, or the aliases."""
    from pydantic import AliasChoices
    from pydantic_settings import BaseSettings

    from streams.settings import Settings

    names: set[str] = set()

    def walk(model: type[BaseSettings]) -> None:
        prefix = model.model_config.get("env_prefix", "")
        for field_name, info in model.model_fields.items():
            section = info.annotation
            if isinstance(section, type) and issubclass(section, BaseSettings):
                walk(section)
            elif isinstance(info.validation_alias, AliasChoices):
                names.update(str(choice).upper() for choice in info.validation_alias.choices)
            else:
                names.add(f"{prefix}{field_name}".upper())

    walk(Settings)
    # The read API's and the console's credentials are read where those servers start (their auth modules)
    from streams.api import auth as api_auth
    from streams.ui import auth as ui_auth

    names |= {api_auth.TOKENS_VARIABLE, api_auth.ORGS_VARIABLE}
    names |= {ui_auth.UI_TOKENS_VARIABLE, ui_auth.UI_ORGS_VARIABLE, ui_auth.SECRET_VARIABLE}
    names |= {ui_auth.PROXY_HEADER_VARIABLE, ui_auth.PROXY_ADDRESSES_VARIABLE, ui_auth.PROXY_ORGS_VARIABLE}
    return names


def variable_is_read(name: str, known: set[str], receiver_secrets: set[str]) -> bool:
    """Read by the settings, or one of the families read by name (README "Ingest"; routing.yaml's secrets)."""
    families = ("OPSLOOP_INGEST_TOKEN_", "OPSLOOP_INGEST_WEBHOOK_SECRET_")
    return name in known or name in receiver_secrets or any(name.startswith(f) and len(name) > len(f) for f in families)


def receiver_secret_variables() -> set[str]:
    from agents.sinks.channels import specs
    from streams.model.receivers import load_receivers

    return {
        var
        for receiver in load_receivers(ROOT / "runbooks" / "routing.yaml", channels=specs()).values()
        for var in receiver.secret_env.values()
    }


def test_the_settings_walk_knows_what_it_should_and_refuses_a_typo():
    known, secrets = settings_variables(), receiver_secret_variables()
    for name in (
        "KAFKA_BOOTSTRAP",
        "DATABASE_URL",
        "OPSLOOP_LOG_LEVEL",
        "OPSLOOP_ACK_SECRET",
        "OPSLOOP_SINK_MAX_ATTEMPTS",
    ):
        assert variable_is_read(name, known, secrets), name
    assert variable_is_read("OPSLOOP_INGEST_TOKEN_ALERTMANAGER", known, secrets)
    for typo in ("OPSLOOP_ACK_BASEURL", "OPSLOOP_INGEST_TOKEN_", "OPSLOOP_LOGLEVEL", "OPSLOOP_ACK"):
        assert not variable_is_read(typo, known, secrets), typo


def test_every_opsloop_service_runs_a_real_subcommand(compose):
    commands = opsloop_subcommands()
    services = opsloop_services(compose)
    assert {"topics", "ingest", "worker", "projector"} <= set(services)
    for name, service in services.items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: no command (the image has no default)"
        assert command[0] in commands, f"{name}: `opsloop {command[0]}` is not a subcommand ({sorted(commands)})"


def test_every_opsloop_variable_set_is_one_opsloop_reads(compose):
    known, secrets = settings_variables(), receiver_secret_variables()
    watched = re.compile(r"^(OPSLOOP_\w+|KAFKA_BOOTSTRAP|DATABASE_URL)$")
    for name, service in opsloop_services(compose).items():
        for key in service.get("environment") or {}:
            if watched.match(key):
                assert variable_is_read(key, known, secrets), f"{name}: {key} is read by nothing in opsloop"
    # .env.example reaches every service through env_file, commented-out examples included
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*(OPSLOOP_\w+|KAFKA_BOOTSTRAP|DATABASE_URL)=", line)
        if match:
            assert variable_is_read(match.group(1), known, secrets), (
                f".env.example: {match.group(1)} is read by nothing"
            )
