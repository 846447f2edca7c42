"""The policy gates: small pure functions that let a notification through or stop it.

Each gate answers a :class:`Gate` (``pass`` or ``stop`` with a reason); decide
records every verdict in the decision record. State a gate needs (when the session
last notified, the dedupe log, the message count) lives in the session state and is
passed in; gates never read a clock. Where a stop only postpones (grouping, a
cooldown, a silence that ends), the gate also says until when, and decide schedules
a timer for then instead of dropping the news.

Invariants the property tests hold decide to:

- cooldown: two *trigger* notifications (a group's first message, a repeat, a
  condition) of one runbook in one session are at least ``cooldown`` apart;
- dedupe: two notifications with one dedupe key are at least ``dedupe_window`` apart;
- cap: at most ``max_consecutive`` autonomous messages between two resets (a human
  action, an ack or a resolve, as the runbook's ``reset_on`` says);
- silences: nothing is notified about an alert whose labels a silence or maintenance
  window matches while it is active;
- grouping: one notification per session per group interval (Alertmanager's
  group_wait / group_interval / repeat_interval);
- flapping: ``flips`` status changes inside ``window`` give one flapping notice, then
  quiet until the session has been stable for ``stable_for``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core.inhibition import IndexedSources
from streams.model.matchers import matches_all
from streams.model.routing import InhibitRule, Timing
from streams.model.runbooks import Flapping, Trigger
from streams.model.silences import Silence

PASS, STOP = "pass", "stop"


@dataclass(frozen=True)
class Gate:
    gate: str
    verdict: str
    reason: str = ""
    until: int | None = None  # a postponing stop: when the same notification may be tried again
    # What stopped it (a Silence, another session's inhibiting labels, or a tuple of such
    # gates for a per-alert gate); replay needs it, the record does not show it.
    cause: Any = field(default=None, compare=False)
    # Whether it halts what it guards, when that is not simply "it stopped": a per-alert gate
    # records "stop" when it muted some alerts yet lets the rest through, and the last one
    # halts a flush that has no alert left.
    halts: bool | None = None

    @property
    def halted(self) -> bool:
        return self.stopped if self.halts is None else self.halts

    @property
    def stopped(self) -> bool:
        return self.verdict == STOP

    def record(self) -> dict[str, str]:
        return {"gate": self.gate, "verdict": self.verdict, "reason": self.reason}


def _ms(value: int) -> str:
    seconds = value // 1000
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


# -- cooldown ------------------------------------------------------------------------


def cooldown_gate(last_trigger_at: int | None, now: int, cooldown: int) -> Gate:
    """Stop a trigger notification within ``cooldown`` of the runbook's previous one in this session."""
    if cooldown <= 0 or last_trigger_at is None:
        return Gate("cooldown", PASS)
    ends = last_trigger_at + cooldown
    if now < ends:
        return Gate(
            "cooldown",
            STOP,
            f"last notified {_ms(max(0, now - last_trigger_at))} ago; cooldown {_ms(cooldown)}",
            until=ends,
        )
    return Gate("cooldown", PASS, f"cooldown {_ms(cooldown)} elapsed")


# -- dedupe --------------------------------------------------------------------------


def dedupe_gate(log: Mapping[str, int], key: str, now: int, window: int) -> Gate:
    """Stop a notification whose dedupe key was notified within ``window``."""
    last = log.get(key)
    if window > 0 and last is not None and now - last < window:
        return Gate("dedupe", STOP, f"same notification {_ms(now - last)} ago (window {_ms(window)})")
    return Gate("dedupe", PASS)


def prune_dedupe(log: Mapping[str, int], now: int, window: int) -> dict[str, int]:
    """Drop keys older than the window (they can no longer stop anything)."""
    return {k: t for k, t in log.items() if now - t < window}


# -- consecutive autonomous messages -------------------------------------------------


def cap_gate(count: int, max_consecutive: int) -> Gate:
    """The seed design's cap: at most ``max_consecutive`` messages until a human, an ack or a resolve resets it."""
    if count >= max_consecutive:
        return Gate("cap", STOP, f"{count} messages without a human reply (max {max_consecutive})")
    return Gate("cap", PASS, f"{count + 1} of {max_consecutive}")


def resets_cap(reset_on: Sequence[str], cause: str) -> bool:
    """Whether ``cause`` (ack | resolve | human) resets the counter under this policy."""
    return cause in reset_on


# -- grouping ------------------------------------------------------------------------


def group_gate(kind: str, *, first_seen: int, last_sent: int | None, now: int, timing: Timing, wait: int) -> Gate:
    """When a session's next notification may go: group_wait for the first, then
    group_interval for changes, repeat_interval for an unchanged group."""
    if kind == "initial":
        due = first_seen + wait
        reason = f"group_wait {_ms(wait)}"
    elif kind == "update":
        due = (last_sent or 0) + timing.group_interval
        reason = f"group_interval {_ms(timing.group_interval)}"
    else:
        due = (last_sent or 0) + timing.repeat_interval
        reason = f"repeat_interval {_ms(timing.repeat_interval)}"
    if now < due:
        return Gate("group", STOP, f"waiting for {reason}", until=due)
    return Gate("group", PASS, reason)


# -- flapping ------------------------------------------------------------------------


def record_flip(flips: Sequence[int], now: int, policy: Flapping) -> list[int]:
    """The status-change times still inside the window, with this one added."""
    return [t for t in flips if now - t < policy.window] + [now]


def is_flapping(flips: Sequence[int], now: int, policy: Flapping) -> bool:
    if not policy.enabled:  # a runbook without a flapping policy never flaps
        return False
    return sum(1 for t in flips if now - t < policy.window) >= policy.flips


def flapping_gate(flapping: bool, last_flip: int | None, now: int, policy: Flapping) -> Gate:
    """Stop notifications while flapping; say when the session counts as stable again."""
    if not flapping:
        return Gate("flapping", PASS)
    stable_at = (last_flip or now) + policy.stable_for
    return Gate("flapping", STOP, f"flapping; quiet until stable for {_ms(policy.stable_for)}", until=stable_at)


# -- silences and maintenance windows ------------------------------------------------


def silence_gate(silences: Iterable[Silence], labels: Mapping[str, str], now: int) -> Gate:
    for silence in silences:
        if silence.mutes(labels, now):
            what = "maintenance window" if silence.kind == "maintenance" else "silence"
            return Gate(
                "silence",
                STOP,
                f"{what} {silence.silence_id} until {silence.ends_at}",
                until=silence.ends_at,
                cause=silence,
            )
    return Gate("silence", PASS)


# -- inhibition ----------------------------------------------------------------------


_SOURCE: Any = object()


def inhibition_gate(
    labels: Mapping[str, str], sources: Iterable[Mapping[str, str]] | IndexedSources, rules: Sequence[InhibitRule]
) -> Gate:
    """Stop a target alert while a firing source alert of a rule shares its ``equal`` labels.

    An alert never inhibits itself (Alertmanager's rule), so a critical alert matching
    both sides of a rule is not muted by its own presence. ``sources`` is a list to scan
    or an :class:`~streams.core.inhibition.IndexedSources` to look up (same result).
    """
    if not rules:
        return Gate("inhibit", PASS)
    if isinstance(sources, IndexedSources):  # the same answer, looked up instead of scanned
        found = sources.find(labels, rules)
        return Gate("inhibit", PASS) if found is None else inhibited(labels, rules, found[0], found[2])
    source_list = list(sources)
    for index, rule in enumerate(rules):
        if not matches_all(rule.target, labels):
            continue
        for source in source_list:
            if source == labels or not matches_all(rule.source, source):
                continue
            if all(source.get(name, "") == labels.get(name, "") for name in rule.equal):
                return inhibited(labels, rules, index, source)
    return Gate("inhibit", PASS)


def inhibited(
    labels: Mapping[str, str], rules: Sequence[InhibitRule], index: int, source: Mapping[str, str], cause: Any = _SOURCE
) -> Gate:
    """The stop of a target alert inhibited by ``source`` under ``rules[index]`` (cause: the source, unless given)."""
    shared = ", ".join(f"{n}={labels.get(n, '')}" for n in rules[index].equal)
    return Gate(
        "inhibit",
        STOP,
        f"inhibit_rules[{index}]: {source.get('alertname', 'an alert')} firing ({shared})",
        cause=source if cause is _SOURCE else cause,
    )


def inhibition_sources(firing: Iterable[Mapping[str, str]], rules: Sequence[InhibitRule]) -> list[dict[str, str]]:
    """Of the firing alerts' routing labels, those that can inhibit others (what other sessions must see)."""
    out = [dict(sorted(labels.items())) for labels in firing if any(matches_all(rule.source, labels) for rule in rules)]
    out.sort(key=lambda d: sorted(d.items()))
    return out


# -- condition triggers ----------------------------------------------------------------


def condition_step(
    since: int | None, on: bool, value: float, now: int, trigger: Trigger
) -> tuple[int | None, bool, str | None]:
    """One sample through a condition: (since, on, transition) with transition fire | clear | None.

    The condition must hold continuously for ``for`` before it fires (like a
    Prometheus rule's ``for:``); one sample that does not hold clears it.
    """
    if trigger.holds(value):
        since = now if since is None else since
        if not on and now - since >= trigger.for_:
            return since, True, "fire"
        return since, on, None
    return None, False, ("clear" if on else None)
