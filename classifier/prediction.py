"""The verdict a classifier hands to the decide engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streams.model.taxonomy import CATEGORIES

CATEGORY_LABEL = "category"
_CATEGORIES = frozenset(CATEGORIES)


@dataclass(frozen=True)
class Prediction:
    """One event's category and severity, each with the probability behind it.

    ``fallback`` is True when the model was not confident enough on at least one of the
    two heads and the keyword rules supplied that head's answer; the decide engine
    records it so an audit can tell learned verdicts from rule verdicts. The
    probabilities of rule answers are fixed rule confidences, not calibrated; the
    model's are calibrated on rules of catalogue groups it was not trained on (temperature
    scaling), and for a stated severity the probability is 1.0.
    """

    category: str
    category_p: float
    severity: str
    severity_p: float
    model_version: str
    fallback: bool
    # Was the answer predicted rather than stated by the sender? A severity is stated
    # when the event carries one we honour (labels.severity, a webhook's severity /
    # priority / urgency, a scan's worst finding) or closes something (resolved,
    # acknowledged: info). A category is stated when the kind of event fixes it (a
    # drift / compliance / cost scan, a pull request, a timer, a security or deployment
    # webhook). Messages and the audit should say "inferred" with the probability.
    severity_inferred: bool = False
    category_inferred: bool = False
    # Where the severity came from: "stated" (the sender), "model" (calibrated model,
    # confident enough), "default" (model unsure: the configured default severity,
    # warning unless set otherwise), "rules" (keyword rules).
    severity_basis: str = "stated"
    # Where the category came from: "stated" (the sender's ``category`` label, or the kind
    # of event), "model" (the calibrated model, whatever its probability), "rules" (keyword
    # rules: the model was below its category threshold, or there is no model).
    category_basis: str = "model"


def stated_category(event: Mapping[str, Any]) -> str | None:
    """The category a sender states with a ``category`` label, if it is one of the taxonomy's.

    An operator who sees a rule classified wrongly (``opsloop route rules``) can say what it
    is in the rule itself, as ``severity`` says how pressing it is. Any other value of that
    label is an ordinary label: houses use ``category`` for their own words too.
    """
    labels = event.get("labels")
    value = labels.get(CATEGORY_LABEL) if isinstance(labels, Mapping) else None
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if value in _CATEGORIES else None


def with_stated_categories(events: Sequence[Mapping[str, Any]], predictions: list[Prediction]) -> list[Prediction]:
    """``predictions`` with each stated category honoured (probability 1.0, not inferred)."""
    for i, event in enumerate(events):
        labels = event.get("labels")
        if not labels or CATEGORY_LABEL not in labels:  # nearly every event: keep it cheap on the hot path
            continue
        category = stated_category(event)
        if category is not None:
            p = predictions[i]
            predictions[i] = replace(
                p,
                category=category,
                category_p=1.0,
                category_inferred=False,
                category_basis="stated",
                fallback=p.severity_basis in ("rules", "default"),  # only the severity's basis is left to say
            )
    return predictions
