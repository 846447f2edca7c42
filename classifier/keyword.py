"""Keyword rules: the baseline the model must beat, and its fallback when unsure.

The rules are what an SRE would write in an afternoon: the event kind first (a scan
says what it is), then an ordered list of generic words looked for in the event's
name, then anywhere in its text. They use no service or product names, so they
degrade the same way on software they have never seen. Their "probabilities" are
fixed confidences per rule tier, not calibrated estimates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from classifier.features import event_tokens, normalize_word
from classifier.prediction import Prediction, with_stated_categories
from classifier.vocabulary import CATEGORY_WORDS, INFO_WORDS, URGENT_WORDS, WARNING_WORDS
from streams.model.taxonomy import normalize_severity

KEYWORD_VERSION = "keyword-1"

# Confidence reported per tier of evidence.
P_EXPLICIT = 0.9  # the sender said it (severity label, scan type, pull request)
P_NAME = 0.7  # a keyword in the alert name / title
P_TEXT = 0.5  # a keyword elsewhere in the text
P_DEFAULT = 0.3  # nothing matched


def _stems(*raw: str) -> frozenset[str]:
    return frozenset(w for w in (normalize_word(r) for r in raw) if w)


CATEGORY_KEYWORDS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (category, _stems(*raw)) for category, raw in CATEGORY_WORDS
)
_URGENT_WORDS = _stems(*URGENT_WORDS)
_WARNING_WORDS = _stems(*WARNING_WORDS)
_INFO_WORDS = _stems(*INFO_WORDS)

_SCAN_CATEGORY = {"drift": "config_drift", "compliance": "compliance", "cost": "cost"}
_FINDING_SEVERITY = {"critical": "urgent", "high": "action", "medium": "warning", "moderate": "warning", "low": "info"}
_URGENCY = {"high": "urgent", "low": "warning"}  # PagerDuty's two urgencies
_DONE_ACTIONS = frozenset({"resolved", "acknowledged", "closed", "fixed", "succeeded", "success", "merged"})
_REVIEW_TYPES = frozenset({"pr.opened", "pr.synchronize", "pr.reopened", "pr.review_requested", "pr.ready_for_review"})
_SECURITY_TYPES = ("dependabot_alert", "secret_scanning_alert", "code_scanning_alert")
_DEPLOY_TYPES = ("deployment", "workflow_run", "pipeline", "release", "check_run", "app.sync")


def _first_match(ws: set[str]) -> str | None:
    for category, keys in CATEGORY_KEYWORDS:
        if not ws.isdisjoint(keys):
            return category
    return None


def _tokens_by_prefix(tokens: list[str]) -> dict[str, Any]:
    names: set[str] = set()
    text: set[str] = set()
    meta: dict[str, str] = {}
    body_values: list[tuple[str, str]] = []
    for tok in tokens:
        prefix, _, value = tok.partition(":")
        if prefix == "n":
            names.add(value)
        elif prefix == "w":
            text.add(value)
        elif prefix == "bv":
            key, _, v = value.partition("=")
            body_values.append((key, v))
        elif prefix not in meta:
            meta[prefix] = value
    return {"names": names, "text": text, "meta": meta, "body": body_values}


def keyword_category(event: Mapping[str, Any], tokens: list[str] | None = None) -> tuple[str, float]:
    """Category by kind first, then keywords in the name, then anywhere."""
    parts = _tokens_by_prefix(tokens if tokens is not None else event_tokens(event))
    meta = parts["meta"]
    etype = meta.get("t", "")
    if meta.get("scan") in _SCAN_CATEGORY:
        return _SCAN_CATEGORY[meta["scan"]], P_EXPLICIT
    if etype.startswith("pr."):
        return "code_review", P_EXPLICIT
    if etype.startswith(_SECURITY_TYPES):
        return "security", P_EXPLICIT
    if etype.startswith(_DEPLOY_TYPES):
        return "deployment", P_EXPLICIT
    if meta.get("k") == "timer":
        return "other", P_EXPLICIT
    found = _first_match(parts["names"])
    if found:
        return found, P_NAME
    found = _first_match(parts["text"])
    if found:
        return found, P_TEXT
    return "other", P_DEFAULT


def keyword_severity(event: Mapping[str, Any], tokens: list[str] | None = None) -> tuple[str, float]:
    """Severity from what the sender said, else from the kind of event, else from words."""
    parts = _tokens_by_prefix(tokens if tokens is not None else event_tokens(event))
    meta = parts["meta"]
    if meta.get("ta") in _DONE_ACTIONS or meta.get("scanstatus") == "clean":
        return "info", P_EXPLICIT
    if "sev" in meta:
        return meta["sev"], P_EXPLICIT
    if meta.get("fmax") in _FINDING_SEVERITY:
        return _FINDING_SEVERITY[meta["fmax"]], P_EXPLICIT
    etype = meta.get("t", "")
    if etype.startswith("pr."):
        return ("action" if etype in _REVIEW_TYPES else "info"), P_EXPLICIT
    if meta.get("k") == "timer":
        return "info", P_EXPLICIT
    for key, value in parts["body"]:
        if key == "urgency" and value in _URGENCY:
            return _URGENCY[value], P_NAME
        if key in ("severity", "priority", "level", "security_severity_level"):
            mapped = normalize_severity(value)
            if mapped:
                return mapped, P_NAME
    ws = parts["names"] | parts["text"]
    # Never page on one word: "error" or "failed" alone is a warning. Urgent needs an
    # urgent word in the name and a second, different one anywhere.
    urgent_hits = ws & _URGENT_WORDS
    if len(urgent_hits) >= 2 and not parts["names"].isdisjoint(_URGENT_WORDS):
        return "urgent", P_TEXT
    if not ws.isdisjoint(_INFO_WORDS):
        return "info", P_TEXT
    if not ws.isdisjoint(_WARNING_WORDS):
        return "warning", P_TEXT
    return "warning", P_DEFAULT


class KeywordClassifier:
    """Rule-based classifier with the same interface as the model."""

    version: str = KEYWORD_VERSION

    def predict_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One Prediction per event, in order; fallback is always False (rules are the answer)."""
        out = []
        for event in events:
            tokens = event_tokens(event)
            category, cp = keyword_category(event, tokens)
            severity, sp = keyword_severity(event, tokens)
            out.append(
                Prediction(
                    category,
                    cp,
                    severity,
                    sp,
                    self.version,
                    False,
                    severity_inferred=sp < P_EXPLICIT,
                    category_inferred=cp < P_EXPLICIT,
                    severity_basis="stated" if sp >= P_EXPLICIT else "rules",
                    category_basis="stated" if cp >= P_EXPLICIT else "rules",
                )
            )
        return with_stated_categories(events, out)

    def predict_tokens(self, tokens_list: Sequence[list[str]]) -> list[tuple[str, float, str, float]]:
        """Rule verdicts for already-tokenised events (lets the model reuse its batch's tokens)."""
        out = []
        for tokens in tokens_list:
            category, cp = keyword_category({}, tokens)
            severity, sp = keyword_severity({}, tokens)
            out.append((category, cp, severity, sp))
        return out
