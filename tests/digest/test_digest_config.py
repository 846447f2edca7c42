"""The digest configuration (runbooks/digest.yaml): defaults, overrides, and broken files
refused with file:line and the reason, by the loader, by `opsloop check` and by a worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.sinks.channels import specs
from streams.cli.main import main
from streams.model.digest_config import DigestConfig, load_digest_config
from streams.model.runbooks import load_runbook_set
from streams.model.yamlfile import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "digest.yaml"
    path.write_text(text)
    return path


def test_defaults_overrides_and_the_shipped_file(tmp_path):
    assert load_runbook_set(ROOT / "runbooks", channels=specs()).digest.for_org("anyone").hour == 8
    config = load_digest_config(
        write(
            tmp_path,
            (
                "default: {hour: 7, timezone: Europe/Berlin, enabled: false}\n"
                "digests:\n"
                "  - {org: acme, timezone: America/New_York}\n"
                "  - {org: sandbox, enabled: false, hour: 23}\n"
            ),
        )
    )
    acme = config.for_org("acme")
    assert (acme.enabled, acme.hour, acme.timezone) == (True, 7, "America/New_York")  # listed: on; hour inherited
    assert not config.enabled("sandbox") and not config.enabled("other")  # the default is off
    assert config.any_enabled
    assert DigestConfig().for_org("x").enabled and DigestConfig().for_org("x").timezone == "UTC"  # no file: 08:00 UTC
    assert load_digest_config(write(tmp_path, "# nothing\n")) == DigestConfig(path=str(tmp_path / "digest.yaml"))


@pytest.mark.parametrize(
    "text,line,reason",
    [
        ("default: {hour: 24}\n", 1, "default: hour must be an integer from 0 to 23 (local time), got 24"),
        (
            "default:\n  timezone: Mars/Olympus\n",
            2,
            "default: unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Berlin)",
        ),
        ("default:\n  huor: 7\n", 2, "default: unknown field 'huor' (did you mean 'hour'?)"),
        ("default: 8\n", 1, "default: expected a mapping"),
        (
            "digests:\n  - {org: acme, hour: 9}\n  - {org: acme, hour: 10}\n",
            3,
            "digest for org 'acme': listed twice (first on line 2)",
        ),
        ("digests:\n  - {hour: 9}\n", 2, "digests[0]: org is required"),
        ("digests:\n  - {org: 'a:b', hour: 9}\n", 2, "digests[0]: org: 'a:b' contains ':', which separates"),
        ("digests:\n  - org: acme\n    timezone: CEST\n", 3, "digest for org 'acme': unknown time zone 'CEST'"),
        # a region's folder of the zone database (IsADirectoryError) and a name no file can have (OSError)
        ("default: {timezone: America}\n", 1, "default: unknown time zone 'America'"),
        ("default: {timezone: " + "x" * 300 + "}\n", 1, "default: unknown time zone 'xxxxxxxxxx"),
        (
            "digests:\n  - org: acme\n    hour: '08:00'\n",
            3,
            "hour must be an integer from 0 to 23 (local time), got '08:00'",
        ),
        ("digests:\n  - org: acme\n    enabled: yes please\n", 3, "enabled must be true or false"),
        ("digests:\n  - acme\n", 1, "digests[0]: expected a mapping"),
        ("digests: {org: acme}\n", 1, "digests: expected a list"),
        ("digest:\n  - {org: acme}\n", 1, "digest file: unknown field 'digest' (did you mean 'digests'?)"),
        ("default: {hour: 8\n", 2, "invalid YAML"),
    ],
)
def test_broken_file_names_file_line_and_reason(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_digest_config(path)
    assert (err.value.path, err.value.line) == (str(path), line), str(err.value)
    assert reason in err.value.reason, str(err.value)


@pytest.fixture
def runbooks_copy(tmp_path: Path) -> Path:
    target = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", target)
    return target


def test_check_and_worker_refuse_a_broken_digest_file(runbooks_copy, capsys):
    from agents.worker import build_worker
    from streams.settings import Settings

    (runbooks_copy / "digest.yaml").write_text("default:\n  hour: 8\n  timezone: Europe/Berlinn\n")
    assert main(["check", "--dir", str(runbooks_copy)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"opsloop: {runbooks_copy / 'digest.yaml'}:3: default: unknown time zone 'Europe/Berlinn' "
        "(use an IANA name like Europe/Berlin)"
    )
    with pytest.raises(ConfigError, match=r"digest.yaml:3: "):
        build_worker(Settings.from_env(runbooks_dir=runbooks_copy, topic_prefix="never."))
