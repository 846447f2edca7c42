"""The fault harness (issue 16): one fixed input, a fault-free baseline, faults, one report.

A run drives decide and the sinks of real ``opsloop worker`` processes on a real broker,
with the delivery ledger in PostgreSQL and every HTTP receiver of the starter routing
pointed at the scripted fakes of ``tests/sinks/fakes.py`` (200, 429 with Retry-After,
5xx, a hang, accept-then-drop). Events are produced with the same producer ingest uses.

The oracle is the set of notify effect ids (per receiver) a fault-free run of the same
input decides. Event ids are fixed (``traffic`` derives them from name, instance,
status and time, with a fixed t0), so effect ids are too. The timers run on event time
(``OPSLOOP_TIMER_CLOCK=event``) so the decided set depends on the events alone, not on
how a fault paced them.

What a delivery is: a request the fake received and accepted (2xx), or one it received
and then hung on or dropped (the real service would have posted it). Each request is
attributed to its effect id: PagerDuty's ``custom_details.effect_id``, the webhook's
``Idempotency-Key``, and for Slack and Teams (whose payloads carry no id) the exact
body the channel's pure formatter renders for each notify effect on ``outbox``.
"""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.kafka.reader import Record, TopicReader
from streams.model.effects import timer_effects
from streams.settings import ROOT, Settings
from tests.replay.traffic import MIN, traffic
from tests.sinks.fakes import FakeServices

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so event ids (and effect ids) are the same every run
PD_KEY = "R0UT1NGKEY0123456789abcdefSECRET"
LEDGER_CHANNELS = {"slack", "teams", "pagerduty", "email", "webhook"}
HTTP_KINDS = {"slack": "slack", "teams": "teams", "pagerduty": "pagerduty", "webhook": "hook"}
TERMINAL = {"delivered", "dead", "ambiguous", "skipped"}

# Delivery timing for a run: short timeouts and backoff, no rate limits, no breaker in the way.
SINK_ENV = {
    "OPSLOOP_SINK_CONNECT_TIMEOUT_S": "1",
    "OPSLOOP_SINK_READ_TIMEOUT_S": "2",
    "OPSLOOP_SINK_MAX_ATTEMPTS": "5",
    "OPSLOOP_SINK_MAX_TOTAL_S": "30",
    "OPSLOOP_SINK_BACKOFF_BASE_S": "0.1",
    "OPSLOOP_SINK_BACKOFF_MAX_S": "1",
    "OPSLOOP_SINK_AMBIGUOUS_PAUSE_S": "0.5",
    "OPSLOOP_SINK_BREAKER_THRESHOLD": "1000",
    "OPSLOOP_TIMER_CLOCK": "event",
}


def fixed_input(sessions: int, cycles: int = 1, repeats: int = 3, escalating: int = 2) -> list[dict[str, Any]]:
    """Alerts that fire, repeat, get acknowledged (every other session) and resolve; fixed ids.

    The replay traffic's sessions all notify ``infra-slack`` (their severity is warning); the
    ``escalating`` sessions are critical targets down for 20 minutes, unacknowledged, so their
    runbook's chain reaches ``oncall-slack`` at 5 minutes and ``pagerduty-primary`` at 15: every
    HTTP channel of the starter routing that alerts reach gets requests to fault."""
    from tests.decide.helpers import alert

    events = traffic(sessions=sessions, cycles=cycles, t0=T0, repeats=repeats)
    for i in range(escalating):
        name = ("PrometheusTargetMissing", "PostgresqlDown")[i % 2]
        service = f"esc-{i}"
        where = {"instance": f"{service}-1:9100", "service": service, "session": f"acme:alert:{name}:{service}"}
        critical = {"severity": "critical"}
        base = T0 + 500 + i * 1000
        events += [alert(name, at=base + r * MIN, labels=critical, **where) for r in range(18)]
        events.append(alert(name, status="resolved", at=base + 20 * MIN, labels=critical, **where))
    events.sort(key=lambda e: e["occurred_at"])
    return events


def receivers_env(tmp_path: Path, fakes: FakeServices) -> dict[str, str]:
    """A copy of the starter runbooks whose routing points every receiver at the fakes, without rate limits."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir(exist_ok=True)
    for src in (ROOT / "runbooks").glob("*.yaml"):
        (runbooks / src.name).write_text(src.read_text())
    routing = (ROOT / "runbooks" / "routing.yaml").read_text()
    tree = routing[routing.index("\nroute:") :]
    receivers = textwrap.dedent(f"""\
        receivers:
          - name: infra-slack
            channel: slack
            secrets: {{webhook_url: OPSLOOP_FAULTS_SLACK_INFRA}}
            rate_limit: none
          - name: oncall-slack
            channel: slack
            settings: {{mention_groups: [S0ONCALL]}}
            secrets: {{webhook_url: OPSLOOP_FAULTS_SLACK_ONCALL}}
            rate_limit: none
          - name: pagerduty-primary
            channel: pagerduty
            settings: {{source: opsloop, url: "{fakes.url("pagerduty", "pagerduty-primary")}"}}
            secrets: {{routing_key: OPSLOOP_FAULTS_PD_KEY}}
            rate_limit: none
          - name: oncall-email
            channel: email
            settings: {{host: 127.0.0.1, port: 9, security: none, from: opsloop@example.com, to: [oncall@example.com]}}
            rate_limit: none
          - name: teams-ops
            channel: teams
            secrets: {{webhook_url: OPSLOOP_FAULTS_TEAMS}}
            rate_limit: none
          - name: log
            channel: log
          - name: remediate
            channel: remediate
            secrets: {{token: OPSLOOP_FAULTS_REMEDIATION_TOKEN}}
        """)
    (runbooks / "routing.yaml").write_text(receivers + tree)
    return {
        **SINK_ENV,
        "OPSLOOP_RUNBOOKS_DIR": str(runbooks),
        "OPSLOOP_FAULTS_SLACK_INFRA": fakes.url("slack", "infra-slack"),
        "OPSLOOP_FAULTS_SLACK_ONCALL": fakes.url("slack", "oncall-slack"),
        "OPSLOOP_FAULTS_TEAMS": fakes.url("teams", "teams-ops"),
        "OPSLOOP_FAULTS_PD_KEY": PD_KEY,
        "OPSLOOP_FAULTS_REMEDIATION_TOKEN": "remediation-token-SECRET",
    }


def schema_url(postgres_url: str) -> str:
    """A fresh PostgreSQL schema on ``postgres_url``: a run's ledger must not know another run's deliveries."""
    import uuid

    import sqlalchemy as sa

    schema = f"faults_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    sep = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{sep}options=-csearch_path%3D{schema}"


# -- reading what a run did ------------------------------------------------------------


RESULT_TOPICS = ["decisions", "outbox", "deliveries", "outbox.dlq", "events.dlq", "events.timer"]


@dataclass
class Observed:
    """Everything a run left on the result topics, folded."""

    decided: set[str] = field(default_factory=set)  # event ids with a decision
    notify: dict[str, dict[str, Any]] = field(default_factory=dict)  # effect id -> the notify effect
    receipts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # effect id -> statuses
    outbox_dead: set[str] = field(default_factory=set)
    event_dead: list[dict[str, Any]] = field(default_factory=list)
    # every effect on outbox and every timer effect a decision carries (the projector's rows to match)
    effect_ids: set[str] = field(default_factory=set)
    timer_events: set[str] = field(default_factory=set)  # event ids the ticker promoted to events.timer
    decision_ids: set[str] = field(default_factory=set)
    fallback: set[str] = field(default_factory=set)  # event ids the keyword rules decided (the classifier failed)
    # Effects whose delivery went through a timeout or a dead owner's claim with unknown outcome (a receipt
    # "ambiguous", or "delivered" with "unknown outcome" in its error): the one repeat the ledger cannot rule out.
    unknown_outcome: set[str] = field(default_factory=set)
    count: int = 0

    def add(self, records: Iterable[Record]) -> None:
        for r in records:
            self.count += 1
            v = r.value
            if not v:
                continue
            if r.topic == "decisions":
                self.effect_ids.update(e["effect_id"] for e in timer_effects(v))  # projected as effect rows
                self.decided.add(v["event_id"])
                self.decision_ids.add(v["decision_id"])
                if v.get("fallback"):
                    self.fallback.add(v["event_id"])
            elif r.topic == "outbox":
                self.effect_ids.add(v["effect_id"])
                if v.get("type") == "notify":
                    self.notify.setdefault(v["effect_id"], v)
            elif r.topic == "deliveries":
                self.receipts[v["effect_id"]].append(v["status"])
                if v["status"] == "ambiguous" or "unknown outcome" in (v.get("error") or ""):
                    self.unknown_outcome.add(v["effect_id"])
            elif r.topic == "outbox.dlq":
                self.outbox_dead.add(_effect_id_of_dead(v))
            elif r.topic == "events.dlq":
                self.event_dead.append(v)
            elif r.topic == "events.timer":
                self.timer_events.add(v["event_id"])

    def unsettled(self) -> set[str]:
        """Notify effects of a ledger channel without a final receipt or dead letter yet."""
        return {
            eid
            for eid, eff in self.notify.items()
            if eff["notify"]["channel"] in LEDGER_CHANNELS
            and eid not in self.outbox_dead
            and not TERMINAL & set(self.receipts.get(eid, ()))
        }


def _effect_id_of_dead(letter: Mapping[str, Any]) -> str:
    from streams.kafka.codec import default_codec

    try:
        return default_codec().decode(letter["value"], expect="opsloop.Effect")["effect_id"]
    except Exception:  # noqa: BLE001 - a poison outbox record has no effect id
        return f"raw@{letter['partition']}:{letter['offset']}"


def wait_settled(
    settings: Settings,
    events: Iterable[str],
    *,
    poison: int = 0,
    quiet_s: float = 4.0,
    timeout: float = 180.0,
    at_least: int | None = None,
    isolation_level: str = "read_uncommitted",
) -> Observed:
    """Poll the result topics until every event is decided, every poison record dead-lettered,
    every notify effect settled, and nothing new came for ``quiet_s`` (or ``at_least`` decisions)."""
    wanted = set(events)
    obs = Observed()
    state = {"n": -1, "since": time.monotonic()}

    def done(records: list[Record]) -> bool:
        obs.add(records[state.get("read", 0) :])
        state["read"] = len(records)
        if at_least is not None:
            return len(obs.decided) >= at_least
        if obs.count != state["n"]:
            state["n"], state["since"] = obs.count, time.monotonic()
            return False
        return (
            wanted <= obs.decided
            and len(obs.event_dead) >= poison
            and not obs.unsettled()
            and time.monotonic() - state["since"] >= quiet_s
        )

    async def read() -> None:
        async with TopicReader(settings, RESULT_TOPICS, isolation_level=isolation_level) as reader:
            await reader.collect(done, timeout=timeout)

    try:
        asyncio.run(read())
    except TimeoutError:
        missing = sorted(wanted - obs.decided)
        raise AssertionError(
            f"not settled after {timeout:.0f}s: {len(missing)} events undecided (e.g. {missing[:3]}), "
            f"{len(obs.event_dead)}/{poison} poison dead-lettered, {len(obs.unsettled())} effects unsettled"
        ) from None
    return obs


# -- attributing requests to effects -----------------------------------------------------


def body_index(
    notify: Mapping[str, Mapping[str, Any]], routing_dir: Path, env: Mapping[str, str]
) -> dict[str, list[str]]:
    """sha256 of the exact body each Slack / Teams / PagerDuty notify effect renders to -> its effect ids.

    Two effect ids can render the same body (an event re-decided after a kill may notify
    again under another event's id): the requests with that body go to them in turn."""
    from agents.sinks.channels import registry, specs
    from streams.model.receivers import load_receivers, resolve_secrets

    channels = registry()
    receivers = load_receivers(routing_dir / "routing.yaml", channels=specs())
    index: dict[str, list[str]] = defaultdict(list)
    for eid, effect in notify.items():
        n = effect["notify"]
        if n["channel"] not in ("slack", "teams", "pagerduty") or n["receiver"] not in receivers:
            continue
        receiver = receivers[n["receiver"]]
        request = channels[n["channel"]].render(effect, receiver, resolve_secrets(receiver, env))
        index[hashlib.sha256(request.body).hexdigest()].append(eid)
    return index


def effect_of(request: Any, index: Mapping[str, list[str]], taken: Counter[str]) -> str | None:
    if request.kind == "pagerduty":  # a resolve or acknowledge has no payload: found by its body
        details = ((request.json or {}).get("payload") or {}).get("custom_details") or {}
        if details.get("effect_id"):
            return str(details["effect_id"])
    if request.kind == "hook":
        return request.headers.get("Idempotency-Key")
    ids = index.get(hashlib.sha256(request.body).hexdigest()) or []
    return min(ids, key=lambda eid: taken[eid]) if ids else None


def deliveries(fakes: FakeServices, since: int, index: Mapping[str, list[str]]) -> tuple[Counter[str], int]:
    """Requests a receiver took (2xx, or read and then hung on / dropped) per effect id; unattributed count."""
    taken: Counter[str] = Counter()
    unknown = 0
    for request in fakes.requests[since:]:
        if request.errors or (request.answered and 300 <= request.answered):
            continue  # refused (400, 429, 5xx): not a delivery
        eid = effect_of(request, index, taken)
        if eid is None:
            unknown += 1
        else:
            taken[eid] += 1
    return taken, unknown


# -- the report --------------------------------------------------------------------------


@dataclass
class Report:
    scenario: str
    events: int
    poison: int
    faults: Counter[str]
    expected: int  # the oracle's notify effects on ledger channels
    delivered: int
    duplicated: list[str]  # effect ids taken twice or more, beyond the allowed ambiguous repeats
    ambiguous: list[str]  # effect ids taken twice after an injected hang / drop (one repeat each allowed)
    dead: int  # notify effects dead-lettered (outbox.dlq)
    lost: list[str]  # input event ids never decided
    poison_dead: int  # poison records found in events.dlq
    explained: int  # differences explained by the stated rule (same notice, another carrying event)
    missing: list[str]  # oracle effect ids the run did not decide
    extra: list[str]  # effect ids the run decided beyond the oracle
    undelivered: list[str]  # decided ledger-channel effects neither delivered nor dead-lettered
    unattributed: int
    seconds: float
    reasons: list[str] = field(default_factory=list)
    classifier_faults: int = 0  # events the classifier raised on: each must be decided by the keyword rules
    fallback_decided: int = 0
    failures: list[str] = field(default_factory=list)  # a scenario's own checks (the projector caught up, ...)
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        faults = ", ".join(f"{k}×{v}" for k, v in sorted(self.faults.items())) or "none"
        fallback = f"; {self.fallback_decided}/{self.classifier_faults} by fallback" if self.classifier_faults else ""
        return (
            f"| {self.scenario} | {self.events} (+{self.poison + self.classifier_faults} poison) | {faults} | "
            f"{self.expected} | {self.delivered} | {len(self.duplicated)} | {len(self.ambiguous)} | {self.dead} | "
            f"{len(self.lost)} | {self.poison_dead}/{self.poison}{fallback} | −{len(self.missing)} +{len(self.extra)} "
            f"({self.explained} pairs by rule) | {self.seconds:.0f}s |"
        )


HEADER = (
    "| scenario | events | faults | effects expected | delivered | duplicated | ambiguous repeats | "
    "dead-lettered | events lost | poison → events.dlq | decided set −/+ | time |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)

REPORTS: list[Report] = []  # printed at the end of the pytest session (tests/faults/conftest.py)


def summary(reports: Iterable[Report]) -> list[str]:
    """The report table, then each ambiguous repeat, events.dlq reason, note and failed check."""
    reports = list(reports)
    lines = [HEADER, *(rep.row() for rep in reports)]
    for rep in reports:
        lines += [f"{rep.scenario}: ambiguous repeat (one allowed per injected fault): {e}" for e in rep.ambiguous]
        lines += [f"{rep.scenario}: events.dlq reason: {reason}" for reason in rep.reasons]
        lines += [f"{rep.scenario}: {note}" for note in rep.notes]
        lines += [f"{rep.scenario}: FAILED: {problem}" for problem in rep.failures]
    return lines


def report(
    scenario: str,
    events: list[dict[str, Any]],
    obs: Observed,
    oracle: Mapping[str, tuple[str, ...]],  # effect id -> notice, from the fault-free run
    taken: Counter[str],
    *,
    faults: Counter[str],
    ambiguous_budget: int = 0,
    poison: int = 0,
    unattributed: int = 0,
    started: float,
    marked: Sequence[Mapping[str, Any]] = (),  # events the classifier raises on, beyond the fixed input
) -> Report:
    """Compare a run with the oracle (effect id -> receiver of the fault-free run).

    ``marked`` events are not in the fault-free run: they must be decided (by the keyword rules,
    flagged ``fallback``) and their notices delivered once, but their sessions are left out of the
    decided-set comparison."""
    ledger = {eid for eid, e in obs.notify.items() if e["notify"]["channel"] in LEDGER_CHANNELS}
    repeated = sorted(eid for eid in ledger if taken[eid] > 1)
    # A hang, a drop or a kill mid-request leaves the outcome unknown: a non-idempotent channel retries
    # once after a pause (README "Once"; a dead owner's claim is taken over the same way), so up to one
    # repeat per such injected fault is allowed, and listed; only for an effect whose receipt says so.
    ambiguous = [eid for eid in repeated if taken[eid] == 2 and eid in obs.unknown_outcome][:ambiguous_budget]
    duplicated = [eid for eid in repeated if eid not in ambiguous]
    outside = {e["session_key"] for e in marked}
    decided_ids = {eid for eid, e in obs.notify.items() if e["session_key"] not in outside}
    marked_ids = {e["event_id"] for e in marked}
    rep = Report(
        scenario=scenario,
        events=len(events),
        poison=poison,
        faults=faults,
        expected=sum(1 for n in oracle.values() if n[0] in LEDGER_CHANNELS),
        delivered=sum(1 for eid in ledger & decided_ids if taken[eid] >= 1),  # the marked sessions' are not expected
        duplicated=duplicated,
        ambiguous=ambiguous,
        dead=len(ledger & obs.outbox_dead),
        lost=sorted({e["event_id"] for e in [*events, *marked]} - obs.decided),
        poison_dead=len(obs.event_dead),
        explained=explained(sorted(set(oracle) - decided_ids), sorted(decided_ids - set(oracle)), oracle, obs),
        missing=sorted(set(oracle) - decided_ids),
        extra=sorted(decided_ids - set(oracle)),
        undelivered=sorted(eid for eid in ledger if taken[eid] == 0 and eid not in obs.outbox_dead),
        unattributed=unattributed,
        seconds=time.monotonic() - started,
        reasons=sorted({d["reason"][:80] for d in obs.event_dead}),
        classifier_faults=len(marked_ids),
        fallback_decided=len(marked_ids & obs.fallback),
    )
    REPORTS.append(rep)
    print(HEADER)
    print(rep.row())
    return rep


def notice(effect: Mapping[str, Any]) -> tuple[str, ...]:
    """What a person sees: channel, session, receiver, action, title."""
    n = effect["notify"]
    return (n["channel"], effect["session_key"], n["receiver"], n["action"], n["title"])


def oracle_of(obs: Observed) -> dict[str, tuple[str, ...]]:
    """The oracle: effect id -> notice of every notify effect a (fault-free) run decided."""
    return {eid: notice(e) for eid, e in obs.notify.items()}


def explained(missing: list[str], extra: list[str], oracle: Mapping[str, tuple[str, ...]], obs: Observed) -> int:
    """Differences the stated rule explains: the same notice (channel, session, receiver, action,
    title), once on each side, carried by another event. A grouped first notice is sent when the
    group timer fires; whether the ticker's promoted timer event or the session's next event folds
    it depends on when the ticker ran, and its effect id follows the event that carried it."""
    left = Counter(oracle[eid] for eid in missing)
    right = Counter(notice(obs.notify[eid]) for eid in extra)
    return sum(min(left[k], right[k]) for k in left)


def per_receiver(obs: Observed) -> dict[str, int]:
    return dict(Counter(e["notify"]["receiver"] for e in obs.notify.values()))


def check(rep: Report) -> None:
    """What issue 16 asks of every scenario."""
    assert not rep.lost, f"{len(rep.lost)} events lost: {rep.lost[:5]}"
    assert not rep.duplicated, f"duplicate deliveries on ledger channels: {rep.duplicated[:5]}"
    assert rep.poison_dead == rep.poison, f"{rep.poison_dead} of {rep.poison} poison records in events.dlq"
    unexplained = len(rep.missing) + len(rep.extra) - 2 * rep.explained
    assert unexplained == 0, f"decided set differs beyond the rule: -{rep.missing[:5]} +{rep.extra[:5]}"
    assert not rep.undelivered, f"effects neither delivered nor dead-lettered: {rep.undelivered[:5]}"
    assert rep.unattributed == 0, f"{rep.unattributed} requests not attributed to an effect"
    assert rep.fallback_decided == rep.classifier_faults, (
        f"{rep.fallback_decided} of {rep.classifier_faults} events the classifier raised on decided by the keyword rules"
    )
    assert not rep.failures, "; ".join(rep.failures)


# -- driving a run -------------------------------------------------------------------------


class Run:
    """One run of the input under its own topic prefix, consumer group, data dir and ledger schema."""

    def __init__(
        self,
        name: str,
        base_env: Mapping[str, str],
        tmp_path: Path,
        fakes: FakeServices,
        ledger_url: str,
        *,
        classifier_fault: bool = False,
    ) -> None:
        """``classifier_fault``: the workers run through ``tests.faults.faulty_worker``, whose classifier
        raises on a batch holding a marked event (see :meth:`mark`)."""
        import uuid

        from streams.devtools.processes import WorkerProcess
        from tests.faults.eos_worker import GUARANTEE_ENV, EosWorkerProcess
        from tests.faults.faulty_worker import FaultyWorkerProcess

        tag = uuid.uuid4().hex[:8]
        self.name = name
        self.dir = tmp_path / "".join(c if c.isalnum() else "-" for c in name).strip("-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **base_env,
            **receivers_env(self.dir, fakes),
            "OPSLOOP_TOPIC_PREFIX": f"f{tag}.",
            "OPSLOOP_APP_ID": f"opsloop-f{tag}",
            "OPSLOOP_DATA_DIR": str(self.dir / "data"),
            "OPSLOOP_SINK_DATABASE_URL": ledger_url,
            "OPSLOOP_SINK_SINGLE_NODE": "false",  # the ledger is PostgreSQL: shared, outlives any worker
        }
        self.settings = _settings(self.env)
        self.fakes = fakes
        self.since = len(fakes.requests)
        self.faults: Counter[str] = Counter()
        self.ambiguous_budget = 0
        self.workers: list[Any] = []
        self._worker = FaultyWorkerProcess if classifier_fault else WorkerProcess
        if base_env.get(GUARANTEE_ENV):  # the exactly-once experiment (tests/faults/eos_worker.py)
            assert not classifier_fault, "the classifier fault and the exactly-once experiment use different wrappers"
            self._worker = EosWorkerProcess
        # Under transactions, what a run decided is what was committed (an aborted batch is redone).
        self.isolation = "read_committed" if base_env.get(GUARANTEE_ENV) else "read_uncommitted"
        self.ledger_url = ledger_url
        self.marked: list[dict[str, Any]] = []
        self.scripted: list[tuple[str, str, str, bool]] = []
        self.projector: Any = None
        self.started = time.monotonic()
        _create_topics(self.settings)

    # workers
    def start_worker(self) -> Any:
        worker = self._worker(self.env, self.dir / f"worker-{len(self.workers)}.log").start()
        self.workers.append(worker)
        return worker

    def kill(self, worker: Any) -> None:
        """SIGKILL. A delivery in flight leaves a claim whose outcome is unknown: for a channel without
        idempotency, taking it over is the ambiguous path (one repeat allowed per kill)."""
        worker.kill()
        self.fault("SIGKILL worker", ambiguous=True)

    def fault(self, kind: str, *, ambiguous: bool = False) -> None:
        """Count an injected fault; ``ambiguous``: it may leave one delivery's outcome unknown (one repeat allowed)."""
        self.faults[kind] += 1
        self.ambiguous_budget += int(ambiguous)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive:
                worker.stop()
        if self.projector is not None:
            self.projector.stop()

    def wipe_data_dir(self) -> None:
        """The worker's data directory deleted (a lost disk): tables come back from their changelogs."""
        import shutil

        assert not any(w.alive for w in self.workers), "wipe the data dir of a stopped host only"
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        self.fault("data dir deleted")

    # input
    def produce(self, events: list[dict[str, Any]]) -> None:
        from tests.replay.traffic import produce

        produce(self.settings, events)

    def poison(self, records: list[tuple[str, bytes]]) -> None:
        """Raw values appended to events.telemetry (keyed ``poison``), each counted as a fault of its kind."""
        from streams.kafka.producer import EventProducer

        async def run() -> None:
            async with EventProducer(self.settings) as producer:
                for _, value in records:
                    await producer.send_raw("events.telemetry", b"poison", value)

        asyncio.run(run())
        for kind, _ in records:
            self.faults[f"poison: {kind}"] += 1

    def mark(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` labelled so the faulty worker's classifier raises on its batch; produced with the rest."""
        from tests.faults.faulty_worker import FAULT_LABEL, RAISES

        marked = {**event, "labels": {**event["labels"], FAULT_LABEL: RAISES}}
        self.marked.append(marked)
        self.faults["poison: classifier raises"] += 1
        return marked

    # the projector
    def start_projector(self) -> None:
        """``opsloop projector`` into this run's schema (the same database as the ledger)."""
        from tests.faults.projector import ProjectorProcess

        env = {**self.env, "DATABASE_URL": self.ledger_url}
        self.projector = ProjectorProcess(env, self.dir / "projector.log").start()

    def script(self, kind: str, receiver: str, *answers: Any, fault: str, ambiguous: bool = False) -> None:
        """Script a receiver's next answers; a fault no request reached is taken back at the report."""
        self.fakes.script(kind, receiver, *answers)
        self.scripted.append((kind, receiver, fault, ambiguous))
        self.fault(fault, ambiguous=ambiguous)

    def unreached(self) -> list[str]:
        """Take back the scripted faults no request reached (the count says what was injected, not planned)."""
        pending = Counter({(k, r): self.fakes.unscript(k, r) for k, r in {(k, r) for k, r, _, _ in self.scripted}})
        out = []
        for kind, receiver, fault, ambiguous in reversed(self.scripted):  # the last scripted are the unreached
            if pending[(kind, receiver)] > 0:
                pending[(kind, receiver)] -= 1
                self.faults[fault] -= 1
                self.faults += Counter()  # drop zero counts
                self.ambiguous_budget -= int(ambiguous)
                out.append(f"{fault} scripted on {receiver} but no request reached it")
        return out

    def wait_decisions(self, at_least: int, timeout: float = 120.0) -> int:
        """Until ``at_least`` events are decided; returns how many are."""
        return len(
            wait_settled(self.settings, (), at_least=at_least, timeout=timeout, isolation_level=self.isolation).decided
        )

    # the end
    def settle(self, events: list[dict[str, Any]], *, poison: int = 0, timeout: float = 180.0) -> Observed:
        wanted = {e["event_id"] for e in [*events, *self.marked]}
        return wait_settled(self.settings, wanted, poison=poison, timeout=timeout, isolation_level=self.isolation)

    def taken(self, obs: Observed) -> tuple[Counter[str], int]:
        index = body_index(obs.notify, self.dir / "runbooks", self.env)
        return deliveries(self.fakes, self.since, index)

    def report(
        self, events: list[dict[str, Any]], obs: Observed, oracle: Mapping[str, tuple[str, ...]], poison: int = 0
    ) -> Report:
        taken, unknown = self.taken(obs)
        self.explain(obs, taken, oracle)
        unreached = self.unreached()
        rep = report(
            self.name,
            events,
            obs,
            oracle,
            taken,
            faults=self.faults,
            ambiguous_budget=self.ambiguous_budget,
            poison=poison,
            unattributed=unknown,
            started=self.started,
            marked=self.marked,
        )
        rep.notes.extend(unreached)
        return rep

    def explain(self, obs: Observed, taken: Counter[str], oracle: Mapping[str, tuple[str, ...]]) -> None:
        """Print each repeated or differing effect with its event, receiver, action and receipts."""
        for eid in sorted(e for e in obs.notify if taken[e] > 1):
            eff = obs.notify[eid]
            n = eff["notify"]
            print(
                f"  repeat {eid}: taken {taken[eid]}x {n['receiver']} {n['action']} event {eff['event_id']}"
                f" receipts {obs.receipts.get(eid)}"
            )
        outside = {e["session_key"] for e in self.marked}  # not in the fault-free run: not compared
        for eid in sorted({e for e, eff in obs.notify.items() if eff["session_key"] not in outside} ^ set(oracle)):
            eff = obs.notify.get(eid)
            where = "extra" if eff else "missing"
            what = (
                f"{eff['notify']['receiver']} {eff['notify']['action']} event {eff['event_id']} {eff['session_key']}"
                if eff
                else oracle[eid]
            )
            print(f"  {where} {eid}: {what}")


def _settings(env: Mapping[str, str]) -> Settings:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, dict(env)):
        return Settings.from_env()


def _create_topics(settings: Settings) -> None:
    """The catalogue's topics and the app's table changelogs (tests/support/changelogs.py says why)."""
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue
    from tests.support.changelogs import create_changelog_topics

    asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    create_changelog_topics(settings)


def baseline(
    base_env: Mapping[str, str], tmp_path: Path, fakes: FakeServices, ledger_url: str, events: list[dict[str, Any]]
) -> tuple[dict[str, tuple[str, ...]], Report]:
    """The fault-free run: one worker, all answers 200. Its decided notify effects are the oracle."""
    run = Run("baseline", base_env, tmp_path, fakes, ledger_url)
    run.start_worker()
    try:
        run.produce(events)
        obs = run.settle(events)
    finally:
        run.stop_all()
    oracle = oracle_of(obs)
    rep = run.report(events, obs, oracle)
    check(rep)
    return oracle, rep
