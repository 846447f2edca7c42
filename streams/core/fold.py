"""The working set of one decide call: effects in order, gate verdicts, what matched.

:class:`Fold` is created per event by :func:`streams.core.decide.decide` and thrown away
after; it turns "notify these receivers", "schedule that timer" into effect records
whose ids derive from the event id and what each effect is about, and keeps the
session's mirror of pending timers in step with the timer effects it emits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from streams.core.gates import Gate
from streams.core.state import SessionState, TimerSpec
from streams.model.records import derived_id

if TYPE_CHECKING:
    from streams.core.decide import Context


def effect_subject(etype: str, body: Mapping[str, Any]) -> str:
    """What an effect is about: the receiver and action of a notice, a timer's id, a cancel's prefix."""
    if etype == "notify":
        return f"{body['notify']['receiver']}|{body['notify']['action']}"
    if etype == "schedule_timer":
        return cast(str, body["timer"]["timer_id"])
    if etype == "cancel_timers":
        return cast(str, body["cancel"]["prefix"])
    if etype == "remediate":
        return cast(str, body["remediate"]["action"])
    return ""


def effect_id(event_id: str, etype: str, subject: str, ordinal: int) -> str:
    """Deterministic, and keyed by what the effect is about rather than its index in the list.

    A worker killed after its effects were written but before its state write landed
    decides the event again from an older state; timer events may then interleave
    differently, so a timer cancel can appear or vanish before the notice. With ids by
    index the same "resolved" notice would get a second id and be sent twice; by subject
    (the n-th notice of this event to this receiver with this action) it keeps its id,
    and the sinks deliver it once.
    """
    return derived_id("effect", event_id, etype, subject, str(ordinal))


class Fold:
    """Mutable scratch space for folding one event into one session's state."""

    def __init__(self, state: SessionState, event: Mapping[str, Any], ctx: Context, now: int) -> None:
        self.s = state
        self.event = event
        self.ctx = ctx
        self.now = now
        self.effects: list[dict[str, Any]] = []
        self.gates: list[dict[str, str]] = []
        self.matched: dict[str, str] = {}
        self.outcome = "recorded"
        self.runbook = ""
        # Inputs from outside the session that changed the outcome, recorded so replay can
        # hand decide the same: silences that muted something, other sessions' alerts that inhibited.
        self.used_silences: dict[str, dict[str, Any]] = {}
        self.used_inhibitors: list[list[Any]] = []  # [session_key, labels]
        self.routes: dict[tuple[tuple[str, str], ...], Any] = {}  # route lookups of this fold
        # The id effect ids derive from: the event's, or (see :meth:`carried_by`) the timer event
        # whose work the event does inline; one entry per effect, for the ordinals.
        self._carrier: str | None = None
        self._carriers: list[str] = []

    @property
    def carrier_id(self) -> str:
        """The id this fold's effects derive theirs from right now (the event's unless :meth:`carried_by`)."""
        return self._carrier or self.event["event_id"]

    @contextmanager
    def carried_by(self, carrier: str) -> Iterator[None]:
        """Derive the ids of the effects emitted inside from ``carrier`` instead of the event's id.

        A group flush that a later event performs inline (its timer's due time already passed)
        is the flush the ``grp:`` timer event would have carried: with its ids, a re-decision
        in which the ticker's timer event carries it instead yields the same effect ids.
        """
        outer, self._carrier = self._carrier, carrier
        try:
            yield
        finally:
            self._carrier = outer

    # -- bookkeeping ------------------------------------------------------------------
    def check(self, gate: Gate) -> bool:
        """Record a gate's verdict (the one way verdicts reach the decision); True when it halted."""
        self.gates.append(gate.record())
        self._remember_inputs(gate)
        return gate.halted

    def _remember_inputs(self, gate: Gate) -> None:
        """Remember an outside input behind a stop (a silence from the context, another session's alert)."""
        if not gate.stopped or gate.cause is None:
            return
        if isinstance(gate.cause, tuple) and all(isinstance(c, Gate) for c in gate.cause):
            for inner in gate.cause:
                self._remember_inputs(inner)
            return
        if gate.gate == "silence" and getattr(gate.cause, "kind", "") != "maintenance":
            self.used_silences[gate.cause.silence_id] = gate.cause.to_json()
        elif gate.gate == "inhibit":
            key, labels = gate.cause
            entry = [key, dict(sorted(labels.items()))]
            if entry not in self.used_inhibitors:
                self.used_inhibitors.append(entry)

    def note(self, key: str, value: Any) -> None:
        self.matched[key] = str(value)

    # -- effects -----------------------------------------------------------------------
    def _effect(self, etype: str, runbook: str = "", **body: Any) -> dict[str, Any]:
        ev = self.event
        carrier = self.carrier_id
        subject = effect_subject(etype, body)
        ordinal = sum(
            c == carrier and e["type"] == etype and effect_subject(etype, e) == subject
            for c, e in zip(self._carriers, self.effects, strict=True)
        )
        effect = {
            "effect_id": effect_id(carrier, etype, subject, ordinal),
            "event_id": ev["event_id"],
            "session_key": ev["session_key"],
            "org": ev.get("org", "default"),
            "type": etype,
            "created_at": ev["occurred_at"],
            "runbook": runbook or self.runbook,
            "notify": None,
            "timer": None,
            "cancel": None,
            "remediate": None,
        }
        effect.update(body)
        self.effects.append(effect)
        self._carriers.append(carrier)
        return effect

    def notify(
        self,
        *,
        channel: str,
        receiver: str,
        severity: str,
        title: str,
        body: str,
        fields: Mapping[str, str],
        links: list[dict[str, str]],
        dedupe_key: str,
        action: str,
        runbook: str = "",
    ) -> dict[str, Any]:
        return self._effect(
            "notify",
            runbook,
            notify={
                "channel": channel,
                "receiver": receiver,
                "severity": severity,
                "title": title,
                "body": body,
                "fields": {str(k): str(v) for k, v in sorted(fields.items())},
                "links": links,
                "dedupe_key": dedupe_key,
                "thread_key": self.event["session_key"],
                "action": action,
            },
        )

    def schedule(
        self, timer_id: str, fire_at: int, purpose: str, step: int = 0, data: Mapping[str, str] | None = None
    ) -> None:
        """Upsert a timer (same id replaces the pending one) and emit its schedule_timer effect."""
        spec: TimerSpec = {
            "at": int(fire_at),
            "purpose": purpose,
            "step": int(step),
            "data": {str(k): str(v) for k, v in sorted((data or {}).items())},
        }
        self.s.setdefault("timers", {})[timer_id] = spec
        self._effect(
            "schedule_timer",
            timer={
                "timer_id": timer_id,
                "fire_at": spec["at"],
                "purpose": purpose,
                "step": spec["step"],
                "data": spec["data"],
            },
        )

    def cancel(self, prefix: str, reason: str) -> bool:
        """Cancel this session's pending timers whose id starts with ``prefix``; emit only if any were pending."""
        timers = self.s.get("timers") or {}
        doomed = [tid for tid in timers if tid.startswith(prefix)]
        if not doomed:
            return False
        for tid in doomed:
            del timers[tid]
        self._effect("cancel_timers", cancel={"prefix": prefix, "reason": reason})
        return True

    def remediate(
        self,
        *,
        action: str,
        endpoint: str,
        method: str,
        params: Mapping[str, str],
        dry_run: bool,
        requires_approval: bool,
        runbook: str = "",
        retries: int = -1,
        timeout_ms: int = 0,
    ) -> None:
        self._effect(
            "remediate",
            runbook,
            remediate={
                "action": action,
                "endpoint": endpoint,
                "method": method,
                "params": {str(k): str(v) for k, v in sorted(params.items())},
                "dry_run": dry_run,
                "requires_approval": requires_approval,
                "retries": int(retries),
                "timeout_ms": int(timeout_ms),
            },
        )
