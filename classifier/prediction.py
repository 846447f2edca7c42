"""The verdict a classifier hands to the decide engine."""

from __future__ import annotations

from dataclasses import dataclass


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
