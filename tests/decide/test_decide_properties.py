"""Property tests: decide is deterministic and the gates keep their invariants on any event sequence.

Hypothesis generates sessions of firing / resolved alerts (several instances, both
sources, warning or urgent), acks, human resolves and re-sent duplicates at random
gaps (from none to twenty minutes, so flapping, grouping and escalation all happen),
with a silence over part of the time. The harness fires timers as the ticker would.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.decide import Context, Verdict, state_bytes
from streams.kafka.codec import default_codec
from streams.model.matchers import parse_matchers
from streams.model.receivers import Receiver
from streams.model.routing import Route, Routing, Timing
from streams.model.runbooks import EscalationStep, Flapping, Notify, Policy, Runbook, RunbookSet
from streams.model.silences import Silence
from tests.decide.helpers import MIN, T0, Sim, alert, webhook

POLICY = Policy(
    cooldown=7 * MIN,
    dedupe_window=10 * MIN,
    max_consecutive=2,
    flapping=Flapping(flips=4, window=10 * MIN, stable_for=10 * MIN),
)
TIMING = Timing(group_wait=30_000, group_interval=5 * MIN, repeat_interval=60 * MIN)
RUNBOOK = Runbook(
    name="prop",
    policy=POLICY,
    steps=(Notify("route"),),
    escalation=(EscalationStep(0, "chat"), EscalationStep(5 * MIN, "oncall"), EscalationStep(15 * MIN, "pager")),
)
RSET = RunbookSet(
    runbooks=(RUNBOOK,),
    routing=Routing(
        receivers={
            "chat": Receiver("chat", "slack"),
            "oncall": Receiver("oncall", "slack"),
            "pager": Receiver("pager", "pagerduty"),
            "log": Receiver("log", "log"),
        },
        route=Route(receiver="chat", timing=TIMING),
    ),
    version="prop-1",
)
SILENCE_START, SILENCE_END = T0 + 60 * MIN, T0 + 120 * MIN
SILENCE = Silence("s-1", parse_matchers(['service="api"']), SILENCE_START, SILENCE_END)
CTX = Context(runbooks=RSET, silences=(SILENCE,))
VERDICTS = {s: Verdict(category="availability", severity=s, classifier="prop") for s in ("warning", "urgent")}

step = st.tuples(
    st.one_of(st.integers(0, 90_000), st.integers(0, 20 * MIN)),
    st.sampled_from(["fire", "fire", "fire", "resolve", "resolve", "ack", "human-resolve", "duplicate"]),
    st.integers(0, 2),
    st.sampled_from(["prometheus", "alertmanager"]),
    st.sampled_from(["warning", "urgent"]),
)


def run(steps, ticker: bool = True) -> Sim:
    sim = Sim(CTX)
    t = T0
    sent: list[dict] = []
    for n, (gap, action, instance, source, severity) in enumerate(steps):
        t += gap
        if action in ("fire", "resolve"):
            event = alert(
                status="firing" if action == "fire" else "resolved",
                at=t,
                instance=f"i{instance}",
                source=source,
                eid=f"e{n}",
            )
        elif action == "ack":
            event = webhook("ack", at=t, eid=f"e{n}")
        elif action == "human-resolve":
            event = webhook("incident.resolved", at=t, source="pagerduty", eid=f"e{n}")
        elif sent:
            event = sent[instance % len(sent)]  # a producer retry: the same event again
        else:
            continue
        sent.append(event)
        sim.feed(event, VERDICTS[severity], ticker=ticker)
    sim.advance(t + 5 * 60 * MIN)
    return sim


def trace(sim: Sim) -> list[tuple[dict, dict, list[dict]]]:
    return sim.trace()


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STEPS = st.lists(step, min_size=1, max_size=60)


@SETTINGS
@given(STEPS)
def test_decide_is_deterministic_byte_for_byte(steps):
    codec = default_codec()

    def encoded(sim: Sim) -> bytes:  # noqa: E306
        out = []
        for _, record, effects in trace(sim):
            out.append(codec.encode("opsloop.Decision", record))
            out.extend(codec.encode("opsloop.Effect", e) for e in effects)
        return b"".join(out) + state_bytes(sim.state or {})

    assert encoded(run(steps)) == encoded(run(steps))


@SETTINGS
@given(STEPS, st.booleans())
def test_never_more_than_max_consecutive_messages_between_resets(steps, ticker):
    sim = run(steps, ticker)
    count = 0
    for event, record, effects in sim.trace():
        if record["matched"].get("cap_reset"):
            # only a human (ack, resolve in PagerDuty) or the session resolving resets the count
            assert event["type"] in ("ack", "incident.resolved", "alert.resolved"), (event["type"], record["matched"])
            count = 0
        if any(e["type"] == "notify" and e["notify"]["action"] == "trigger" for e in effects):
            count += 1
            assert count <= POLICY.max_consecutive, [r["outcome"] for _, r, _ in sim.trace()]


@SETTINGS
@given(STEPS)
def test_the_fold_does_not_depend_on_when_the_ticker_runs(steps):
    """Timers promoted by a prompt ticker, or folded inside the next event's decide: the same
    decisions and effects, byte for byte (the ticker's late copy is then only a duplicate)."""
    codec = default_codec()

    def outputs(sim: Sim) -> tuple[dict, dict]:
        records = {
            r["decision_id"]: codec.encode("opsloop.Decision", r)
            for _, r, _ in sim.trace()
            if r["outcome"] != "duplicate"
        }
        effects = {e["effect_id"]: codec.encode("opsloop.Effect", e) for _, _, es in sim.trace() for e in es}
        return records, effects

    prompt, late = run(steps, ticker=True), run(steps, ticker=False)
    assert outputs(prompt) == outputs(late)
    assert state_bytes(prompt.state or {}) == state_bytes(late.state or {})


@SETTINGS
@given(STEPS)
def test_never_two_notifications_for_one_dedupe_key_inside_its_window(steps):
    last: dict[str, int] = {}
    for _, _, effects in trace(run(steps)):
        for e in effects:
            if e["type"] != "notify":
                continue
            key, at = e["notify"]["dedupe_key"], e["created_at"]
            assert key not in last or at - last[key] >= POLICY.dedupe_window
            last[key] = at


@SETTINGS
@given(STEPS)
def test_nothing_is_triggered_for_a_silenced_matcher_during_its_window(steps):
    for _, _, effects in trace(run(steps)):
        for e in effects:
            if e["type"] == "notify" and e["notify"]["action"] == "trigger":
                assert not SILENCE_START <= e["created_at"] < SILENCE_END, e["notify"]["title"]


@SETTINGS
@given(STEPS)
def test_a_cooldown_is_never_broken(steps):
    """But by an urgent alert's message: a page is not held by a cooldown (Ceph's OSD full firing again was)."""
    times = [
        r["decided_at"]
        for _, r, effects in trace(run(steps))
        if r["matched"].get("notification") in ("initial", "repeat")
        and effects
        and all(e["notify"]["severity"] != "urgent" for e in effects if e["type"] == "notify")
    ]
    assert all(b - a >= POLICY.cooldown for a, b in zip(times, times[1:])), times


@SETTINGS
@given(STEPS)
def test_at_most_one_group_notification_per_group_interval(steps):
    """Within one incident (episode); a resolve and a new firing start a new group, as in Alertmanager."""
    by_episode: dict[str, list[int]] = {}
    for _, r, _ in trace(run(steps)):
        if r["matched"].get("notification") in ("initial", "update", "repeat"):
            by_episode.setdefault(r["matched"]["episode"], []).append(r["decided_at"])
    for times in by_episode.values():
        assert all(b - a >= TIMING.group_interval for a, b in zip(times, times[1:])), times


@SETTINGS
@given(STEPS)
def test_timers_left_pending_belong_to_a_firing_or_flapping_session(steps):
    sim = run(steps)
    state = sim.state or {}
    if state.get("status") != "firing":
        assert all(tid == "flap" for tid in state.get("timers", {})), state.get("timers")
