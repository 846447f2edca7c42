"""The fixed label sets the classifier predicts, and how foreign severity words map onto ours.

The taxonomy is deliberately small: runbooks and routing rules match on these exact
strings, so adding or renaming one is a contract change for the rest of opsloop.
"""

from __future__ import annotations

import re

CATEGORIES: tuple[str, ...] = (
    "cpu",
    "memory",
    "disk",
    "network",
    "availability",
    "latency_errors",
    "certificate",
    "database",
    "message_broker",
    "deployment",
    "config_drift",
    "compliance",
    "cost",
    "security",
    "code_review",
    "other",
)

# Ordered from least to most pressing; routing compares by index.
SEVERITIES: tuple[str, ...] = ("info", "warning", "action", "urgent")
# How severe each is (higher: more), for "the most severe" of several: a group's lead, an incident's severity.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

# Severity words seen in the wild (Prometheus rules, PagerDuty urgencies, scanner
# levels, Opsgenie priorities) mapped onto our four levels. "action" is the level for
# "a human must do something, but nobody needs to be woken up".
SEVERITY_ALIASES: dict[str, str] = {
    # urgent: page someone now
    "critical": "urgent",
    "crit": "urgent",
    "fatal": "urgent",
    "emergency": "urgent",
    "emerg": "urgent",
    "alert": "urgent",
    "page": "urgent",
    "disaster": "urgent",
    "p0": "urgent",
    "p1": "urgent",
    "sev0": "urgent",
    "sev1": "urgent",
    "s0": "urgent",
    "s1": "urgent",
    "blocker": "urgent",
    "highest": "urgent",
    "urgent": "urgent",
    # action: needs a human, in working hours
    "error": "action",
    "err": "action",
    "high": "action",
    "major": "action",
    "p2": "action",
    "sev2": "action",
    "s2": "action",
    "ticket": "action",  # the page / ticket house style: a ticket is worked, nobody is woken
    "action": "action",
    # warning: worth a look
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "moderate": "warning",
    "minor": "warning",
    "average": "warning",
    "p3": "warning",
    "sev3": "warning",
    "s3": "warning",
    # info: record only
    "info": "info",
    "informational": "info",
    "information": "info",
    "notice": "info",
    "low": "info",
    "none": "info",
    "ok": "info",
    "debug": "info",
    "p4": "info",
    "p5": "info",
    "sev4": "info",
    "sev5": "info",
    "s4": "info",
    "lowest": "info",
    "trivial": "info",
}
# "SEV-1", "Sev 1", "P_1", "sev.1": the separator is house style, the word is the same.
_SEPARATORS = re.compile(r"[\s._-]+")
# "P1 - Critical", "3 - Moderate", "Sev1 (Critical)": a ticketing tool's level with its name.
_WORDS = re.compile(r"[^\s._\-/:()\[\],]+")
_NEGATIONS = frozenset({"not", "non", "no"})


def normalize_severity(value: object) -> str | None:
    """Map a foreign severity word onto ours, or None when it is not one we know.

    Returning None (rather than guessing "warning") lets callers tell "the sender said
    nothing usable" apart from "the sender said warning".
    """
    if not isinstance(value, str) or len(value) > 40:
        return None
    word = value.strip().lower()
    found = SEVERITY_ALIASES.get(word) or SEVERITY_ALIASES.get(_SEPARATORS.sub("", word))
    if found is not None:
        return found
    # The level leads ("P1 - Critical") or a number does and the name follows ("3 - Moderate"); a word
    # merely containing one ("sky-high") or a negation ("not critical") says nothing we can use.
    parts = _WORDS.findall(word)
    if len(parts) < 2 or not _NEGATIONS.isdisjoint(parts):
        return None
    if parts[0] in SEVERITY_ALIASES:
        return SEVERITY_ALIASES[parts[0]]
    return SEVERITY_ALIASES.get(parts[1]) if parts[0].isdigit() else None
