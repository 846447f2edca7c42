"""decide() end to end on one session: grouping, escalation, ack, resolve, flapping, scans, PRs, cron."""

from __future__ import annotations

import json
import shutil
from urllib.parse import parse_qs, urlparse

import pytest

from streams.core.acklinks import verify_action_query
from streams.core.decide import Context, Verdict, decide, state_bytes
from streams.kafka.codec import default_codec
from streams.model.silences import silence_from_json
from tests.decide.helpers import (
    MIN,
    SESSION,
    T0,
    URGENT_DOWN,
    WARN_CPU,
    WARN_DOWN,
    Sim,
    alert,
    sample,
    scan,
    starter_set,
    webhook,
)


@pytest.fixture(scope="module")
def rset():
    return starter_set()


@pytest.fixture
def ctx(rset):
    return Context(
        verdict=URGENT_DOWN, runbooks=rset, ack_base_url="https://opsloop.example.com/ack", ack_secret="s3cret"
    )


def receivers(effects):
    return [(e["notify"]["receiver"], e["notify"]["action"]) for e in effects if e["type"] == "notify"]


def test_first_alert_waits_for_group_wait_with_a_timer_effect(ctx):
    sim = Sim(ctx)
    d = sim.feed(alert(at=T0))
    assert d.record["outcome"] == "grouped"
    [effect] = d.effects
    assert effect["type"] == "schedule_timer" and effect["timer"]["fire_at"] == T0 + 30_000
    assert effect["event_id"] == d.record["event_id"] and effect["effect_id"] in d.record["effect_ids"]
    assert d.record["runbook"] == "target-down" and d.record["runbook_set_version"] == ctx.runbooks.version


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
def test_alertmanager_events_are_not_held_again(ctx, source):
    """Alertmanager and Grafana alerting group and wait by themselves (routing's upstream_grouped)."""
    d = Sim(ctx).feed(alert(at=T0, source=source))
    assert d.record["outcome"] == "notified"
    assert receivers(d.effects) == [("oncall-slack", "trigger")]


@pytest.mark.parametrize("lost", [False, True])
def test_the_alerts_alertmanager_posts_together_are_told_in_one_message(ctx, lost):
    """Ceph's mixin through Alertmanager's webhook: a group of OSDs flapping came in one post; the first alert was
    told at once, alone, and the others 5 minutes later. Ingest numbers a session's alerts of one post
    (opsloop_post); the message waits for the last of them, or, were it lost, goes a second later."""
    sim = Sim(ctx)
    for i, osd in enumerate(["osd.1", "osd.5", "osd.7"][: 2 if lost else 3]):
        event = alert("CephOSDFlapping", at=T0, instance=osd, eid=f"osd-{i}", source="alertmanager")
        event["annotations"] = {**event.get("annotations", {}), "opsloop_post": f"{i + 1}/3"}
        sim.feed(event, WARN_DOWN)
    sim.advance(T0 + 5 * MIN - 1)
    [note] = sim.notifications()
    assert note["created_at"] == (T0 + 1000 if lost else T0)
    assert f"(+{1 if lost else 2} more)" in note["notify"]["title"]


def test_unacknowledged_urgent_alert_escalates_slack_oncall_pagerduty_on_schedule(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000)
    assert receivers(sim.effects) == [("oncall-slack", "trigger")]
    sim.advance(T0 + 30_000 + 5 * MIN - 1)
    assert len(sim.notifications()) == 1, "step 1 must not fire before its time"
    sim.advance(T0 + 30_000 + 5 * MIN)
    assert receivers(sim.effects)[-1] == ("oncall-slack", "trigger")
    sim.advance(T0 + 30_000 + 15 * MIN)
    notes = sim.notifications()
    assert [n["notify"]["receiver"] for n in notes] == ["oncall-slack", "oncall-slack", "pagerduty-primary"]
    assert [n["notify"]["channel"] for n in notes] == ["slack", "slack", "pagerduty"]
    pd = notes[-1]["notify"]
    assert pd["thread_key"] == SESSION and pd["action"] == "trigger"
    ack = [link for link in notes[0]["notify"]["links"] if link["label"] == "Acknowledge"]
    assert ack and "sig=" in ack[0]["url"] and "s3cret" not in ack[0]["url"]


@pytest.mark.parametrize("source", ["prometheus", "alertmanager"])
def test_an_alert_arriving_hours_after_its_startsat_is_told_once_and_what_follows_counts_from_then(ctx, source):
    """Prometheus re-sends its firing alerts with their first startsAt after opsloop or the network was down,
    and a new opsloop meets alerts that have fired for hours. Tried from outside (an alert posted with
    startsAt 6 h back): the chat message, the on-call escalation "unacknowledged for 15m", the PagerDuty page
    and the 4 h repeat all went out within 2.5 s, each timed from startsAt; a day back, the message's
    Acknowledge link had expired before it was sent. The chain, the repeat and the links count from when the
    message went out, as Alertmanager counts its repeat interval from when it sent."""
    late = T0 + 30 * 60 * MIN
    sim = Sim(ctx)
    sim.feed({**alert(at=T0, source=source), "received_at": late})
    sim.advance(late)  # what was due on arrival: the group's wait is long over (Alertmanager's: told at once)
    assert receivers(sim.effects) == [("oncall-slack", "trigger")]
    # its Acknowledge link lasts the ack TTL from then (it had expired 6 h before it was sent)
    [ack] = [link["url"] for link in sim.notifications()[0]["notify"]["links"] if link["label"] == "Acknowledge"]
    query = {k: v[0] for k, v in parse_qs(urlparse(ack).query).items()}
    assert int(query["expires"]) == late + ctx.ack_ttl_ms
    assert verify_action_query(query, "s3cret", late + MIN).action == "ack"
    sim.advance(late + 5 * MIN - 1)
    assert len(sim.notifications()) == 1, "nobody could acknowledge yet: no escalation, no repeat"
    sim.advance(late + 5 * MIN)
    step1 = sim.notifications()[-1]["notify"]
    assert step1["receiver"] == "oncall-slack" and "(unacknowledged for 5m)" in step1["title"]
    sim.advance(late + 15 * MIN)
    assert [n["notify"]["receiver"] for n in sim.notifications()] == [
        "oncall-slack",
        "oncall-slack",
        "pagerduty-primary",
    ]
    sim.advance(late + 4 * 60 * MIN - 1)
    assert len(sim.notifications()) == 3, "the 4 h repeat counts from the message, not from startsAt"
    sim.advance(late + 4 * 60 * MIN)
    assert [n["notify"]["receiver"] for n in sim.notifications()][3:] == ["oncall-slack"]  # the repeat


def test_the_chain_takes_no_step_while_only_alerts_below_escalate_from_fire(ctx):
    """etcd's mixin through Prometheus: the critical of a session resolved, its warning kept firing, and the
    chain it started went on to on-call and PagerDuty about the warning. A step needs an alert at or above
    the runbook's escalate_from still firing; the chain goes on, should one fire again."""
    sim = Sim(ctx)
    sim.feed(alert(at=T0, instance="etcd-1", eid="crit"))  # ctx: urgent
    sim.feed(alert(at=T0 + 1000, instance="etcd-1b", eid="warn"), WARN_DOWN)
    sim.advance(T0 + 30_000)
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack"]
    sim.feed(alert(status="resolved", at=T0 + 2 * MIN, instance="etcd-1", eid="crit-ok"))
    sim.advance(T0 + 30_000 + 5 * MIN)
    step = next(d for ev, d in sim.decisions if d.record.get("matched", {}).get("escalation_step") == "1")
    assert step.record["outcome"] == "suppressed"
    assert {"gate": "severity", "verdict": "stop"}.items() <= step.record["gates"][-1].items()
    escalated = [n for n in sim.notifications() if "Escalated" in n["notify"]["title"]]
    assert escalated == []
    sim.feed(alert(at=T0 + 10 * MIN, instance="etcd-1", eid="crit-again"))  # urgent again: the next step is taken
    sim.advance(T0 + 30_000 + 15 * MIN)
    assert [n["notify"]["receiver"] for n in sim.notifications() if "Escalated" in n["notify"]["title"]] == [
        "pagerduty-primary"
    ]


def test_ack_stops_the_chain_and_tells_pagerduty(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000 + 15 * MIN)  # all three steps out, PagerDuty paged
    d = sim.feed(webhook("ack", at=T0 + 16 * MIN, actor="alice"))
    assert d.record["outcome"] == "acknowledged"
    assert receivers(d.effects) == [("pagerduty-primary", "acknowledge")]
    assert d.effects[0]["notify"]["thread_key"] == SESSION


def test_ack_before_an_escalation_step_cancels_it(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000)
    d = sim.feed(webhook("ack", at=T0 + 2 * MIN))
    assert [e["cancel"]["prefix"] for e in d.effects if e["type"] == "cancel_timers"] == ["esc:"]
    assert not any(tid.startswith("esc:") for tid in sim.pending())
    sim.advance(T0 + 60 * MIN)
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack"]


def test_pagerduty_ack_is_not_echoed_back(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000 + 15 * MIN)
    d = sim.feed(webhook("incident.acknowledged", at=T0 + 16 * MIN, source="pagerduty"))
    assert d.record["outcome"] == "acknowledged" and receivers(d.effects) == []


def test_resolve_sends_pagerduty_resolve_with_the_same_dedup_key_and_chat_resolved(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000 + 15 * MIN)
    trigger_pd = sim.notifications()[-1]["notify"]
    d = sim.feed(alert(status="resolved", at=T0 + 20 * MIN))
    assert d.record["outcome"] == "resolved"
    got = {(n["notify"]["receiver"], n["notify"]["action"]) for n in d.effects if n["type"] == "notify"}
    assert got == {("oncall-slack", "resolve"), ("pagerduty-primary", "resolve")}
    pd = next(e["notify"] for e in d.effects if e["type"] == "notify" and e["notify"]["channel"] == "pagerduty")
    assert pd["thread_key"] == trigger_pd["thread_key"] == SESSION
    assert pd["title"].startswith("Resolved:")
    assert sim.pending() == {}, "a resolve leaves no timer behind"


def test_resolved_within_group_wait_tells_nobody(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    d = sim.feed(alert(status="resolved", at=T0 + 10_000))
    assert d.record["outcome"] == "resolved-quietly"
    assert sim.notifications() == [] and sim.pending() == {}


def test_pagerduty_resolve_goes_to_chat_but_not_back_to_pagerduty(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 30_000 + 15 * MIN)
    d = sim.feed(webhook("incident.resolved", at=T0 + 17 * MIN, source="pagerduty"))
    assert {r for r, a in receivers(d.effects)} == {"oncall-slack"}


def test_group_of_many_alerts_gives_one_notification(ctx):
    sim = Sim(ctx)
    for i in range(50):
        sim.feed(alert(at=T0 + i * 100, instance=f"api-{i}:9100"), WARN_DOWN)
    sim.advance(T0 + 40_000)
    [note] = sim.notifications()
    assert "(+49 more)" in note["notify"]["title"] and "50 alerts firing" in note["notify"]["body"]
    # every alert got an effect at once (the group flush timer), as the pipeline contract asks
    assert all(d.effects for ev, d in sim.decisions if ev["kind"] == "telemetry")


def test_alerts_past_the_sessions_cap_are_counted_once_each_and_alike_in_title_and_body(ctx):
    """A fault probe: 205 alerts in one session, re-sent 3 times in the group wait: "(+199 more)" in the title,
    "200 alerts firing ... and 210 more" in the body (every re-send of the 5 past the cap of 200 counted)."""
    from streams.core.incident import MAX_ALERTS

    sim = Sim(ctx)
    for send in range(3):
        for i in range(MAX_ALERTS + 5):
            sim.feed(alert(at=T0 + i, instance=f"api-{i}:9100", eid=f"a{i}-{send}"), WARN_DOWN)
    sim.advance(T0 + 40_000)
    [note] = sim.notifications()
    assert "(+204 more)" in note["notify"]["title"] and note["notify"]["fields"]["alerts"] == "205"
    assert "205 alerts firing:" in note["notify"]["body"] and "... and 195 more" in note["notify"]["body"]
    sim.feed(alert(status="resolved", at=T0 + 60_000, instance=f"api-{MAX_ALERTS + 4}:9100"), WARN_DOWN)
    assert sim.state["overflow"] == 4  # one past the cap resolved


def test_a_groups_alerts_are_listed_by_the_labels_that_tell_them_apart(ctx):
    """kube-prometheus's KubePodCrashLooping through Prometheus: kube-state-metrics' alerts all carry its own
    address as the instance, and the update about a second crash-looping pod listed the same line twice."""
    ksm = "10.244.1.7:8080"
    sim = Sim(ctx)
    for i, pod in enumerate(("cart-5c8d7f9b4-qw8zt", "checkout-7d9f6c5b8-x2x9k")):
        labels = {"namespace": "shop", "pod": pod, "container": "app", "job": "kube-state-metrics"}
        sim.feed(alert("KubePodCrashLooping", at=T0 + i * 100, instance=ksm, labels=labels), WARN_DOWN)
    sim.advance(T0 + 40_000)
    [note] = sim.notifications()
    listed = [line for line in note["notify"]["body"].splitlines() if line.startswith("- ")]
    assert listed == [
        "- KubePodCrashLooping: KubePodCrashLooping on 10.244.1.7:8080 (pod=cart-5c8d7f9b4-qw8zt)",
        "- KubePodCrashLooping: KubePodCrashLooping on 10.244.1.7:8080 (pod=checkout-7d9f6c5b8-x2x9k)",
    ]


def test_telling_labels_prefer_what_a_reader_looks_for_and_leave_out_what_the_title_says():
    from streams.core.messages import telling_labels

    alerts = [
        {"title": "Disk full on node-a", "labels": {"instance": "node-a", "mountpoint": "/", "device": "sda1"}},
        {"title": "Disk full on node-a", "labels": {"instance": "node-a", "mountpoint": "/var", "device": "sdb1"}},
        {"title": "Disk full on node-b", "labels": {"instance": "node-b", "mountpoint": "/", "device": "sda1"}},
    ]
    assert telling_labels(alerts) == [
        "mountpoint=/, device=sda1",
        "mountpoint=/var, device=sdb1",
        "mountpoint=/, device=sda1",
    ]
    same = [{"title": "Down", "labels": {"instance": "a:1"}}, {"title": "Down", "labels": {"instance": "a:1"}}]
    assert telling_labels(same) == ["a:1", "a:1"]  # nothing differs: where it fires, as before
    assert telling_labels([{"title": "x", "labels": {"pod": "p" * 200}}, {"title": "x", "labels": {}}])[0] == (
        "pod=" + "p" * 79 + "…"
    )


def test_new_alerts_after_the_first_message_wait_for_group_interval(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0, instance="a"), WARN_DOWN)
    sim.advance(T0 + 30_000)
    sim.feed(alert(at=T0 + 60_000, instance="b"), WARN_DOWN)
    sim.advance(T0 + 30_000 + 5 * MIN - 1)
    assert len(sim.notifications()) == 1
    sim.advance(T0 + 30_000 + 5 * MIN)
    assert len(sim.notifications()) == 2 and "(+1 more)" in sim.notifications()[-1]["notify"]["title"]


def test_unchanged_group_repeats_after_repeat_interval(ctx):
    sim = Sim(ctx)
    sim.feed(alert(at=T0), WARN_DOWN)
    sim.advance(T0 + 30_000 + 4 * 60 * MIN - 1)
    assert len(sim.notifications()) == 1
    sim.advance(T0 + 30_000 + 4 * 60 * MIN)
    assert len(sim.notifications()) == 2


def test_resent_firing_alert_is_a_repeat_and_a_retried_event_a_duplicate(ctx):
    sim = Sim(ctx)
    first = alert(at=T0)
    sim.feed(first)
    again = sim.feed(first)
    assert again.record["outcome"] == "duplicate" and again.effects == []
    assert again.record["decision_id"] != sim.decisions[0][1].record["decision_id"]
    resend = sim.feed(alert(at=T0 + 15_000, eid="resend-1"))
    assert resend.record["outcome"] == "repeat" and resend.effects == []


def test_a_resent_alert_brings_its_text_as_it_reads_now_to_the_next_message(ctx):
    """etcd's mixin through Prometheus: etcdHighFsyncDurations re-sent each evaluation, "fsync durations are
    1.5s", then "0.7s"; the group's next message said 1.5s, the first send's text. Alertmanager's says what
    the alert says now. Its severity and runbook stay the first send's."""
    sim = Sim(ctx)
    said = {"summary": "fsync too slow", "description": "99th percentile fsync durations are 1.5s on etcd-1."}
    first = sim.feed({**alert("etcdHighFsyncDurations", at=T0, instance="etcd-1"), "annotations": said}, WARN_DOWN)
    sim.advance(T0 + 30_000)
    now = {**said, "description": "99th percentile fsync durations are 0.7s on etcd-1.", "runbook_url": "https://r/x"}
    resent = {**alert("etcdHighFsyncDurations", at=T0, instance="etcd-1", eid="resend-1"), "annotations": now}
    assert sim.feed(resent, WARN_DOWN).record["outcome"] == "repeat"
    sim.feed(alert("etcdHighFsyncDurations", at=T0 + 60_000, instance="etcd-2"), WARN_DOWN)  # news for the group
    sim.advance(T0 + 30_000 + 5 * MIN)
    first_note, update = sim.notifications()
    assert "1.5s" in first_note["notify"]["body"] and "0.7s" not in first_note["notify"]["body"]
    assert "0.7s on etcd-1" in update["notify"]["body"] and "1.5s" not in update["notify"]["body"]
    assert update["notify"]["severity"] == first_note["notify"]["severity"] == first.record["severity"]


def test_flapping_alert_gives_one_flapping_notice_then_quiet_until_stable(ctx):
    sim = Sim(ctx)
    t = T0
    for i in range(10):  # ten flips, one a minute
        sim.feed(alert(status="firing" if i % 2 == 0 else "resolved", at=t, source="alertmanager"), WARN_DOWN)
        t += MIN
    notes = sim.notifications()
    flapping = [n for n in notes if n["notify"]["title"].startswith("Flapping:")]
    assert len(flapping) == 1
    assert notes.index(flapping[0]) == len(notes) - 1, "nothing after the flapping notice while it flaps"
    outcomes = [d.record["outcome"] for _, d in sim.decisions]
    assert "flapping-notice" in outcomes and outcomes[-1] == "flapping"
    # stable for 10 minutes (resolved since the last flip): one resolved message ends it
    sim.advance(t + 11 * MIN)
    assert sim.notifications()[-1]["notify"]["action"] == "resolve"
    assert not sim.state["flap"]["on"]


def test_a_flapping_notice_about_events_that_arrive_late_carries_links_that_last_from_its_sending(ctx):
    """Alertmanager re-delivers what it queued while ingest was down, each with its old time: the flapping
    notice they give goes out on arrival, and its Acknowledge link lasted from the events' time."""
    late = 26 * 60 * MIN  # more than the ack TTL
    sim = Sim(ctx)
    t = T0
    for i in range(6):
        flip = alert(status="firing" if i % 2 == 0 else "resolved", at=t, source="alertmanager")
        sim.feed({**flip, "received_at": t + late}, WARN_DOWN)
        t += MIN
    [notice] = [n for n in sim.notifications() if n["notify"]["title"].startswith("Flapping:")]
    [ack] = [link["url"] for link in notice["notify"]["links"] if link["label"] == "Acknowledge"]
    query = {k: v[0] for k, v in parse_qs(urlparse(ack).query).items()}
    sent = notice["created_at"] + late  # the flip that made it arrived then
    assert int(query["expires"]) == sent + ctx.ack_ttl_ms
    assert verify_action_query(query, "s3cret", sent + MIN).action == "ack"


def test_dedupe_window_stops_the_same_alert_set_inside_the_window(rset):
    from dataclasses import replace as dc_replace

    rb = rset.get("target-down")
    longer = dc_replace(rb, policy=dc_replace(rb.policy, dedupe_window=30 * MIN))
    rs = dc_replace(rset, runbooks=tuple(longer if r.name == rb.name else r for r in rset.runbooks))
    sim = Sim(Context(verdict=WARN_DOWN, runbooks=rs))
    sim.feed(alert(at=T0, instance="a", source="alertmanager"))  # {a} sent at once
    sim.feed(alert(at=T0 + MIN, instance="b", source="alertmanager"))  # {a, b} at T0+5m
    sim.feed(alert(status="resolved", at=T0 + 6 * MIN, instance="b", source="alertmanager"))
    sim.advance(T0 + 12 * MIN)  # {a} again at T0+10m
    assert len(sim.notifications()) == 2
    stopped = [
        g for _, d in sim.decisions for g in d.record["gates"] if g["gate"] == "dedupe" and g["verdict"] == "stop"
    ]
    assert stopped and "infra-slack" in stopped[0]["reason"]
    keys = [n["notify"]["dedupe_key"] for n in sim.notifications()]
    assert len(set(keys)) == 2


def test_cooldown_delays_a_new_episode_and_notifies_after_it(rset):
    ctx = Context(verdict=WARN_CPU, runbooks=rset)  # high-cpu: cooldown 15m
    sim = Sim(ctx)
    sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager"))
    sim.feed(alert("HostHighCpuLoad", status="resolved", at=T0 + 2 * MIN, source="alertmanager"))
    d = sim.feed(alert("HostHighCpuLoad", at=T0 + 4 * MIN, source="alertmanager"))
    assert d.record["outcome"] == "suppressed"
    assert {"gate": "cooldown", "verdict": "stop"}.items() <= next(
        g for g in d.record["gates"] if g["gate"] == "cooldown"
    ).items()
    triggers = [n for n in sim.notifications("trigger")]
    assert len(triggers) == 1
    sim.advance(T0 + 15 * MIN)
    assert len(sim.notifications("trigger")) == 2
    assert sim.notifications("trigger")[-1]["created_at"] == T0 + 15 * MIN


def test_an_urgent_alert_firing_again_is_not_held_by_the_cooldown(rset):
    """Ceph's CephOSDFull through Alertmanager: resolved, firing again 80 s later, suppressed by disk-filling's
    30-minute cooldown: on-call's last word was "resolved" for 27 minutes while writes were blocked."""
    urgent = Verdict(category="cpu", severity="urgent", confidence=0.9, classifier="test-1")
    sim = Sim(Context(verdict=urgent, runbooks=rset))  # high-cpu: cooldown 15m
    sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager"))
    sim.feed(alert("HostHighCpuLoad", status="resolved", at=T0 + 2 * MIN, source="alertmanager"))
    d = sim.feed(alert("HostHighCpuLoad", at=T0 + 4 * MIN, source="alertmanager"))
    assert d.record["outcome"] == "notified"
    gate = next(g for g in d.record["gates"] if g["gate"] == "cooldown")
    assert (gate["verdict"], gate["reason"]) == ("pass", "urgent: not held by a cooldown")
    assert [n["created_at"] for n in sim.notifications("trigger")] == [T0, T0 + 4 * MIN]


def test_cap_stops_the_fourth_autonomous_message_until_an_ack(rset):
    ctx = Context(verdict=WARN_CPU, runbooks=rset)  # high-cpu: max_consecutive 3
    sim = Sim(ctx)
    t = T0
    for i in range(6):  # a new alert every 6 minutes: an update each group_interval
        sim.feed(alert("HostHighCpuLoad", at=t, instance=f"n{i}", source="prometheus"))
        t += 6 * MIN
    sim.advance(t)
    assert len(sim.notifications()) == 3
    stops = [g for _, d in sim.decisions for g in d.record["gates"] if g["gate"] == "cap" and g["verdict"] == "stop"]
    assert stops
    sim.feed(webhook("ack", at=t + MIN))
    sim.feed(alert("HostHighCpuLoad", at=t + 2 * MIN, instance="late"))
    sim.advance(t + 20 * MIN)
    assert len(sim.notifications("trigger")) == 4


def test_silence_mutes_during_its_window_and_the_alert_is_told_after(rset):
    silence = silence_from_json({"matchers": ['service="api"'], "starts_at": T0 - MIN, "ends_at": T0 + 20 * MIN})
    sim = Sim(Context(verdict=URGENT_DOWN, runbooks=rset, silences=(silence,)))
    sim.feed(alert(at=T0))
    sim.advance(T0 + 20 * MIN - 1)
    assert sim.notifications() == []
    assert any(g["gate"] == "silence" and g["verdict"] == "stop" for _, d in sim.decisions for g in d.record["gates"])
    sim.advance(T0 + 20 * MIN)
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack"]


def test_a_silence_mutes_an_alert_that_arrives_after_it_whatever_its_startsat(rset):
    """An alert can reach opsloop minutes after its startsAt (Alertmanager forwards a group after its group
    wait or interval; Prometheus re-sends firing alerts after an outage). Its group flush was timed at
    startsAt + group wait, and a silence created in between was checked at that time: the page went out during
    an active silence. Alertmanager checks silences when it sends; so does opsloop now, from the arrival on."""
    silence = silence_from_json({"matchers": ['service="api"'], "starts_at": T0 + 3 * MIN, "ends_at": T0 + 60 * MIN})
    event = {**alert(at=T0), "received_at": T0 + 5 * MIN}  # firing since T0, received at T0 + 5m
    for ticker in (True, False):  # flushed by a prompt ticker, or inside the session's next event: the same
        sim = Sim(Context(verdict=URGENT_DOWN, runbooks=rset, silences=(silence,)))
        sim.feed(event)
        if ticker:
            sim.advance(T0 + 5 * MIN)
        else:
            sim.feed({**alert(at=T0 + 6 * MIN, instance="api-2:9100"), "received_at": T0 + 6 * MIN}, ticker=False)
        assert sim.notifications() == [], ticker
        assert any("silence" in d.record["matched"] for _, d in sim.decisions), ticker
        sim.advance(T0 + 60 * MIN)  # told when the silence ends
        assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack"]
    # an alert that arrived before the silence began is still checked at its group's time, as before
    early = Sim(Context(verdict=URGENT_DOWN, runbooks=rset, silences=(silence,)))
    early.feed(alert(at=T0))
    early.advance(T0 + MIN)
    assert len(early.notifications()) == 1


def test_a_silence_expired_early_lets_its_alerts_be_told_within_the_group_interval(rset):
    """Alertmanager flushes a group every group interval and checks silences then; opsloop tried a silenced
    group again only at the silence's end, so alerts of a 4 h silence expired after 10 min (maintenance done
    early) stayed untold for 4 h."""
    from dataclasses import replace as dc_replace

    silence = silence_from_json({"matchers": ['service="api"'], "starts_at": T0 - MIN, "ends_at": T0 + 240 * MIN})
    sim = Sim(Context(verdict=URGENT_DOWN, runbooks=rset, silences=(silence,)))
    sim.feed(alert(at=T0))
    sim.advance(T0 + 10 * MIN)
    assert sim.notifications() == []
    sim.ctx = dc_replace(sim.ctx, silences=())  # expired at T0 + 10 min
    sim.advance(T0 + 10 * MIN + 5 * MIN)  # the starter route's group interval: 5 min
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack"]
    # while it holds, each try is a suppressed decision, nothing sent
    held = Sim(Context(verdict=URGENT_DOWN, runbooks=rset, silences=(silence,)))
    held.feed(alert(at=T0))
    held.advance(T0 + 60 * MIN)
    tries = [d for _, d in held.decisions if d.record["outcome"] == "suppressed"]
    assert held.notifications() == [] and len(tries) >= 10


def test_an_alerts_own_runbook_and_dashboard_links_and_its_message_text_reach_the_notification(tmp_path):
    """kubernetes-mixin style: every alert carries runbook_url, older rules write only a `message` annotation.
    The notification had neither the runbook its authors wrote nor any text."""
    from agents.sinks.channels import specs
    from streams.model.runbooks import load_runbook_set
    from tests.decide.helpers import RUNBOOKS

    shutil.copytree(RUNBOOKS, tmp_path / "runbooks")  # the disk runbook given a page of its own
    disk_yaml = tmp_path / "runbooks" / "disk-filling.yaml"
    disk_yaml.write_text(disk_yaml.read_text() + "url: https://runbooks.example.com/disk-filling\n")
    rset = load_runbook_set(tmp_path / "runbooks", channels=specs())
    disk = Verdict(category="disk", severity="warning", confidence=0.9, classifier="test-1")
    annotations = {
        "message": "Volume data-0 is 97% full.",
        "runbook_url": "https://runbooks.example.org/kube/KubePersistentVolumeFillingUp",
        "dashboard_url": "https://grafana.example.org/d/volumes",
    }
    sim = Sim(Context(verdict=disk, runbooks=rset))
    sim.feed({**alert("KubePersistentVolumeFillingUp", at=T0), "annotations": annotations})
    sim.advance(T0 + 5 * MIN)
    (first, *_) = sim.notifications()
    notify = first["notify"]
    assert notify["body"].startswith("Volume data-0 is 97% full.\n")
    assert [(link["label"], link["url"]) for link in notify["links"]] == [
        ("Source", "http://prometheus:9090/graph"),
        ("Runbook", "https://runbooks.example.org/kube/KubePersistentVolumeFillingUp"),
        ("Dashboard", "https://grafana.example.org/d/volumes"),
        ("opsloop runbook", "https://runbooks.example.com/disk-filling"),  # the matched runbook's, beside it
    ]
    # Ceph's mixin links its docs in `documentation`; a plain `runbook` annotation is a runbook link too
    ceph = Sim(Context(verdict=disk, runbooks=rset))
    doc = "https://docs.ceph.com/en/latest/rados/operations/health-checks#osd-nearfull"
    ceph.feed({**alert("CephOSDNearFull", at=T0), "annotations": {"documentation": doc, "runbook": "https://r/osd"}})
    ceph.advance(T0 + 5 * MIN)
    links = [(link["label"], link["url"]) for link in ceph.notifications()[0]["notify"]["links"]]
    assert ("Documentation", doc) in links and ("Runbook", "https://r/osd") in links
    # a link that is not http(s) is not a link; without its own runbook the opsloop one is "Runbook"
    other = Sim(Context(verdict=disk, runbooks=rset))
    other.feed({**alert("DiskFull", at=T0), "annotations": {"runbook_url": "javascript:alert(1)"}})
    other.advance(T0 + 5 * MIN)
    assert [(link["label"], link["url"]) for link in other.notifications()[0]["notify"]["links"]] == [
        ("Source", "http://prometheus:9090/graph"),
        ("Runbook", "https://runbooks.example.com/disk-filling"),
    ]


def test_maintenance_window_from_the_runbook_set_mutes(rset):
    from dataclasses import replace as dc_replace

    window = silence_from_json(
        {
            "id": "maintenance:test",
            "matchers": ['service="api"'],
            "starts_at": T0,
            "ends_at": T0 + 60 * MIN,
            "kind": "maintenance",
        }
    )
    sim = Sim(Context(verdict=URGENT_DOWN, runbooks=dc_replace(rset, maintenance=(window,))))
    sim.feed(alert(at=T0, source="alertmanager"))
    assert sim.notifications() == []
    assert "maintenance window" in sim.decisions[0][1].record["matched"]["silence"]


def test_a_critical_alert_inhibits_the_warning_of_the_same_alert_on_its_target(rset):
    high = {
        "alertname": "HostHighCpuLoad",
        "service": "api",
        "instance": "api-1:9100",
        "severity": "urgent",
        "category": "cpu",
        "org": "acme",
    }
    ctx = Context(verdict=WARN_CPU, runbooks=rset, inhibitors=(("acme:alert:HostHighCpuLoad:api:crit", high),))
    sim = Sim(ctx)
    d = sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager"))
    assert d.record["outcome"] == "suppressed" and sim.notifications() == []
    assert "inhibit_rules[0]" in d.record["matched"]["inhibit"]
    for other in ({**high, "instance": "api-2:9100"}, {**high, "alertname": "PostgresqlDown"}):
        sim = Sim(Context(verdict=WARN_CPU, runbooks=rset, inhibitors=(("x", other),)))
        assert sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager")).record["outcome"] == "notified"


def test_condition_trigger_fires_after_its_for_duration_and_clears(rset):
    sim = Sim(Context(verdict=Verdict(category="cpu", severity="warning"), runbooks=rset))
    for i in range(7):  # node_load1 at 9 every minute: holds from T0, fires at T0+5m (+30s group_wait)
        sim.feed(sample("node_load1", 9.0, at=T0 + i * MIN))
    notes = sim.notifications()
    assert len(notes) == 1 and notes[0]["runbook"] == "cpu-saturation-condition"
    assert notes[0]["created_at"] >= T0 + 5 * MIN
    d = sim.feed(sample("node_load1", 1.0, at=T0 + 8 * MIN))
    assert d.record["outcome"] == "resolved" and sim.notifications()[-1]["notify"]["action"] == "resolve"


def test_condition_interrupted_does_not_fire(rset):
    sim = Sim(Context(verdict=Verdict(category="cpu", severity="warning"), runbooks=rset))
    for i, value in enumerate([9, 9, 9, 2, 9, 9, 9]):
        sim.feed(sample("node_load1", float(value), at=T0 + i * MIN))
    assert sim.notifications() == []


def test_drift_scan_notifies_teams_and_waits_for_approval_before_remediating(rset):
    sim = Sim(Context(verdict=Verdict(category="config_drift", severity="warning"), runbooks=rset))
    findings = [
        {"resource": "aws_s3_bucket.logs", "change_type": "update", "rule": "", "severity": "medium", "detail": "acl"}
    ]
    d = sim.feed(scan("findings", at=T0, findings=findings))
    assert receivers(d.effects) == [("teams-ops", "trigger")]
    assert "aws_s3_bucket.logs" in d.effects[0]["notify"]["body"] and "approval" in d.effects[0]["notify"]["body"]
    assert not [e for e in d.effects if e["type"] == "remediate"]
    d = sim.feed(webhook("remediation.approved", at=T0 + MIN, session="acme:scan:infra-live", actor="bob"))
    [rem] = [e for e in d.effects if e["type"] == "remediate"]
    assert rem["remediate"]["action"] == "open-drift-pr" and rem["remediate"]["params"]["approved_by"] == "bob"
    d = sim.feed(scan("clean", at=T0 + 60 * MIN))
    assert receivers(d.effects) == [("teams-ops", "resolve")]


def test_pull_request_review_notifies_once_and_closing_ends_it(rset):
    sim = Sim(Context(verdict=Verdict(category="code_review", severity="action"), runbooks=rset))
    s = "acme:pr:acme/infra#12"
    d = sim.feed(webhook("pr.opened", at=T0, session=s, source="github", subject="acme/infra#12"))
    assert receivers(d.effects) == [("teams-ops", "trigger")] and "acme/infra#12" in d.effects[0]["notify"]["title"]
    assert sim.feed(webhook("pr.synchronize", at=T0 + MIN, session=s, source="github")).record["outcome"] == "repeat"
    d = sim.feed(webhook("pr.closed", at=T0 + 2 * MIN, session=s, source="github"))
    assert receivers(d.effects) == [("teams-ops", "resolve")]


def test_deployment_failure_fires_and_success_clears(rset):
    sim = Sim(Context(verdict=Verdict(category="deployment", severity="action"), runbooks=rset))
    s = "acme:deploy:api"
    d = sim.feed(webhook("deployment.failed", at=T0, session=s, source="github"))
    assert d.record["runbook"] == "deployment-failed" and receivers(d.effects) == [("infra-slack", "trigger")]
    d = sim.feed(webhook("deployment.succeeded", at=T0 + MIN, session=s, source="github"))
    assert receivers(d.effects) == [("infra-slack", "resolve")]


def test_remediation_and_verification_escalate_when_still_firing(tmp_path):
    from tests.decide.helpers import live_remediation_set

    live = live_remediation_set(tmp_path)  # high-cpu's scale-deployment run for real; verify after 10m
    ctx = Context(verdict=Verdict(category="cpu", severity="urgent"), runbooks=live)
    sim = Sim(ctx)
    d = sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager"))
    [rem] = [e for e in d.effects if e["type"] == "remediate"]
    assert rem["remediate"]["dry_run"] is False and rem["remediate"]["action"] == "scale-deployment"
    # the step's {labels.<name>} params name its target (the remediator got the session key alone);
    # a templated param the alert has no label for is left out
    assert rem["remediate"]["params"] == {"replicas": "+2", "service": "api"}
    sim.advance(T0 + 5 * MIN)  # escalation step 1 (oncall-slack) at +5m
    sim.advance(T0 + 10 * MIN)  # verification: still firing, so step 2 (PagerDuty) comes now, not at +15m
    assert [n["notify"]["receiver"] for n in sim.notifications()] == [
        "oncall-slack",
        "oncall-slack",
        "pagerduty-primary",
    ]
    assert sim.notifications()[-1]["created_at"] == T0 + 10 * MIN


def test_a_verification_after_dry_runs_escalates_nothing_early(rset):
    """Ceph's health error through disk-filling: a dry-run log rotation "ran", and 15 minutes on the verification
    paged PagerDuty "still firing after remediation", 15 minutes before the chain's own step. Nothing was changed:
    the chain keeps its times."""
    ctx = Context(verdict=Verdict(category="cpu", severity="urgent"), runbooks=rset)  # high-cpu: a dry run
    sim = Sim(ctx)
    sim.feed(alert("HostHighCpuLoad", at=T0, source="alertmanager"))
    sim.advance(T0 + 10 * MIN)
    verified = [d for ev, d in sim.decisions if d.record.get("matched", {}).get("verify")]
    assert [d.record["outcome"] for d in verified] == ["recorded"]
    assert verified[0].record["matched"]["verify"] == "the remediations were dry runs: nothing to verify"
    assert [n["notify"]["receiver"] for n in sim.notifications()] == ["oncall-slack", "oncall-slack"]
    sim.advance(T0 + 15 * MIN)
    assert sim.notifications()[-1]["notify"]["receiver"] == "pagerduty-primary"
    assert sim.notifications()[-1]["created_at"] == T0 + 15 * MIN


def test_cron_slot_dispatches_staggered_targets_once_and_skips_repeats(rset):
    from streams.core.timers import cron_event

    schedule = next(s for s in rset.schedules if s.name == "nightly-drift-scan")
    ctx = Context(runbooks=rset)
    sim = Sim(ctx)
    slot = 1_700_028_000_000  # 2023-11-15 06:00 UTC
    d = sim.feed(cron_event(schedule.session_key, schedule.org, schedule.name, slot, slot))
    assert d.record["outcome"] == "dispatched"
    rems = [e for e in d.effects if e["type"] == "remediate"]
    assert [r["remediate"]["params"]["target"] for r in rems] == ["infra-live"]
    assert [e["timer"]["fire_at"] - slot for e in d.effects if e["type"] == "schedule_timer"] == [30_000, 60_000]
    sim.advance(slot + 60_000)
    targets = [e["remediate"]["params"]["target"] for e in sim.effects if e["type"] == "remediate"]
    assert targets == ["infra-live", "infra-staging", "platform-modules"]
    again = sim.feed(cron_event(schedule.session_key, schedule.org, schedule.name, slot, slot + 1))
    assert again.record["outcome"] in ("duplicate", "repeat") and again.effects == []
    later = sim.feed(
        cron_event(schedule.session_key, schedule.org, schedule.name, slot + 3 * 86_400_000, slot + 3 * 86_400_000)
    )
    assert later.record["matched"]["missed_slots"] == "2"


def test_cron_skips_a_slot_while_the_previous_run_may_still_run(rset):
    from dataclasses import replace as dc_replace

    from streams.core.timers import cron_event

    schedule = dc_replace(
        next(s for s in rset.schedules if s.name == "weekly-cost-scan"), cron="*/10 * * * *", max_runtime=25 * MIN
    )
    sim = Sim(Context(runbooks=dc_replace(rset, schedules=(schedule,))))
    outcomes = []
    for k in range(4):
        at = T0 - T0 % (10 * MIN) + k * 10 * MIN
        outcomes.append(
            sim.feed(cron_event(schedule.session_key, schedule.org, schedule.name, at, at)).record["outcome"]
        )
    assert outcomes == ["dispatched", "skipped", "skipped", "dispatched"]


def test_decision_record_names_classifier_gates_and_versions(ctx):
    v = Verdict(
        category="availability",
        severity="urgent",
        confidence=0.42,
        classifier="model-7",
        fallback=True,
        severity_confidence=0.61,
    )
    d = Sim(ctx).feed(alert(at=T0, source="alertmanager"), v)
    r = d.record
    assert (r["classifier"], r["confidence"], r["fallback"]) == ("model-7", 0.42, True)
    assert r["matched"]["severity_confidence"] == "0.6100"
    assert r["matched"]["route"] == "route.routes[1]" and r["matched"]["receivers"] == "oncall-slack"
    assert {g["gate"] for g in r["gates"]} >= {"flapping", "silence", "inhibit", "group", "cooldown", "cap", "dedupe"}
    codec = default_codec()
    assert codec.decode(codec.encode("opsloop.Decision", r))["matched"] == r["matched"]


def test_same_inputs_give_byte_identical_outputs(ctx):
    codec = default_codec()
    events = [alert(at=T0), alert(at=T0 + 1000, instance="b"), webhook("ack", at=T0 + 40 * MIN)]

    def run():
        sim = Sim(ctx)
        sim.feed_all(events)
        sim.advance(T0 + 60 * MIN)
        return (
            b"".join(codec.encode("opsloop.Effect", e) for e in sim.effects),
            b"".join(codec.encode("opsloop.Decision", d.record) for _, d in sim.decisions),
            state_bytes(sim.state),
        )

    assert run() == run()


def test_input_state_is_not_mutated(ctx):
    d1 = decide(None, alert(at=T0), ctx)
    before = json.dumps(d1.state, sort_keys=True)
    decide(d1.state, alert(at=T0 + 1, instance="x"), ctx)
    assert json.dumps(d1.state, sort_keys=True) == before


def test_first_version_state_is_upgraded_keeping_seen_ids(ctx):
    ev = alert(at=T0)
    d = decide({"seen": [ev["event_id"]], "firing": True, "notifications": 1}, ev, ctx)
    assert d.record["outcome"] == "duplicate"


def test_every_effect_encodes_with_the_schema(ctx):
    codec = default_codec()
    sim = Sim(ctx)
    sim.feed(alert(at=T0))
    sim.advance(T0 + 20 * MIN)
    sim.feed(webhook("ack", at=T0 + 21 * MIN))
    sim.feed(alert(status="resolved", at=T0 + 22 * MIN))
    types = set()
    for effect in sim.effects:
        assert codec.decode(codec.encode("opsloop.Effect", effect)) == effect
        types.add(effect["type"])
    assert types == {"notify", "schedule_timer", "cancel_timers"}


def test_timers_due_before_an_event_are_folded_first_with_the_tickers_ids(ctx):
    from streams.core.timers import timer_event_id

    prompt = Sim(ctx)
    prompt.feed(alert(at=T0))
    prompt.advance(T0 + 20 * MIN)  # a prompt ticker: group flush, escalation steps 1 and 2
    late = Sim(ctx)
    late.feed(alert(at=T0), ticker=False)
    d = late.feed(webhook("heartbeat", at=T0 + 20 * MIN), ticker=False)  # no ticker at all: the next event folds them
    assert [f.event["payload"]["timer_id"] for f in d.fired] == ["grp:1", "esc:1:1", "esc:1:2"]
    assert d.fired[0].event["event_id"] == timer_event_id(SESSION, "grp:1", T0 + 30_000)
    assert [e["effect_id"] for e in late.notifications()] == [e["effect_id"] for e in prompt.notifications()]
    assert [r["decision_id"] for _, r, _ in late.trace()[1:4]] == [r["decision_id"] for _, r, _ in prompt.trace()[1:4]]
    # the ticker's copy, arriving after all, is a duplicate
    ticker_copy = prompt.trace()[1][0]
    assert late.feed(ticker_copy, ticker=False).record["outcome"] == "duplicate"


def test_outside_inputs_are_recorded_so_a_replay_without_them_decides_the_same(rset):
    """Silences and other sessions' alerts come from global tables; the record keeps those that
    stopped something, and recorded_inputs() hands them back to decide for a replay."""
    from streams.core.decide import recorded_inputs

    silence = silence_from_json(
        {"id": "s-api", "matchers": ['instance="api-1:9100"'], "starts_at": T0, "ends_at": T0 + 9 * MIN}
    )
    unused = silence_from_json(
        {"id": "s-other", "matchers": ['service="web"'], "starts_at": T0, "ends_at": T0 + 9 * MIN}
    )
    high = {
        "alertname": "HostHighCpuLoad",
        "service": "api",
        "instance": "api-2:9100",
        "severity": "urgent",
        "category": "cpu",
        "org": "acme",
    }
    live = Context(verdict=WARN_CPU, runbooks=rset, silences=(silence, unused), inhibitors=(("acme:alert:crit", high),))
    events = [
        alert("HostHighCpuLoad", at=T0, instance="api-1:9100"),
        alert("HostHighCpuLoad", at=T0 + 1000, instance="api-2:9100"),
        webhook("heartbeat", at=T0 + 10 * MIN),
    ]
    state, recorded = None, []
    for ev in events:
        d = decide(state, ev, live)
        state = d.state
        recorded.extend(zip(d.all_records, [ev] * len(d.all_records)))
    records = [r for r, _ in recorded]
    assert any("inputs.silences" in r["matched"] for r in records)
    assert any("inputs.inhibitors" in r["matched"] for r in records)
    assert all("s-other" not in r["matched"].get("inputs.silences", "") for r in records)
    # replay: no global tables, only what each record says it used
    base = Context(runbooks=rset)
    state, replayed = None, []
    for ev in events:
        ctx = recorded_inputs([r for r, e in recorded if e is ev], replace_verdict(base, WARN_CPU))
        d = decide(state, ev, ctx)
        state = d.state
        replayed.extend(d.all_records)
    assert replayed == records


def replace_verdict(ctx, verdict):
    from dataclasses import replace

    return replace(ctx, verdict=verdict)


@pytest.mark.parametrize("version", [2, 3])
def test_a_state_of_an_older_version_continues_as_if_never_upgraded(ctx, version):
    """A changelog written by the short-key state (version 2) or the one that kept seen event ids
    as they are (version 3) is read by this version: folding on from the down-converted state gives
    the same decisions (duplicates included) as folding on from the state itself."""
    from streams.core.state import _ALERT_KEYS_V2, _SESSION_KEYS_V2, VERSION

    def to_old(state, seen_ids):
        back_s = {v: k for k, v in _SESSION_KEYS_V2.items()} if version == 2 else {}
        back_a = {v: k for k, v in _ALERT_KEYS_V2.items()} if version == 2 else {}
        old = {back_s.get(k, k): v for k, v in json.loads(json.dumps(state)).items()}
        esc = "esc" if version == 2 else "escalation"
        if old[esc]:
            old[esc] = {back_s.get(k, k): v for k, v in old[esc].items()}
        old["alerts"] = {key: {back_a.get(k, k): v for k, v in a.items()} for key, a in old["alerts"].items()}
        old["seen"] = list(seen_ids)  # versions 1-3 kept the ids themselves
        old["v"] = version
        return old

    first = [alert(at=T0), alert(at=T0 + MIN, instance="api-2:9100")]
    rest = [
        alert(at=T0 + 20 * MIN, instance="api-3:9100"),
        webhook("ack", at=T0 + 21 * MIN),
        alert(status="resolved", at=T0 + 30 * MIN),
        alert(status="resolved", at=T0 + 31 * MIN, instance="api-2:9100"),
    ]
    state, folded = None, []
    for ev in first:
        result = decide(state, ev, ctx)
        state = result.state
        folded += [*(fired.event["event_id"] for fired in result.fired), ev["event_id"]]  # timers due fold first
    assert state["v"] == VERSION and state["escalation"] and state["alerts"]
    old = to_old(state, folded)
    if version == 2:
        assert "esc" in old and "rb" in old["esc"] and "sev" in next(iter(old["alerts"].values()))
    a, b = state, old
    for ev in [first[1], *rest]:  # the first a duplicate: the older state's seen ids still say so
        da, db = decide(a, ev, ctx), decide(b, ev, ctx)
        assert da.record == db.record and da.effects == db.effects
        a, b = da.state, db.state
    assert a == b


# -- issue 14: resolve titles, runbook once, flapping opt-in and never a page at resolve --------------


def _flip(sim, times, verdict=WARN_DOWN, name="PrometheusTargetMissing"):
    for i, t in enumerate(times):
        sim.feed(alert(name, status="firing" if i % 2 == 0 else "resolved", at=t, source="alertmanager"), verdict)


def test_resolve_title_has_one_prefix_and_runbook_is_listed_once_in_teams_and_email(ctx):
    from agents.sinks.channels import email, slack, teams
    from streams.model.receivers import Receiver

    sim = Sim(ctx)
    sim.feed(alert(at=T0), WARN_DOWN)
    sim.advance(T0 + 5 * MIN)
    sim.feed(alert(status="resolved", at=T0 + 10 * MIN), WARN_DOWN)
    [resolved] = sim.notifications("resolve")[:1]
    header = slack.build_payload(resolved, Receiver("s", "slack", {}))["attachments"][0]["blocks"][0]["text"]["text"]
    assert header.count("Resolved:") == 1
    card = teams.build_card(resolved)
    assert card["body"][0]["text"].count("Resolved:") == 1
    facts = [fact["title"] for block in card["body"] if block["type"] == "FactSet" for fact in block["facts"]]
    assert facts.count("runbook") == 1
    mail = email.build_message(resolved, Receiver("m", "email", {"from": "o@example.com", "to": "x@example.com"}))
    assert mail.get_body(("plain",)).get_content().count("runbook:") == 1
    assert mail.get_body(("html",)).get_content().count(">runbook<") == 1
    assert mail["Subject"].count("Resolved:") == 1


def test_a_runbook_without_a_flapping_policy_never_flaps(rset):
    """fire, resolve, fire, resolve within 10 minutes under the default runbook: plain notices, no "Flapping"."""
    other = Verdict(category="other", severity="urgent")
    sim = Sim(Context(verdict=other, runbooks=rset))
    _flip(sim, [T0, T0 + 2 * MIN, T0 + 4 * MIN, T0 + 6 * MIN, T0 + 8 * MIN, T0 + 9 * MIN], other, name="SomethingOdd")
    assert rset.get("default").policy.flapping.enabled is False
    notes = sim.notifications()
    assert notes and not [n for n in notes if "Flapping" in n["notify"]["title"]]
    assert not sim.state["flap"]["on"]
    assert "flapping" not in {d.record["outcome"] for _, d in sim.decisions}


def test_a_flapping_notice_at_resolve_time_never_triggers_pagerduty(rset):
    """The issue's sequence (fire, resolve, fire, resolve within 10 minutes) under a runbook that opts
    in to flapping and pages at once: the 4th change is a resolve, so the chat gets the Flapping
    notice and PagerDuty a resolve, never a trigger."""
    from dataclasses import replace as dc_replace

    from streams.model.runbooks import EscalationStep, RunbookSet

    paging = dc_replace(
        rset.get("target-down"), escalation=(EscalationStep(0, "pagerduty-primary"), EscalationStep(0, "infra-slack"))
    )
    assert paging.policy.flapping.enabled
    runbooks = RunbookSet(
        tuple(paging if rb.name == "target-down" else rb for rb in rset.runbooks), rset.routing, version="test-paging"
    )
    sim = Sim(Context(verdict=URGENT_DOWN, runbooks=runbooks))
    _flip(sim, [T0, T0 + 2 * MIN, T0 + 4 * MIN, T0 + 6 * MIN], URGENT_DOWN)
    notes = sim.notifications()
    pd = [(e["notify"]["action"], e["notify"]["title"]) for e in notes if e["notify"]["channel"] == "pagerduty"]
    assert pd[0][0] == "trigger" and pd[-1][0] == "resolve", pd
    last = [e for e in sim.decisions[-1][1].all_effects if e["type"] == "notify"]
    assert sim.decisions[-1][1].record["outcome"] == "flapping-notice"
    flapping = [e for e in last if e["notify"]["title"].startswith("Flapping:")]
    assert flapping and all(e["notify"]["channel"] != "pagerduty" for e in flapping)
    assert [e["notify"]["action"] for e in last if e["notify"]["channel"] == "pagerduty"] == ["resolve"]


def test_an_inferred_severity_shows_in_the_message_and_the_record(ctx):
    """Issue 18: when the classifier inferred a severity, the notification says so with its confidence,
    and the decision record says on what basis; a stated one adds nothing."""
    from dataclasses import replace as _replace

    inferred = _replace(
        ctx.verdict, severity="warning", severity_inferred=True, severity_basis="default", severity_confidence=0.41
    )
    sim = Sim(_replace(ctx, verdict=inferred))
    sim.feed(alert(at=T0))
    sim.advance(T0 + 10 * MIN)
    notice = sim.notifications("trigger")[0]["notify"]
    assert notice["fields"]["classified"] == "severity warning inferred (default, p=0.41)"
    record = next(d.record for _, d in sim.decisions if d.record["event_id"] == alert(at=T0)["event_id"])
    assert record["matched"]["severity_basis"] == "default" and record["matched"]["severity_inferred"] == "true"
    stated = Sim(ctx)
    stated.feed(alert(at=T0))
    stated.advance(T0 + 10 * MIN)
    assert "classified" not in stated.notifications("trigger")[0]["notify"]["fields"]
