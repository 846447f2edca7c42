"""Features are pure, deterministic and never raise on odd events."""

from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.dataset import generator_url
from classifier.examples import load_examples
from classifier.features import (
    clear_caches,
    event_tokens,
    expr_from_generator_url,
    name_words,
    promql_parts,
    tokens_batch,
)

from .conftest import alert


def test_alert_names_split_into_words():
    assert name_words("HostOutOfMemory") == ["host", "out", "memory"]
    # an error budget is one word (not the money a lone "budget" signals)
    assert name_words("KubeAPIErrorBudgetBurn") == ["kube", "api", "errorbudget", "burn"]
    assert name_words("PodDisruptionBudget error_budget BudgetExceeded") == [
        "pod",
        "disruptionbudget",
        "errorbudget",
        "budget",
        "exceed",
    ]
    # a negation of a healthy word is one word; not inside another word ("cannot", "Known")
    assert name_words("KubeNodeNotReady etcdNoLeader") == ["kube", "node", "notready", "etcd", "noleader"]
    assert name_words("node is not ready; no-leader") == ["node", "notready", "noleader"]
    assert name_words("cannot ready Known leader") == ["cannot", "ready", "known", "leader"]
    assert name_words("HAProxyHighHTTP5xxErrorRate")[-3:] == ["5xx", "error", "rate"]
    assert name_words("TooManyCPUs") == ["too", "many", "cpu"]
    # inflections fold together so rare forms share evidence
    assert name_words("failures failed failing") == ["fail", "fail", "fail"]


def test_metric_names_come_from_the_query_not_labels_or_functions():
    metrics, functions, values = promql_parts(
        'sum by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) / on(instance) node_load1 > 0.8'
    )
    assert metrics == ["node_cpu_seconds_total", "node_load1"]
    assert functions == ["sum", "rate"]
    assert values == ["idle"]
    assert promql_parts('absent(up{job="x"})')[0] == ["up"]
    assert promql_parts("((((") == ([], [], [])


def test_generator_url_round_trips_the_query():
    query = 'rate(http_requests_total{code=~"5.."}[5m]) > 0.05'
    assert expr_from_generator_url(generator_url(query)) == query
    assert expr_from_generator_url("http://prom/graph") == ""


def test_tokens_name_their_source():
    event = alert("HostOutOfMemory", severity="critical", job="node-exporter", instance="10.0.0.1:9100")
    event["payload"] = {"generator_url": generator_url("node_memory_MemAvailable_bytes < 10")}
    tokens = event_tokens(event)
    for expected in (
        "n:memory",
        "w:memory",
        "kn:memory",
        "sev:urgent",
        "m:node_memory_memavailable_bytes",
        "k:telemetry",
    ):
        assert expected in tokens
    assert "lv:10" not in tokens and not any(t.startswith("lv:") and "9100" in t for t in tokens)


def test_features_do_not_mutate_and_are_deterministic():
    events = [e.event for e in load_examples()][:60] + [alert("PostgresqlDown", severity="critical")]
    before = copy.deepcopy(events)
    first = tokens_batch(events)
    clear_caches()  # memo caches must not change results
    second = tokens_batch(events)
    assert first == second
    assert events == before


def test_webhook_bodies_are_read_and_bounded():
    body = {"pull_request": {"title": "Fix disk usage report", "labels": [{"name": "bug"}]}, "action": "opened"}
    event = {
        "kind": "webhook",
        "type": "pr.opened",
        "payload": {"provider": "github", "action": "opened", "body_json": json.dumps(body)},
    }
    tokens = event_tokens(event)
    assert {"n:fix", "n:disk", "prov:github", "t:pr.opened", "bv:name=bug"} <= set(tokens)
    broken = dict(event, payload={"provider": "github", "body_json": "{not json"})
    assert "body:invalid" in event_tokens(broken)
    huge = dict(event, payload={"provider": "github", "body_json": json.dumps({"x": ["y"] * 100_000})})
    assert len(event_tokens(huge)) < 50  # oversized bodies are skipped, not parsed


def test_odd_shapes_do_not_raise():
    assert tokens_batch([None, "x", 3]) == [[], [], []]
    for odd in (
        {},
        {"labels": None, "annotations": "x", "payload": 3},
        {"labels": {1: 2, "severity": 5}},
        {"payload": {"findings": "none", "scan_type": 1}},
        {"type": None, "kind": ["x"]},
    ):
        assert isinstance(event_tokens(odd), list)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    labels=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6),
    annotations=st.dictionaries(st.sampled_from(["summary", "description", "x"]), st.text(max_size=80), max_size=3),
    body=_json,
    kind=st.sampled_from(["telemetry", "webhook", "scan", "timer", None]),
)
def test_any_event_yields_the_same_tokens_twice(labels, annotations, body, kind):
    event = {
        "kind": kind,
        "type": "alert.firing",
        "labels": labels,
        "annotations": annotations,
        "payload": {"provider": "x", "body_json": json.dumps(body), "generator_url": "g0.expr=" + str(body)},
    }
    assert event_tokens(event) == event_tokens(copy.deepcopy(event))
