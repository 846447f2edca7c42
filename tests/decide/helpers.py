"""Event builders and a fold harness for the decide tests.

:class:`Sim` folds events for one session the way a worker does, with the ticker
simulated: before each event, every pending timer due at or before the event's time
fires first (as the ``timer.fired`` event the ticker would promote), oldest first.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.sinks.channels import specs
from streams.core.decide import Context, Decision, Verdict, decide
from streams.core.timers import timer_event
from streams.model.records import derived_id
from streams.model.runbooks import RunbookSet, load_runbook_set

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
T0 = 1_700_000_000_000
MIN = 60_000
SESSION = "acme:alert:TargetDown:api"


def starter_set() -> RunbookSet:
    return load_runbook_set(RUNBOOKS, channels=specs())


def live_remediation_set(tmp_path: Path) -> RunbookSet:
    """The starter set with high-cpu's remediation run for real (dry_run: false): a verification after a dry run
    changes nothing to verify, so what verification does is seen on this one."""
    target = tmp_path / "runbooks-live"
    shutil.copytree(RUNBOOKS, target)
    high_cpu = target / "high-cpu.yaml"
    high_cpu.write_text(high_cpu.read_text().replace("dry_run: true", "dry_run: false"))
    return load_runbook_set(target, channels=specs())


def alert(
    name: str = "PrometheusTargetMissing",
    *,
    status: str = "firing",
    at: int = T0,
    instance: str = "api-1:9100",
    service: str = "api",
    session: str = SESSION,
    source: str = "prometheus",
    eid: str | None = None,
    labels: dict[str, str] | None = None,
    org: str = "acme",
) -> dict[str, Any]:
    lbl = {"alertname": name, "instance": instance, "service": service, **(labels or {})}
    fingerprint = derived_id("fp", org, *(f"{k}={v}" for k, v in sorted(lbl.items())))[:16]
    return {
        "event_id": eid or derived_id("ev", name, instance, status, str(at)),
        "session_key": session,
        "session_rule": "test",
        "kind": "telemetry",
        "type": "alert.firing" if status == "firing" else "alert.resolved",
        "source": source,
        "org": org,
        "occurred_at": at,
        "received_at": at,
        "labels": lbl,
        "annotations": {"summary": f"{name} on {instance}", "description": f"{name} has been firing on {instance}."},
        "payload": {
            "status": status,
            "starts_at": at,
            "ends_at": None,
            "generator_url": "http://prometheus:9090/graph",
            "fingerprint": fingerprint,
            "metric": None,
            "value": None,
        },
    }


def webhook(
    etype: str,
    *,
    at: int,
    session: str = SESSION,
    source: str = "opsloop",
    actor: str = "alice",
    subject: str = "",
    body: dict | None = None,
    org: str = "acme",
    eid: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": eid or derived_id("wh", etype, session, str(at), actor),
        "session_key": session,
        "session_rule": "test",
        "kind": "webhook",
        "type": etype,
        "source": source,
        "org": org,
        "occurred_at": at,
        "received_at": at,
        "labels": {},
        "annotations": {},
        "payload": {
            "provider": source,
            "action": etype.rsplit(".", 1)[-1],
            "delivery_id": "",
            "subject": subject or session,
            "url": "",
            "actor": actor,
            "body_json": json.dumps(body or {}),
        },
    }


def sample(
    metric: str, value: float, *, at: int, session: str = "acme:metric:node-1", instance: str = "node-1"
) -> dict[str, Any]:
    return {
        "event_id": derived_id("sample", metric, str(value), str(at), session),
        "session_key": session,
        "kind": "telemetry",
        "type": "metric.sample",
        "source": "prometheus",
        "org": "acme",
        "occurred_at": at,
        "received_at": at,
        "labels": {"instance": instance},
        "annotations": {},
        "payload": {
            "status": "",
            "starts_at": None,
            "ends_at": None,
            "generator_url": "",
            "fingerprint": "",
            "metric": metric,
            "value": value,
        },
    }


def scan(
    status: str,
    *,
    at: int,
    scan_type: str = "drift",
    findings: list[dict] | None = None,
    session: str = "acme:scan:infra-live",
) -> dict[str, Any]:
    return {
        "event_id": derived_id("scan", status, str(at), session),
        "session_key": session,
        "kind": "scan",
        "type": "scan.completed",
        "source": "scanner",
        "org": "acme",
        "occurred_at": at,
        "received_at": at,
        "labels": {"config_id": "infra-live"},
        "annotations": {},
        "payload": {
            "scan_id": f"s-{at}",
            "scan_type": scan_type,
            "config_id": "infra-live",
            "status": status,
            "findings": findings or [],
        },
    }


URGENT_DOWN = Verdict(category="availability", severity="urgent", confidence=0.9, classifier="test-1")
WARN_DOWN = Verdict(category="availability", severity="warning", confidence=0.8, classifier="test-1")
WARN_CPU = Verdict(category="cpu", severity="warning", confidence=0.8, classifier="test-1")


class Sim:
    """Fold one session's events through decide with a simulated ticker."""

    def __init__(self, ctx: Context, state: dict | None = None) -> None:
        self.ctx = ctx
        self.state = state
        self.decisions: list[tuple[dict, Decision]] = []

    @property
    def effects(self) -> list[dict]:
        return [e for _, d in self.decisions for e in d.all_effects]

    def trace(self) -> list[tuple[dict, dict, list[dict]]]:
        """(event, record, effects) of every fold in order, timers folded inside a decide call included."""
        out = []
        for event, d in self.decisions:
            out.extend((f.event, f.record, f.effects) for f in d.fired)
            out.append((event, d.record, d.effects))
        return out

    def notifications(self, action: str | None = None) -> list[dict]:
        return [
            e for e in self.effects if e["type"] == "notify" and (action is None or e["notify"]["action"] == action)
        ]

    def pending(self) -> dict[str, dict]:
        return dict((self.state or {}).get("timers") or {})

    def advance(self, until: int) -> None:
        """Fire every timer due at or before ``until``, oldest first (timers they schedule too)."""
        while True:
            due = sorted((spec["at"], tid) for tid, spec in self.pending().items() if spec["at"] <= until)
            if not due:
                return
            at, tid = due[0]
            spec = self.pending()[tid]
            session = next((ev["session_key"] for ev, _ in self.decisions), SESSION)
            self._fold(
                timer_event(session, "acme", tid, spec, received_at=at), Verdict(severity="info", classifier="none")
            )

    def feed(self, event: dict, verdict: Verdict | None = None, *, ticker: bool = True) -> Decision:
        """Fold ``event``; with ``ticker`` the due timers are promoted first, as a prompt ticker would."""
        if ticker:
            self.advance(event["occurred_at"])
        return self._fold(event, verdict or self.ctx.verdict)

    def feed_all(self, events: Iterable[dict], verdict: Verdict | None = None) -> None:
        for event in events:
            self.feed(event, verdict)

    def _fold(self, event: dict, verdict: Verdict) -> Decision:
        decision = decide(self.state, event, replace(self.ctx, verdict=verdict))
        self.state = decision.state
        self.decisions.append((event, decision))
        return decision
