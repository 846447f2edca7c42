"""Scenarios on the real broker with real worker processes: storm, escalation, ack, resolve,
flapping, silences and inhibition across sessions, and a worker SIGKILLed mid-storm."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

import pytest

from classifier.dataset import alert_name
from streams.kafka.batchsend import partition_for_key
from streams.model.silences import silence_event as make_silence_event
from streams.model.silences import silence_from_json
from tests.decide.scenario import (
    MIN,
    T0,
    Topics,
    alert,
    runbooks_with_schedules_enabled,
    sentinel_alert,
    tick,
    webhook,
    worker_env,
)

pytestmark = pytest.mark.integration

# Ten warning rules of the catalogue whose runbooks (starter set) neither escalate at
# warning nor verify, so every notification of a session is a group notification.
STORM_RULES = (
    "Host clock skew",
    "Host swap is filling up",
    "Host Network Receive Errors",
    "Kubernetes pod crash looping",
    "Host unusual network throughput in",
    "Host systemd service crashed",
    "Host conntrack limit",
    "Host clock not synchronising",
    "Host out of memory",
    "Host Network Transmit Errors",
)
SERVICES = tuple(f"svc-{k}" for k in range(10))
GROUP_INTERVAL = 5 * MIN
RULE_OF = {alert_name(r): r for r in STORM_RULES}


def storm(at: int) -> list[dict]:
    """1,000 firing alerts: 10 services x 10 alert names x 10 instances = 100 sessions of 10."""
    events = []
    for s, service in enumerate(SERVICES):
        for r, name in enumerate(STORM_RULES):
            for i in range(10):
                n = len(events)
                events.append(
                    alert(
                        name, service=service, instance=f"{service}-{i}:9100", at=at + n * 5, eid=f"storm-{s}-{r}-{i}"
                    )
                )
    return events


CRON_SESSION = "default:schedule:nightly-drift-scan"
CRON_SLOT = 1_700_028_000_000  # 2023-11-15 06:00 UTC, the slot after T0


def dispatched(topics: Topics) -> list[dict]:
    seen: dict[str, dict] = {}
    for e in topics.effects():
        if e["type"] == "remediate" and e["session_key"] == CRON_SESSION:
            seen.setdefault(e["effect_id"], e)
    return sorted(seen.values(), key=lambda e: e["created_at"])


def topics_partitions(settings) -> int:
    from streams.kafka.catalogue import by_name, load_catalogue

    return by_name(load_catalogue(settings.topics_file))["events.telemetry"].partitions


def group_notifications(topics: Topics, sessions: set[str]) -> dict[str, list[int]]:
    """Per session of ``sessions``, the times of its group notifications (first message, updates, repeats)."""
    kinds = {d["event_id"]: d["matched"].get("notification") for d in topics.decisions() if d["outcome"] != "duplicate"}
    out: dict[str, list[int]] = defaultdict(list)
    for note in topics.notifications():
        if note["session_key"] in sessions and kinds.get(note["event_id"]) in ("initial", "update", "repeat"):
            out[note["session_key"]].append(note["created_at"])
    return out


def test_storm_of_1000_alerts_gives_one_notification_per_session_per_group_interval(topics, worker_factory, tmp_path):
    worker_factory(**worker_env(tmp_path))
    events = storm(T0)
    sessions = sorted({e["session_key"] for e in events})
    assert len(events) == 1000 and len(sessions) == 100
    # The storm's own notifications: the sentinels (see scenario.py) get their own, in their own sessions.
    storm_notes = lambda t: [n for n in t.notifications() if n["session_key"] in set(sessions)]  # noqa: E731
    # The ticker's chance to (wrongly) fire an update early: a sentinel due at the watermark the early ticks set.
    sentinel = sentinel_alert(sessions[0], T0 + 5 * MIN, topics_partitions(topics))

    async def run() -> Topics:
        async with Topics(topics) as t:
            await t.push(events)
            await t.push(events[:100])  # producer retries: the same ids again
            await t.until(lambda t: t.decided(e["event_id"] for e in events), 120, "decisions for the storm")

            # group_wait holds the storm: every alert got an effect at once (the flush timer), nobody was told yet.
            # The reader may see a batch's decisions before its outbox records (two topics): wait for those too.
            def every_alert_has_an_effect(t: Topics) -> bool:
                by_event = Counter(x["event_id"] for x in t.effects())
                return all(by_event[e["event_id"]] >= 1 for e in events)

            await t.until(every_alert_has_an_effect, 60, "every alert's effect on outbox")
            assert t.notifications() == []
            await t.push(tick(s, T0 + 40_000) for s in sessions)
            await t.until(lambda t: len(t.notifications()) >= 100, 60, "100 group notifications")
            # a second wave: one new alert per session; its update waits for group_interval
            wave = [
                alert(
                    RULE_OF[e["labels"]["alertname"]],
                    service=e["labels"]["service"],
                    instance="late-1:9100",
                    at=T0 + 60_000,
                    eid=f"late-{e['event_id']}",
                )
                for e in events[::10]
            ]
            await t.push(wave)
            early = [tick(s, T0 + 5 * MIN) for s in sessions]
            await t.push(early)
            await t.until(lambda t: t.decided(e["event_id"] for e in wave + early), 60, "decisions for the wave")
            # every timer due by T0+5m is promoted, decided and read once the sentinel's is
            await t.push([sentinel])
            await t.ticker_passed(sentinel, 60, "the ticker's pass at T0+5m")
            assert len(storm_notes(t)) == 100, "an update before group_interval"
            await t.push(tick(s, T0 + 6 * MIN) for s in sessions)
            await t.until(lambda t: len(storm_notes(t)) >= 200, 60, "100 updates after group_interval")
            await t.settled(sessions[0], T0 + 6 * MIN, 60, "the storm settled")
            return t

    t = asyncio.run(run())
    times = group_notifications(t, set(sessions))
    assert sorted(times) == sessions
    for session, sent in times.items():
        assert len(sent) == 2, (session, sent)
        assert sent[1] - sent[0] >= GROUP_INTERVAL, (session, sent)
    assert len(storm_notes(t)) == 200
    first = [n for n in storm_notes(t) if "(+9 more)" in n["notify"]["title"]]
    assert len(first) == 100, "the first message of each session lists its 10 alerts"
    retried = Counter(d["outcome"] for d in t.decisions() if d["event_id"].startswith("storm-"))
    assert retried["duplicate"] == 100 and retried["grouped"] == 1000


def test_escalation_ack_resolve_flapping_silence_inhibition_and_cron_on_a_running_worker(
    topics, worker_factory, tmp_path
):
    worker_factory(**worker_env(tmp_path), OPSLOOP_RUNBOOKS_DIR=str(runbooks_with_schedules_enabled(tmp_path)))
    down = alert("Prometheus target missing", service="api", instance="api-1:9100", at=T0)  # urgent: escalates
    s1 = down["session_key"]
    acked = alert("Prometheus target missing", service="web", instance="web-1:9100", at=T0)  # urgent: acked early
    s2 = acked["session_key"]
    flap = [
        alert(
            "Kubernetes pod crash looping",
            service="jobs",
            instance="jobs-1:9100",
            at=T0 + k * MIN,
            status="firing" if k % 2 == 0 else "resolved",
            source="alertmanager",
            eid=f"flap-{k}",
        )
        for k in range(8)
    ]
    s3 = flap[0]["session_key"]
    # the event `opsloop silence add` produces (built by the same function; the CLI stamps it with the
    # wall clock, which would move this test's event time forward by years)
    quiet_payments = silence_from_json(
        {
            "matchers": ['service="payments"'],
            "starts_at": T0 - MIN,
            "ends_at": T0 + 2 * 60 * MIN,
            "created_by": "alice",
            "comment": "migration",
        }
    )
    silence_id = quiet_payments.silence_id
    silence_event = make_silence_event(quiet_payments, org="acme", now_ms=T0 - MIN, actor="alice")
    muted = alert("Prometheus target missing", service="payments", instance="pay-1:9100", at=T0, source="alertmanager")
    s4 = muted["session_key"]
    # the same alert on the same host, already critical, in a session of its own (a sessions.yaml that keys by
    # severity, say): the inhibitors table carries it to the warning's session
    critical = alert("Host swap is filling up", service="orders", instance="db-1:9100", at=T0, source="alertmanager")
    critical["labels"]["severity"] = "critical"
    critical["session_key"] += ":critical"
    warning = alert("Host swap is filling up", service="orders", instance="db-1:9100", at=T0 + 1000)
    s5 = warning["session_key"]
    # S6 gets no event after its alert: only the ticker can fire its timer. Event time moves on
    # its partition through another session that hashes to the same partition.
    quiet = alert("Prometheus target missing", service="quiet", instance="quiet-1:9100", at=T0)
    s6 = quiet["session_key"]
    partitions = topics_partitions(topics)
    neighbour = next(
        k
        for k in (f"acme:alert:Neighbour:{i}" for i in range(1000))
        if partition_for_key(k.encode(), partitions) == partition_for_key(s6.encode(), partitions)
    )

    async def run() -> Topics:
        async with Topics(topics) as t:
            await t.push([quiet])
            await t.until(lambda t: t.decided([quiet["event_id"]]), 60, "the quiet session's alert")
            await t.push([tick(neighbour, T0 + 31_000)])
            await t.until(lambda t: len(t.notifications(s6)) == 1, 60, "the ticker firing a quiet session's timer")
            await t.push([silence_event, critical])
            await t.until(
                lambda t: t.decided([silence_event["event_id"], critical["event_id"]]), 60, "silence and critical"
            )
            await t.push([down, acked, muted, warning, *flap])
            await t.push([tick(s, T0 + 31_000) for s in (s1, s2, s5)])
            await t.until(
                lambda t: len(t.notifications(s1)) == 1 and len(t.notifications(s2)) == 1, 60, "first messages"
            )
            early_ack = webhook("ack", s2, T0 + 2 * MIN)
            await t.push([early_ack])
            # events of one session on two topics (webhook, telemetry) have no order between them:
            # the ack is decided before event time moves past the escalation step
            await t.until(lambda t: t.decided([early_ack["event_id"]]), 60, "the early ack")
            await t.push([tick(s, T0 + 5 * MIN + 32_000) for s in (s1, s2)])
            await t.until(lambda t: len(t.notifications(s1)) == 2, 60, "escalation to on-call")
            await t.push([tick(s, T0 + 15 * MIN + 32_000) for s in (s1, s2)])
            await t.until(lambda t: len(t.notifications(s1)) == 3, 60, "escalation to PagerDuty")
            ack = webhook("ack", s1, T0 + 16 * MIN, actor="bob")
            await t.push([ack])
            await t.until(lambda t: len(t.notifications(s1)) == 4, 60, "PagerDuty acknowledge")
            later = [tick(s, T0 + 40 * MIN) for s in (s1, s2, s3, s4, s5)]
            await t.push(later)
            await t.until(lambda t: t.decided(e["event_id"] for e in later), 60, "late ticks")
            await t.until(
                lambda t: any(
                    n["notify"]["action"] == "resolve" and n["created_at"] >= T0 + 17 * MIN for n in t.notifications(s3)
                ),
                60,
                "the flapping session stable again",
            )
            # cron: event time reaches 06:00:10 UTC next morning on the nightly drift scan's partition
            await t.push([tick(CRON_SESSION, CRON_SLOT + 10_000)])
            await t.until(lambda t: len(dispatched(t)) == 1, 60, "the 06:00 slot dispatched")
            await t.push([tick(CRON_SESSION, CRON_SLOT + 2 * MIN)])
            await t.until(lambda t: len(dispatched(t)) == 3, 60, "the other targets, staggered")
            resolved = alert(
                "Prometheus target missing", service="api", instance="api-1:9100", at=T0 + 41 * MIN, status="resolved"
            )
            await t.push([resolved])
            await t.until(lambda t: len(t.notifications(s1)) == 6, 60, "resolve to both receivers told")
            await t.settled(s1, T0 + 41 * MIN, 60, "the scenario settled")
            return t

    t = asyncio.run(run())
    # S1: on-call Slack (the route of an urgent alert), a reminder there, then PagerDuty, on schedule; the ack
    # stops it; the resolve closes it
    n1 = t.notifications(s1)
    assert [(n["notify"]["receiver"], n["notify"]["action"]) for n in n1[:4]] == [
        ("oncall-slack", "trigger"),
        ("oncall-slack", "trigger"),
        ("pagerduty-primary", "trigger"),
        ("pagerduty-primary", "acknowledge"),
    ]
    # event time: the group flush at T0+30s (group_wait), the steps 5 and 15 minutes after it
    assert [n["created_at"] for n in n1[:3]] == [T0 + 30_000, T0 + 30_000 + 5 * MIN, T0 + 30_000 + 15 * MIN]
    resolves = {n["notify"]["receiver"]: n["notify"] for n in n1[4:]}
    assert set(resolves) == {"oncall-slack", "pagerduty-primary"} and len(n1) == 6
    assert all(r["action"] == "resolve" for r in resolves.values())
    pd_trigger = n1[2]["notify"]
    assert resolves["pagerduty-primary"]["thread_key"] == pd_trigger["thread_key"] == s1
    assert any(link["label"] == "Acknowledge" and "sig=" in link["url"] for link in n1[0]["notify"]["links"])
    # S2: acknowledged before the first step: nobody else is told
    assert [n["notify"]["receiver"] for n in t.notifications(s2)] == ["oncall-slack"]
    # S3: flapping gives one flapping notice, then quiet until stable (10m after the last flip at T0+7m);
    # once stable, one message says where it ended (resolved)
    n3 = t.notifications(s3)
    notices = [n for n in n3 if n["notify"]["title"].startswith("Flapping:")]
    assert len(notices) == 1
    after = [n for n in n3 if n["created_at"] > notices[0]["created_at"]]
    assert [n["notify"]["action"] for n in after] == ["resolve"]
    assert after[0]["created_at"] >= T0 + 7 * MIN + 10 * MIN
    # S4: silenced through an event (kept in a global table): nothing
    assert t.notifications(s4) == []
    d4 = [d for d in t.decisions() if d["session_key"] == s4 and d["event_id"] == muted["event_id"]]
    assert d4 and any(g["gate"] == "silence" and g["verdict"] == "stop" for g in d4[0]["gates"])
    assert silence_id in d4[0]["matched"]["silence"] and silence_id in d4[0]["matched"]["inputs.silences"]
    # S5: the orders host's swap is critical already (another session): the warning of it is inhibited
    assert t.notifications(s5) == []
    d5 = [d for d in t.decisions() if d["session_key"] == s5 and d["matched"].get("inhibit")]
    assert d5 and alert_name("Host swap is filling up") in d5[0]["matched"]["inhibit"]
    assert len(t.notifications(critical["session_key"])) >= 1
    # cron: the nightly drift scan's slot ran once, its three targets 30 s apart (event time)
    runs = dispatched(t)
    assert [r["remediate"]["params"]["target"] for r in runs] == ["infra-live", "infra-staging", "platform-modules"]
    # (the slot was folded at 06:00:10, when event time reached it; the stagger counts from then)
    assert [r["created_at"] - CRON_SLOT for r in runs] == [0, 40_000, 70_000]
    assert [r["remediate"]["params"]["slot"] for r in runs] == [str(CRON_SLOT)] * 3
    assert all(
        r["remediate"]["action"] == "dispatch-scan" and r["remediate"]["params"]["scan_type"] == "drift" for r in runs
    )
    # S6: its first message came from a timer event the ticker promoted (not from any event of S6)
    [n6] = [n for n in t.notifications(s6) if n["notify"]["action"] == "trigger"][:1]
    timer_decision = next(d for d in t.decisions() if d["event_id"] == n6["event_id"] and d["outcome"] != "duplicate")
    assert timer_decision["kind"] == "timer" and timer_decision["matched"]["timer"] == "grp:1"


def test_worker_killed_mid_storm_resumes_with_its_state_and_repeats_nothing(topics, worker_factory, tmp_path):
    env = worker_env(tmp_path)
    first = worker_factory(**env)
    urgent = [
        alert(
            "Prometheus target missing",
            service=f"u{k}",
            instance=f"u{k}-{i}:9100",
            at=T0 + k * 10 + i,
            eid=f"u-{k}-{i}",
        )
        for k in range(30)
        for i in range(10)
    ]
    warn = [
        alert("Host out of memory", service=f"w{k}", instance=f"w{k}-{i}:9100", at=T0 + k * 10 + i, eid=f"w-{k}-{i}")
        for k in range(30)
        for i in range(10)
    ]
    phase_a = urgent + warn
    u_sessions = sorted({e["session_key"] for e in urgent})
    w_sessions = sorted({e["session_key"] for e in warn})
    sessions = u_sessions + w_sessions
    flappers = w_sessions[:10]  # resolved and fired again after the restart: their cooldown (15m) must hold
    killed_at: list[int] = []

    async def run() -> Topics:
        nonlocal first
        async with Topics(topics) as t:
            await t.push(phase_a)
            await t.push(tick(s, T0 + 31_000) for s in sessions)
            await t.until(lambda t: len(t.notifications()) >= 60, 180, "first messages of 60 sessions")
            # phase B: Prometheus re-sends every alert (new event ids, same alerts) -- mid-storm, SIGKILL
            resends = [
                dict(e, event_id=f"resend-{e['event_id']}", occurred_at=e["occurred_at"] + 60_000) for e in phase_a
            ]
            resends += [
                dict(e, event_id=f"resend2-{e['event_id']}", occurred_at=e["occurred_at"] + 90_000) for e in phase_a
            ]
            before = len(t.decisions())
            await t.push(resends[:600])
            await t.until(lambda t: len(t.decisions()) >= before + 200, 60, "part of the re-sends decided")
            first.kill()
            killed_at.append(sum(d["event_id"].startswith("resend") for d in t.decisions()))
            await t.push(resends[600:])  # the storm goes on while no worker runs
            worker_factory(**env)
            await t.until(
                lambda t: t.decided(e["event_id"] for e in resends), 180, "every re-send decided after restart"
            )
            # the flappers resolve (all ten alerts) and one alert fires again within the cooldown
            clears = [
                dict(
                    e,
                    event_id=f"clear-{e['event_id']}",
                    type="alert.resolved",
                    occurred_at=T0 + 3 * MIN,
                    payload={**e["payload"], "status": "resolved"},
                )
                for e in warn
                if e["session_key"] in flappers
            ]
            again = [
                dict(e, event_id=f"again-{e['event_id']}", occurred_at=T0 + 4 * MIN)
                for e in warn
                if e["session_key"] in flappers and e["event_id"].endswith("-0")
            ]
            await t.push(clears)
            await t.until(lambda t: t.decided(e["event_id"] for e in clears), 60, "clears")
            await t.push(again)
            await t.push(tick(s, T0 + 5 * MIN + 32_000) for s in sessions)
            await t.until(
                lambda t: sum("(unacknowledged for" in n["notify"]["title"] for n in t.notifications()) >= 30,
                60,
                "30 escalations from timers scheduled before the kill",
            )
            # (the watermark is per partition: ticking every session moves them all)
            await t.push(tick(s, T0 + 16 * MIN) for s in sessions)
            await t.until(
                lambda t: (
                    sum(n["notify"]["action"] == "trigger" for s in flappers for n in t.notifications(s)) >= 20
                    and sum(n["notify"]["receiver"] == "pagerduty-primary" for n in t.notifications()) >= 30
                ),
                60,
                "flappers notified after the cooldown, urgent sessions paged",
            )
            await t.settled(sessions[0], T0 + 16 * MIN, 60, "the restarted worker settled")
            return t

    t = asyncio.run(run())
    # no notification repeated: a re-processed event yields the same effect id with the same content
    by_id: dict[str, bytes] = {}
    for effect in t.effects():
        blob = json.dumps(effect, sort_keys=True).encode()
        assert by_id.setdefault(effect["effect_id"], blob) == blob
    for s in u_sessions:
        kinds = [(n["notify"]["receiver"], n["notify"]["action"]) for n in t.notifications(s)]
        assert kinds == [("oncall-slack", "trigger"), ("oncall-slack", "trigger"), ("pagerduty-primary", "trigger")], (
            s,
            kinds,
        )
    for s in w_sessions:
        triggers = [n for n in t.notifications(s) if n["notify"]["action"] == "trigger"]
        if s in flappers:
            assert len(triggers) == 2, (s, [n["notify"]["title"] for n in triggers])
            assert triggers[1]["created_at"] - triggers[0]["created_at"] >= 15 * MIN, "cooldown broken"
        else:
            assert len(triggers) == 1, (s, [n["notify"]["title"] for n in triggers])
    assert 0 < killed_at[0] < 1200, "the worker was killed mid-storm"
    # the message cap counted on across the restart: the page is the 3rd message of 6 allowed
    paged = {n["event_id"] for n in t.notifications() if n["notify"]["receiver"] == "pagerduty-primary"}
    caps = [g["reason"] for d in t.decisions() if d["event_id"] in paged for g in d["gates"] if g["gate"] == "cap"]
    assert len(caps) >= 30 and set(caps) == {"3 of 6"}, Counter(caps)
    repeats = Counter(d["outcome"] for d in t.decisions() if d["event_id"].startswith("resend"))
    assert set(repeats) <= {"repeat", "duplicate"} and repeats["repeat"] >= 600


def test_silence_add_produces_a_silence_event(topics, capsys):
    from streams.cli.main import main
    from streams.kafka.reader import TopicReader

    assert (
        main(
            [
                "silence",
                "add",
                'service="payments"',
                'env!="dev"',
                "--duration",
                "2h",
                "--comment",
                "migration",
                "--by",
                "alice",
                "--org",
                "acme",
            ]
        )
        == 0
    )
    sid = capsys.readouterr().out.split()[1].rstrip(":")

    async def read():
        async with TopicReader(topics, ["events.webhook"]) as reader:
            return await reader.collect(lambda rs: len(rs) >= 1, timeout=30)

    [record] = asyncio.run(read())
    event = record.value
    assert (event["type"], event["session_key"], event["payload"]["actor"]) == (
        "silence.created",
        "acme:silences",
        "alice",
    )
    body = json.loads(event["payload"]["body_json"])
    assert body["id"] == sid and body["matchers"] == ['service="payments"', 'env!="dev"']
    assert body["ends_at"] - body["starts_at"] == 2 * 3_600_000
