"""The receiver loader: the contract the decide engine and the sinks share."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agents.sinks.channels import specs
from streams.model.receivers import (
    MissingSecretError,
    RateLimit,
    Receiver,
    builtin_receivers,
    load_receivers,
    resolve_secrets,
)
from streams.model.yamlfile import ConfigError

GOOD = """\
receivers:
  - name: infra-slack
    channel: slack
    settings: {mention_groups: [S0123ABC]}
    secrets: {webhook_url: OPSLOOP_SLACK_INFRA_WEBHOOK}
    rate_limit: {per_second: 2}
  - name: pagerduty-primary
    channel: pagerduty
    settings: {url: "https://events.pagerduty.com/v2/enqueue"}
    secrets: {routing_key: OPSLOOP_PD_PRIMARY_ROUTING_KEY}
  - name: oncall-email
    channel: email
    settings: {host: smtp.example.com, port: 587, security: starttls, from: "opsloop <opsloop@example.com>", to: [oncall@example.com]}
    secrets: {username: OPSLOOP_SMTP_USER, password: OPSLOOP_SMTP_PASSWORD}
  - name: hooks
    channel: webhook
    settings: {url: "https://hooks.example.com/opsloop"}
    secrets: {signing_key: OPSLOOP_HOOK_KEY}
    rate_limit: none
    concurrency: 8
  - name: log
    channel: log
routes: {ignored: by the receiver loader}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_the_contract_shape_with_channel_default_rates(tmp_path: Path) -> None:
    receivers = load_receivers(write(tmp_path, GOOD), channels=specs())
    assert list(receivers) == ["infra-slack", "pagerduty-primary", "oncall-email", "hooks", "log"]
    slack = receivers["infra-slack"]
    assert slack == Receiver(
        name="infra-slack",
        channel="slack",
        settings={"mention_groups": ["S0123ABC"]},
        secret_env={"webhook_url": "OPSLOOP_SLACK_INFRA_WEBHOOK"},
        rate_limit=RateLimit(2, 1.0),
    )
    assert receivers["pagerduty-primary"].rate_limit == RateLimit(120, 60.0)  # the channel default
    assert receivers["hooks"].rate_limit is None
    assert receivers["hooks"].concurrency == 8 and receivers["log"].concurrency is None  # None: the setting's
    assert receivers["log"].secret_env == {}
    assert builtin_receivers()["log"].channel == "log"


def test_resolve_secrets_reads_env_at_call_time_and_names_the_missing_variable(tmp_path: Path) -> None:
    receiver = load_receivers(write(tmp_path, GOOD), channels=specs())["oncall-email"]
    env = {"OPSLOOP_SMTP_USER": "ops", "OPSLOOP_SMTP_PASSWORD": "hunter2-secret"}
    assert resolve_secrets(receiver, env) == {"username": "ops", "password": "hunter2-secret"}
    with pytest.raises(MissingSecretError) as err:
        resolve_secrets(receiver, {"OPSLOOP_SMTP_USER": "ops-user-value"})
    assert err.value.env_var == "OPSLOOP_SMTP_PASSWORD"
    assert "OPSLOOP_SMTP_PASSWORD" in str(err.value) and "ops-user-value" not in str(err.value)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        (
            "receivers:\n  - name: a\n    channel: slak\n    secrets: {webhook_url: X}\n",
            3,
            "unknown channel 'slak' (did you mean 'slack'?)",
        ),
        (
            "receivers:\n  - name: a\n    channel: log\n  - name: a\n    channel: log\n",
            4,
            "duplicate receiver name 'a'",
        ),
        ("receivers:\n  - name: a\n    channel: slack\n", 3, "channel slack needs webhook_url under secrets"),
        ("receivers:\n  - name: a\n    channel: [slack]\n", 3, "unknown channel \"['slack']\""),  # a TypeError before
        (
            "receivers:\n  - name: a\n    channel: pagerduty\n    settings:\n      routing_key: abc\n",
            5,
            "routing_key is a secret",
        ),
        (
            "receivers:\n  - name: a\n    channel: pagerduty\n    secrets: {routing_key: 'abc def'}\n",
            4,
            "must be the NAME of an environment variable",
        ),
        (
            "receivers:\n  - name: a\n    channel: email\n    settings: {host: h, from: a@b, to: [x@y], port: 99999}\n",
            4,
            "port must be a TCP port number",
        ),
        (
            "receivers:\n  - name: a\n    channel: email\n    settings: {host: h, from: a@b}\n",
            3,
            "channel email needs to under",
        ),
        (
            "receivers:\n  - name: a\n    channel: log\n    rate_limt: {per_second: 1}\n",
            4,
            "unknown field 'rate_limit'"[:20],
        ),
        ("receivers:\n  - name: a\n    channel: log\n    rate_limit: {per_day: 1}\n", 4, "rate_limit must be one of"),
        ("receivers:\n  - name: a\n    channel: log\n    concurrency: 0\n", 4, "concurrency must be a whole number"),
        ("receivers:\n  - name: a\n    channel: log\n    concurrency: '8'\n", 4, "from 1 to 64, got '8'"),
        ("receivers:\n  - name: a\n    channel: log\n    concurrency: 65\n", 4, "concurrency must be a whole number"),
        (
            "receivers:\n  - name: a\n    channel: slack\n    secrets: {webhook_url: X}\n    settings: {mention: [S1]}\n",
            5,
            "unknown setting 'mention'",
        ),
    ],
)
def test_errors_carry_file_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_receivers(path, channels=specs())
    assert err.value.line == line, str(err.value)
    assert reason in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")
