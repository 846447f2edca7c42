"""The verdict a classifier hands to the decide engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """One event's category and severity, each with the probability behind it.

    ``fallback`` is True when the model was not confident enough on at least one of the
    two heads and the keyword rules supplied that head's answer; the decide engine
    records it so an audit can tell learned verdicts from rule verdicts. The
    probabilities of rule answers are fixed rule confidences, not calibrated.
    """

    category: str
    category_p: float
    severity: str
    severity_p: float
    model_version: str
    fallback: bool
