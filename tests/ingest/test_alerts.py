"""Prometheus's push and Alertmanager's webhook, parsed: pure functions, no broker."""

from __future__ import annotations

import pytest

from streams.ingest.alerts import alertmanager_events, fingerprint, prometheus_events
from streams.ingest.errors import BadRequest
from streams.ingest.fields import timestamp_ms
from streams.ingest.sessions import load_session_rules
from streams.model.records import derived_id
from streams.settings import Settings

RULES = load_session_rules(Settings.from_env().sessions_path())
NOW = 1_714_557_600_000  # 2024-05-01T10:00:00Z


def prom(alerts, received_at=NOW, org="acme"):
    return prometheus_events(alerts, org=org, received_at=received_at, rules=RULES)


def am(body, received_at=NOW, org="acme"):
    return alertmanager_events(body, org=org, received_at=received_at, rules=RULES)


CPU = {"alertname": "HostHighCpuLoad", "instance": "web-1:9100", "job": "node", "severity": "warning"}


def test_fingerprints_of_recent_label_sets_are_remembered_and_large_ones_are_not():
    """Re-sent alerts skip FNV's byte loop; a producer's large label values cannot fill the memory with them."""
    from streams.ingest import alerts

    alerts._remembered.cache_clear()
    small = {"alertname": "DiskFull", "instance": "db-1:9100"}
    large = {"alertname": "DiskFull", "description": "x" * (alerts.FINGERPRINT_KEPT_UP_TO + 1)}
    for labels in (small, dict(reversed(list(small.items()))), large, large):
        assert fingerprint(labels) == alerts._fnv(tuple(sorted(labels.items())))
    info = alerts._remembered.cache_info()
    assert (info.currsize, info.hits, info.maxsize) == (1, 1, alerts.FINGERPRINTS_KEPT)


def test_fingerprint_is_fnv1a_over_sorted_labels_like_alertmanager():
    assert fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64 offset basis: prometheus/common's empty label set
    assert fingerprint({"b": "2", "a": "1"}) == fingerprint({"a": "1", "b": "2"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    # the separator byte keeps name/value boundaries apart
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})
    assert len(fingerprint(CPU)) == 16


def test_firing_resolved_from_ends_at_relative_to_receive_time():
    future, past = "2024-05-01T10:04:00Z", "2024-05-01T09:59:00Z"
    events = prom(
        [
            {"labels": CPU, "startsAt": "2024-05-01T09:50:00Z", "endsAt": future},
            {"labels": {**CPU, "instance": "web-2:9100"}, "startsAt": "2024-05-01T09:50:00Z"},
            {"labels": {**CPU, "instance": "web-3:9100"}, "startsAt": "2024-05-01T09:50:00Z", "endsAt": past},
        ]
    )
    assert [e["type"] for e in events] == ["alert.firing", "alert.firing", "alert.resolved"]
    assert [e["payload"]["status"] for e in events] == ["firing", "firing", "resolved"]
    starts = timestamp_ms("2024-05-01T09:50:00Z", "x")
    assert events[0]["occurred_at"] == starts  # firing: startsAt
    assert events[2]["occurred_at"] == timestamp_ms(past, "x")  # resolved: endsAt
    assert all(e["received_at"] == NOW and e["kind"] == "telemetry" and e["source"] == "prometheus" for e in events)


def test_a_resend_with_a_moving_ends_at_is_a_new_event_and_a_retry_is_not():
    """A re-send moves the alert's end (decide resolves it there if no re-send comes), so it must reach decide."""
    first = prom([{"labels": CPU, "startsAt": "2024-05-01T09:50:00Z", "endsAt": "2024-05-01T10:04:00Z"}])[0]
    retry = prom(
        [{"labels": CPU, "startsAt": "2024-05-01T09:50:00Z", "endsAt": "2024-05-01T10:04:00Z"}], received_at=NOW + 5_000
    )[0]
    resend = prom(
        [{"labels": CPU, "startsAt": "2024-05-01T09:50:00Z", "endsAt": "2024-05-01T10:06:00Z"}],
        received_at=NOW + 120_000,
    )[0]
    resolved = prom(
        [{"labels": CPU, "startsAt": "2024-05-01T09:50:00Z", "endsAt": "2024-05-01T10:01:00Z"}],
        received_at=NOW + 120_000,
    )[0]
    assert first["event_id"] == retry["event_id"] != resend["event_id"]
    assert resend["payload"]["ends_at"] == timestamp_ms("2024-05-01T10:06:00Z", "x")
    assert resolved["event_id"] != first["event_id"]
    assert first["event_id"] == derived_id(
        "alert",
        "acme",
        fingerprint(CPU),
        str(timestamp_ms("2024-05-01T09:50:00Z", "x")),
        "firing",
        str(timestamp_ms("2024-05-01T10:04:00Z", "x")),
    )
    assert first["session_key"] == resolved["session_key"] == "acme:alert:HostHighCpuLoad:web-1:9100"


def test_session_keys_follow_the_default_rules():
    events = prom(
        [
            {"labels": {**CPU, "service": "checkout"}, "startsAt": "2024-05-01T09:50:00Z"},
            {"labels": CPU, "startsAt": "2024-05-01T09:50:00Z"},
            {"labels": {"job": "node", "org": "globex"}, "startsAt": "2024-05-01T09:50:00Z"},
        ]
    )
    assert events[0]["session_key"] == "acme:alert:HostHighCpuLoad:checkout"  # service wins over instance
    assert events[1]["session_key"] == "acme:alert:HostHighCpuLoad:web-1:9100"
    assert [e["session_rule"] for e in events[:2]] == ["alert-group", "alert-group"]
    # no alertname: the label set's fingerprint, and the org label overrides the default
    assert events[2]["org"] == "globex"
    assert events[2]["session_key"] == f"globex:alert:{fingerprint({'job': 'node', 'org': 'globex'})}"
    assert events[2]["session_rule"] == "alert-fingerprint"


AM_BODY = {
    "version": "4",
    "groupKey": '{}:{alertname="HostHighCpuLoad"}',
    "truncatedAlerts": 0,
    "status": "resolved",
    "receiver": "opsloop",
    "groupLabels": {"alertname": "HostHighCpuLoad"},
    "commonLabels": {"alertname": "HostHighCpuLoad"},
    "commonAnnotations": {},
    "externalURL": "http://am:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": CPU,
            "annotations": {"summary": "CPU high"},
            "startsAt": "2024-05-01T09:50:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom/graph",
            "fingerprint": "0123456789abcdef",
        },
        {
            "status": "resolved",
            "labels": {**CPU, "instance": "web-2:9100"},
            "annotations": {},
            "startsAt": "2024-05-01T09:40:00Z",
            "endsAt": "2024-05-01T09:55:00Z",
            "generatorURL": "",
            "fingerprint": "fedcba9876543210",
        },
    ],
}


def test_alertmanager_v4_each_alert_one_event_firing_and_resolved():
    events = am(AM_BODY)
    assert [e["type"] for e in events] == ["alert.firing", "alert.resolved"]
    firing, resolved = events
    assert firing["payload"]["fingerprint"] == "0123456789abcdef"  # Alertmanager's own, as sent
    assert firing["payload"]["ends_at"] is None  # Go's zero time
    assert firing["payload"]["starts_at"] == timestamp_ms("2024-05-01T09:50:00.123Z", "x")
    assert firing["payload"]["generator_url"] == "http://prom/graph"
    assert firing["annotations"] == {"summary": "CPU high"}
    assert resolved["occurred_at"] == timestamp_ms("2024-05-01T09:55:00Z", "x")
    assert all(e["source"] == "alertmanager" for e in events)


def test_an_alertmanager_resend_with_new_annotations_is_a_new_event_and_the_same_text_a_duplicate():
    """etcd's mixin through Alertmanager: a firing alert sent again reading "fsync durations are 0.7s" had the id
    of its first send (fingerprint, startsAt, status), was answered duplicate and dropped, and the next message
    said 1.5s; Prometheus's push moves endsAt, so its re-sends were new events already."""
    first = AM_BODY["alerts"][0]
    again = {**first, "annotations": {"summary": "CPU high", "description": "load 0.7"}}
    ids = [am({**AM_BODY, "alerts": [alert]})[0]["event_id"] for alert in (first, again, dict(again), first)]
    assert ids[0] != ids[1] and ids[1] == ids[2] and ids[3] == ids[0]
    resolved = AM_BODY["alerts"][1]
    changed = {**resolved, "annotations": {"summary": "other words"}}
    assert am({**AM_BODY, "alerts": [resolved]})[0]["event_id"] == am({**AM_BODY, "alerts": [changed]})[0]["event_id"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({**AM_BODY, "version": "3"}, "version"),
        ({**AM_BODY, "alerts": []}, "alerts"),
        ({**AM_BODY, "alerts": {}}, "alerts"),
        ({**AM_BODY, "alerts": [{**AM_BODY["alerts"][0], "status": "pending"}]}, "alerts[0].status"),
        (
            {**AM_BODY, "alerts": [{k: v for k, v in AM_BODY["alerts"][0].items() if k != "startsAt"}]},
            "alerts[0].startsAt",
        ),
        ({**AM_BODY, "alerts": [{**AM_BODY["alerts"][1], "endsAt": "0001-01-01T00:00:00Z"}]}, "alerts[0].endsAt"),
        (
            {**AM_BODY, "alerts": [AM_BODY["alerts"][0], {**AM_BODY["alerts"][0], "labels": {"a": 1}}]},
            "alerts[1].labels",
        ),
        ({**AM_BODY, "alerts": [{**AM_BODY["alerts"][0], "startsAt": 1714557600}]}, "alerts[0].startsAt"),
        ([AM_BODY], "body"),
    ],
)
def test_alertmanager_bad_bodies_name_the_field(body, field):
    with pytest.raises(BadRequest) as err:
        am(body)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "alerts, field, reason",
    [
        ([], "alerts", "empty"),
        ({"labels": CPU}, "alerts", "expected an array"),
        ([{"labels": {"a": 1}}], "alerts[0].labels", "expected a mapping of strings"),
        ([{"labels": {}}], "alerts[0].labels", "empty"),
        ([{"annotations": {}}], "alerts[0].labels", "required"),
        ([{"labels": CPU, "startsAt": "yesterday"}], "alerts[0].startsAt", "not an RFC 3339 timestamp"),
        ([{"labels": CPU, "endsAt": "2024-05-01T10:00:00"}], "alerts[0].endsAt", "without a time zone"),
        (
            [{"labels": CPU, "startsAt": "2024-05-01T10:00:00Z", "endsAt": "2024-05-01T09:59:59Z"}],
            "alerts[0].endsAt",
            "before startsAt",
        ),
        ([{"labels": CPU, "generatorURL": 5}], "alerts[0].generatorURL", "expected a string"),
        (["x"], "alerts[0]", "expected an object"),
    ],
)
def test_prometheus_bad_bodies_name_the_field(alerts, field, reason):
    with pytest.raises(BadRequest) as err:
        prom(alerts)
    assert err.value.field == field and reason in err.value.reason


def test_timestamps_nanoseconds_offsets_and_the_zero_time():
    assert timestamp_ms("2024-05-01T10:00:00.999999999Z", "t") == NOW + 999
    assert timestamp_ms("2024-05-01T12:00:00+02:00", "t") == NOW
    assert timestamp_ms("0001-01-01T00:00:00Z", "t") is None
    assert timestamp_ms(None, "t") is None
    assert timestamp_ms(NOW, "t", allow_millis=True) == NOW
    with pytest.raises(BadRequest, match="^t: required"):
        timestamp_ms("", "t", required=True)


@pytest.mark.parametrize("starts_at", ["2024-05-01T10:10:00Z", "9999-12-31T23:59:59Z"])
def test_an_alert_from_a_clock_ahead_is_timed_at_its_arrival_and_its_group_wait_runs_from_there(starts_at):
    """A startsAt ahead of ingest's clock (a sender's clock ten minutes ahead; a hostile year 9999) used to be the
    event's time: decide never moves a session's clock back and the wall clock fires its timers, so the
    alert's group wait, and every later timer of its session, waited until the wall clock reached it (tried on
    ``opsloop dev``: accepted, never notified). Now it is timed at its arrival; the sender's time is kept."""
    from streams.core.decide import Context
    from streams.ingest.pipeline import SENT_AT_ANNOTATION, not_after_arrival
    from tests.decide.helpers import URGENT_DOWN, Sim, starter_set

    [event] = prom([{"labels": CPU, "startsAt": starts_at}])
    sent = timestamp_ms(starts_at, "startsAt")
    assert event["occurred_at"] == sent and event["payload"]["status"] == "firing"
    not_after_arrival(event)
    assert event["occurred_at"] == NOW and event["received_at"] == NOW
    assert event["annotations"][SENT_AT_ANNOTATION] == str(sent) and event["payload"]["starts_at"] == sent

    decided = Sim(Context(verdict=URGENT_DOWN, runbooks=starter_set())).feed(event)
    [timer] = [e["timer"] for e in decided.effects if e["type"] == "schedule_timer"]
    assert decided.record["decided_at"] == NOW and timer["fire_at"] == NOW + 30_000


def test_an_alert_pushed_without_an_end_resolves_after_the_resolve_timeout_unless_sent_again():
    """``amtool alert add`` and scripts push alerts without endsAt; Alertmanager ends such an alert after its
    resolve_timeout. Here it stayed firing, and escalating, until resolved by hand (tried with amtool on
    ``opsloop dev``: still firing 6 minutes on). Prometheus's own alerts, which carry an end, are unchanged."""
    from streams.core.decide import Context
    from tests.decide.helpers import URGENT_DOWN, Sim, starter_set

    def pushed(alerts, received_at=NOW):
        return prometheus_events(alerts, org="acme", received_at=received_at, rules=RULES, resolve_timeout_ms=300_000)

    [first] = pushed([{"labels": CPU}])
    assert first["payload"]["ends_at"] == NOW + 300_000 and first["payload"]["status"] == "firing"
    # a copy (same startsAt) posted within a tenth of the timeout is the same event (ingest answers it
    # duplicate, as E2E's feed and a retried post need) ...
    since = {"labels": CPU, "startsAt": "2024-05-01T09:55:00Z"}
    [original], [copy] = pushed([since], received_at=NOW + 1_000), pushed([since], received_at=NOW + 29_000)
    assert copy["event_id"] == original["event_id"] and copy["payload"]["ends_at"] == NOW + 330_000
    # ... one after it moves the end on
    [later] = pushed([since], received_at=NOW + 31_000)
    assert later["event_id"] != original["event_id"] and later["payload"]["ends_at"] == NOW + 360_000
    [prometheus] = pushed([{"labels": CPU, "startsAt": "2024-05-01T09:59:00Z", "endsAt": "2024-05-01T10:04:00Z"}])
    assert prometheus["payload"]["ends_at"] == NOW + 240_000  # as sent
    assert prom([{"labels": CPU}])[0]["payload"]["ends_at"] is None  # a caller that gives no timeout (route rules)

    sim = Sim(Context(verdict=URGENT_DOWN, runbooks=starter_set()))
    sim.feed(first)
    [again] = pushed([{"labels": CPU}], received_at=NOW + 240_000)  # sent again within the timeout: ends later
    assert again["event_id"] != first["event_id"]
    sim.feed(again)
    sim.advance(NOW + 300_000 + 60_000)
    assert not sim.notifications("resolve")  # the first end passed; the re-send moved it
    sim.advance(NOW + 240_000 + 300_000 + 1)
    assert sim.notifications("resolve"), "not resolved after the resolve timeout"


def test_an_event_time_at_or_before_arrival_is_the_senders():
    from streams.ingest.pipeline import SENT_AT_ANNOTATION, not_after_arrival

    for starts_at in ("2024-05-01T09:00:00Z", "2024-05-01T10:00:00Z"):
        [event] = prom([{"labels": CPU, "startsAt": starts_at}])
        not_after_arrival(event)
        assert event["occurred_at"] == timestamp_ms(starts_at, "startsAt")
        assert SENT_AT_ANNOTATION not in event["annotations"]


def test_a_session_key_made_from_a_long_label_is_bounded_and_still_one_per_label_set():
    """A label value may hold 4,096 characters; a key made from a 600-character service was a 400 naming a
    session_key the sender never sent (the alert lost). Now: its head, '~', and a hash of all of it."""
    from streams.ingest.pipeline import check_bounds
    from streams.ingest.sessions import SESSION_KEY_MAX

    long_a, long_b = "s" * 600, "s" * 599 + "t"  # the same head, different values
    [a] = prom([{"labels": {**CPU, "service": long_a}}])
    [a_again] = prom([{"labels": {**CPU, "service": long_a}, "annotations": {"summary": "moved"}}])
    [b] = prom([{"labels": {**CPU, "service": long_b}}])
    check_bounds(a, "alerts[0]")  # no 400
    assert len(a["session_key"]) == SESSION_KEY_MAX and a["session_key"].startswith("acme:alert:HostHighCpuLoad:sss")
    assert a["session_key"] == a_again["session_key"] != b["session_key"]
    [short] = prom([{"labels": {**CPU, "service": "api"}}])
    assert short["session_key"] == "acme:alert:HostHighCpuLoad:api"  # a key within the bound is as before


def test_a_long_annotation_is_cut_with_a_marker_not_refused():
    """A 400 for one alert's 5,000-character description made Prometheus drop every alert of its post."""
    from streams.ingest.fields import MAX_LABEL_VALUE, clip_annotations
    from streams.ingest.pipeline import check_bounds

    [event] = prom([{"labels": CPU, "annotations": {"description": "d" * 5000, "summary": "short"}}])
    event["annotations"] = clip_annotations(event["annotations"])  # what Ingest.finish does for every event
    check_bounds(event, "alerts[0]")  # no 400
    description = event["annotations"]["description"]
    assert len(description) == MAX_LABEL_VALUE and description.endswith(" … (cut from 5000 characters)")
    assert event["annotations"]["summary"] == "short"
    same = {"summary": "short"}
    assert clip_annotations(same) is same  # nothing to cut: untouched


def test_grafanas_webhook_is_read_as_alertmanagers_with_its_panel_link():
    """Grafana alerting's webhook contact point posts Alertmanager's alerts in an envelope of its own (version "1",
    orgId; the shape of Grafana's documented example). It was a 400 ("expected version 4")."""
    body = {
        "receiver": "opsloop",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
                "annotations": {"description": "The system has high memory usage", "summary": "zone us-1"},
                "startsAt": "2024-05-01T11:51:03.157076+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example.org/alerting/1afz29v7z/edit",
                "fingerprint": "c6eadffa33fcdf37",
                "silenceURL": "https://grafana.example.org/alerting/silence/new?matchers=alertname%3DT2",
                "dashboardURL": "https://grafana.example.org/d/mem",
                "panelURL": "https://grafana.example.org/d/mem?viewPanel=2",
                "values": {"B": 44.23943737541908, "C": 1},
                "valueString": "[ var='B' labels={} value=44.2 ]",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
                "annotations": {"dashboard_url": "https://grafana.example.org/d/own"},
                "startsAt": "2024-05-01T09:50:00Z",
                "endsAt": "2024-05-01T09:58:00Z",
                "dashboardURL": "",
                "panelURL": "",
            },
        ],
        "groupLabels": {"team": "blue"},
        "commonLabels": {"team": "blue"},
        "externalURL": "https://grafana.example.org/",
        "version": "1",
        "groupKey": '{}:{team="blue"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] (blue)",
        "state": "alerting",
        "message": "**Firing** ...",
    }
    mem, cpu = am(body)
    assert (mem["source"], mem["type"], cpu["source"], cpu["type"]) == (
        "grafana",
        "alert.firing",
        "grafana",
        "alert.resolved",
    )
    assert mem["occurred_at"] == timestamp_ms("2024-05-01T09:51:03.157Z", "t")  # the +02:00 offset read
    assert mem["annotations"]["dashboard_url"] == "https://grafana.example.org/d/mem?viewPanel=2"
    assert cpu["annotations"]["dashboard_url"] == "https://grafana.example.org/d/own"  # the alert's own wins
    with pytest.raises(BadRequest, match='expected "4" .* or "1" with orgId'):
        am({**body, "orgId": None, "version": "2"})
    no_org = {k: v for k, v in body.items() if k != "orgId"}
    with pytest.raises(BadRequest, match="version"):
        am(no_org)
