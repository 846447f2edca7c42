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
    for name in ("kafka", "topics", "postgres", "ingest", "worker", "prometheus", "alertmanager", "grafana", "mailpit"):
        assert name in services, name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    for name in ("kafka", "postgres", "ingest", "worker", "prometheus"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


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
