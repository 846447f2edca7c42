"""Matchers and the route tree, Alertmanager's semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.sinks.channels import specs
from streams.model.matchers import MatcherError, matches_all, parse_matcher
from streams.model.routing import load_routing
from streams.model.yamlfile import ConfigError

RECEIVERS = """
receivers:
  - {name: a, channel: log}
  - {name: b, channel: log}
  - {name: c, channel: log}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(RECEIVERS + text)
    return path


@pytest.mark.parametrize(
    "text,labels,expected",
    [
        ('service="db"', {"service": "db"}, True),
        ("service = db", {"service": "db"}, True),
        ('service!="db"', {"service": "web"}, True),
        ('service!="db"', {}, True),
        ('service=~"db|cache"', {"service": "cache"}, True),
        ('service=~"db"', {"service": "dbproxy"}, False),
        ('service!~"db.*"', {"service": "web"}, True),
        ('team=""', {}, True),
        (r'msg="say \"hi\""', {"msg": 'say "hi"'}, True),
        # RE2's POSIX classes, as Alertmanager reads them (Python's re alone read "[[:alpha:]]+" as "a]")
        ('service=~"[[:alpha:]]+"', {"service": "db"}, True),
        ('service=~"[[:alpha:]]+"', {"service": "db1"}, False),
        ('service=~"[[:alpha:]]+"', {"service": "a]"}, False),
        ('service=~"db-[[:digit:]]{1,3}"', {"service": "db-42"}, True),
        ('service=~"[[:^digit:]]+"', {"service": "db"}, True),
        ('service=~"[[:^digit:]]+"', {"service": "db1"}, False),
        ('service=~"[^[:space:][:punct:]]+"', {"service": "db01"}, True),
        ('service=~"[^[:space:][:punct:]]+"', {"service": "db-01"}, False),
        ('service=~"[]x[:upper:]]+"', {"service": "]xQ"}, True),
        ('service=~"[[:^digit:]x]+"', {"service": "ab"}, True),
        ('service=~"[[:^digit:]x]+"', {"service": "a1"}, False),
        ('service=~"(a+)+b"', {"service": "a" * 50_000}, False),  # RE2: linear, where re backtracked for ages
        (
            r'service=~"\\[[:alpha:]\\]"',
            {"service": "[:alpha:]"},
            False,
        ),  # escaped brackets around a set of ":alph", as RE2 reads it
        (r'service=~"\\[[:alpha:]\\]"', {"service": "[a]"}, True),
    ],
)
def test_matchers(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    "bad",
    [
        "service",
        "1x=a",
        'a=~"("',
        'a="unterminated',
        42,
        'a=~"[[:bogus:]]"',
        'a=~"[[:alpha:]"',
        'a=~"(?=db)d.*"',
        'a=~"(d)\\\\1"',
    ],
)
def test_bad_matchers_are_named(bad):
    with pytest.raises(MatcherError):
        parse_matcher(bad)


def test_first_match_wins_continue_goes_on_and_default_catches(tmp_path):
    r = load_routing(
        write(
            tmp_path,
            """
route:
  receiver: a
  group_wait: 10s
  routes:
    - matchers: ['team="x"']
      receiver: b
      continue: true
      group_wait: 1s
    - matchers: ['team=~"x|y"']
      receiver: c
    - matchers: ['team="y"']
      receiver: a
""",
        ),
        channels=specs(),
    )
    assert r.receivers_for({"team": "x"}) == ["b", "c"]
    assert r.receivers_for({"team": "y"}) == ["c"]
    assert r.receivers_for({"team": "z"}) == ["a"]
    [first, second] = r.match({"team": "x"})
    assert first.timing.group_wait == 1000 and second.timing.group_wait == 10_000  # inherited
    assert first.path == "route.routes[0]"


def test_nested_routes_inherit_receiver_and_timing(tmp_path):
    r = load_routing(
        write(
            tmp_path,
            """
route:
  receiver: a
  repeat_interval: 1h
  routes:
    - matchers: ['kind="scan"']
      receiver: b
      routes:
        - matchers: ['severity="urgent"']
          group_interval: 1m
""",
        ),
        channels=specs(),
    )
    [m] = r.match({"kind": "scan", "severity": "urgent"})
    assert (m.receiver, m.timing.group_interval, m.timing.repeat_interval) == ("b", 60_000, 3_600_000)


@pytest.mark.parametrize(
    "text,line,reason",
    [
        ("route:\n  receiver: nobody\n", 7, "unknown receiver 'nobody'"),
        (
            "route:\n  receiver: a\n  routes:\n    - matchers: ['x=~\"(\"']\n      receiver: b\n",
            9,
            "invalid regular expression",
        ),
        ("route:\n  receiver: a\n  group_wait: soon\n", 8, "not a duration"),
        ("route:\n  receiver: a\n  routes:\n    - matchers: ['severity=\"critical\"']\n", 9, "normalised to 'urgent'"),
        ("route:\n  receiver: a\n  matchers: ['a=\"b\"']\n", 8, "root route must match everything"),
        ("route:\n  receiver: a\n  contineu: true\n", 8, "did you mean 'continue'"),
        ("inhibit_rules:\n  - source_matchers: ['a=\"b\"']\n", 7, "needs both source_matchers and target_matchers"),
    ],
)
def test_routing_errors_name_file_line_and_reason(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_routing(path, channels=specs())
    assert err.value.line == line and reason in err.value.reason
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_matches_all_of_empty_is_true():
    assert matches_all((), {"any": "thing"})


def test_the_starter_routes_send_an_urgent_alert_to_on_call_whatever_its_category():
    """kube-prometheus's PrometheusBadConfig (critical) was classified config_drift and went to the ops
    team's channel only: the category route came before the urgent one. Scans and reviews still go there."""
    from streams.model.routing import match_route, routing_labels
    from tests.decide.helpers import starter_set

    route = starter_set().routing.route

    def receivers(kind: str, category: str, severity: str) -> list[str]:
        labels = routing_labels(
            {"alertname": "PrometheusBadConfig"},
            category=category,
            severity=severity,
            org="acme",
            source="prometheus",
            kind=kind,
            event_type="alert.firing",
        )
        return [m.receiver for m in match_route(route, labels)]

    for category in ("config_drift", "compliance", "cost", "code_review", "availability"):
        assert receivers("telemetry", category, "urgent") == ["oncall-slack"], category
    assert receivers("telemetry", "config_drift", "warning") == ["teams-ops"]
    assert receivers("scan", "config_drift", "urgent") == ["teams-ops"]
    assert receivers("scan", "compliance", "urgent") == ["oncall-email", "teams-ops"]
