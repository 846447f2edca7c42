"""Scoring the model and the keyword baseline on the held-out services.

Both systems are scored on exactly the same events. Two conditions:

* ``as_sent``: alerts as Prometheus sends them, labels.severity included (headline);
* ``no_severity_label``: the same events with labels.severity removed, to show what
  the severity head learned from text alone.

Macro-F1 is the unweighted mean of per-class F1 over the classes present in the
held-out truth (a class absent from the truth has no recall to measure; predicting it
wrongly still costs precision elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from classifier.corpus import Sample
from classifier.keyword import KeywordClassifier
from classifier.model import ModelClassifier
from classifier.prediction import Prediction
from classifier.training import without_severity
from streams.model.taxonomy import CATEGORIES, SEVERITIES

CONDITIONS = ("as_sent", "no_severity_label")


def head_metrics(truth: Sequence[str], pred: Sequence[str], taxonomy: Sequence[str]) -> dict[str, Any]:
    """Per-class precision / recall / F1, macro-F1, accuracy and the confusion matrix."""
    present = [c for c in taxonomy if c in set(truth)]
    shown = [c for c in taxonomy if c in set(truth) or c in set(pred)]
    p, r, f, support = precision_recall_fscore_support(truth, pred, labels=shown, zero_division=0)
    per_class = [
        {"label": label, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, label in enumerate(shown)
    ]
    f1_by_label = {row["label"]: row["f1"] for row in per_class}
    matrix = confusion_matrix(truth, pred, labels=shown)
    return {
        "labels": shown,
        "per_class": per_class,
        "macro_f1": float(np.mean([f1_by_label[c] for c in present])) if present else 0.0,
        "accuracy": float(np.mean(np.asarray(truth, dtype=object) == np.asarray(pred, dtype=object))),
        "confusion": matrix.tolist(),
    }


def score(samples: Sequence[Sample], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Both heads' metrics plus how often the fallback was used."""
    return {
        "category": head_metrics([s.category for s in samples], [p.category for p in predictions], CATEGORIES),
        "severity": head_metrics([s.severity for s in samples], [p.severity for p in predictions], SEVERITIES),
        "fallback_rate": float(np.mean([p.fallback for p in predictions])) if predictions else 0.0,
        "n": len(samples),
    }


def condition_events(samples: Sequence[Sample], condition: str) -> list[dict[str, Any]]:
    """The held-out events under one evaluation condition."""
    if condition == "as_sent":
        return [s.event for s in samples]
    if condition == "no_severity_label":
        return [without_severity(s.event) for s in samples]
    raise ValueError(f"unknown condition {condition!r}")


def evaluate(classifier: ModelClassifier, test: Sequence[Sample]) -> dict[str, Any]:
    """Model (with fallback), model without fallback, and keyword rules, in each condition."""
    raw = ModelClassifier(classifier.pipeline, classifier.meta, "0" * 12, threshold=0.0)
    keyword = KeywordClassifier()
    out: dict[str, Any] = {}
    for condition in CONDITIONS:
        events = condition_events(test, condition)
        model_preds = classifier.predict_batch(events)
        keyword_preds = keyword.predict_batch(events)
        out[condition] = {
            "model": score(test, model_preds),
            "model_no_fallback": score(test, raw.predict_batch(events)),
            "keyword": score(test, keyword_preds),
        }
        out[condition]["model"]["only_right"] = only_right(test, model_preds, keyword_preds)
        out[condition]["keyword"]["only_right"] = only_right(test, keyword_preds, model_preds)
    return out


def only_right(samples: Sequence[Sample], mine: Sequence[Prediction], theirs: Sequence[Prediction]) -> dict[str, int]:
    """Per head, how many events ``mine`` gets right that ``theirs`` gets wrong."""
    return {
        "category": sum(s.category == a.category != b.category for s, a, b in zip(samples, mine, theirs)),
        "severity": sum(s.severity == a.severity != b.severity for s, a, b in zip(samples, mine, theirs)),
    }


def headline(results: Mapping[str, Any]) -> dict[str, float]:
    """The four numbers the report leads with (as-sent condition)."""
    a = results["as_sent"]
    return {
        "category_macro_f1_model": a["model"]["category"]["macro_f1"],
        "category_macro_f1_keyword": a["keyword"]["category"]["macro_f1"],
        "severity_macro_f1_model": a["model"]["severity"]["macro_f1"],
        "severity_macro_f1_keyword": a["keyword"]["severity"]["macro_f1"],
    }


def compact_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """The summary stored inside the model artifact (no confusion matrices)."""
    out: dict[str, Any] = {"split": "held-out services", **{k: round(v, 4) for k, v in headline(results).items()}}
    for condition, systems in results.items():
        for system, res in systems.items():
            for head in ("category", "severity"):
                out[f"{condition}.{system}.{head}.macro_f1"] = round(res[head]["macro_f1"], 4)
                out[f"{condition}.{system}.{head}.accuracy"] = round(res[head]["accuracy"], 4)
            out[f"{condition}.{system}.fallback_rate"] = round(res["fallback_rate"], 4)
    return out
