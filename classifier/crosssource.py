"""Leave-one-source-out evaluation: how the classifier does on rules written in a house style it never saw.

The only alert-rule data this workplace may hold is the awesome-prometheus-alerts
catalogue (other projects' rule sets cannot be vendored: data comes only through the
project's shared datasets). A "source" is therefore a catalogue *group* (13 groups,
e.g. "Databases", "Orchestrators", written by different contributors for different
exporters), the best proxy for house style the catalogue offers; classifier/sources.py.
Each group is held out in turn. Everything else (the other groups, all their resolved
notifications, the hand-labelled examples, which always train: they alone carry the
non-alert kinds of event) trains a model *and* chooses its calibration and decision
policy by the same cross-source procedure training uses (nested: the held-out group
plays no part in either). The held-out group's firing alerts are then classified
through the shipped path (ModelClassifier.predict_batch), twice: with labels.severity
removed (the headline: what arrives without a stated severity) and as sent. Beside
it, on the same events: the model alone (uncalibrated argmax, no policy), the keyword
rules, a naive TF-IDF + logistic regression trained on the same training rules' text,
and "always warning".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from classifier.corpus import Sample
from classifier.evaluation import head_metrics
from classifier.keyword import KeywordClassifier
from classifier.model import ModelClassifier
from classifier.training import (
    C_REGULARISATION,
    expected_calibration_error,
    fit_pipeline,
    is_firing_rule,
    macro_f1,
    select_policy,
    source_folds,
    urgent_fpr,
    without_severity,
)
from streams.model.taxonomy import CATEGORIES, SEVERITIES

SYSTEMS = ("model", "model_alone", "keyword", "naive", "always_warning")
SYSTEM_NAMES = {
    "model": "model as shipped (calibrated, cost decision, fallback)",
    "model_alone": "model alone (argmax, uncalibrated, no fallback)",
    "keyword": "keyword rules",
    "naive": "naive TF-IDF + logistic regression",
    "always_warning": "always warning",
}
CONDITIONS = ("no_severity_label", "as_sent")
RELIABILITY_BINS = 10


def alert_text(event: dict[str, Any]) -> str:
    """What a naive text model reads of an alert: its name, summary and description."""
    labels = event.get("labels") or {}
    annotations = event.get("annotations") or {}
    name = str(labels.get("alertname", ""))
    return " ".join(
        [name, *_camel_words(name), str(annotations.get("summary", "")), str(annotations.get("description", ""))]
    )


def _camel_words(name: str) -> list[str]:
    from classifier.labels import split_camel

    return split_camel(name).split()


class NaiveTextModel:
    """TF-IDF (words and word pairs) + logistic regression per head, on alert text only."""

    def fit(self, samples: Sequence[Sample]) -> NaiveTextModel:
        texts = [alert_text(s.event) for s in samples]
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        X = self.vectorizer.fit_transform(texts)
        with threadpool_limits(limits=1):
            self.category = LogisticRegression(C=C_REGULARISATION, max_iter=3000).fit(X, [s.category for s in samples])
            self.severity = LogisticRegression(C=C_REGULARISATION, max_iter=3000).fit(X, [s.severity for s in samples])
        return self

    def predict(self, events: Sequence[dict[str, Any]]) -> tuple[list[str], list[float], list[str], list[float]]:
        X = self.vectorizer.transform([alert_text(e) for e in events])
        cp = self.category.predict_proba(X)
        sp = self.severity.predict_proba(X)
        return (
            [str(c) for c in self.category.classes_[cp.argmax(1)]],
            cp.max(1).tolist(),
            [str(c) for c in self.severity.classes_[sp.argmax(1)]],
            sp.max(1).tolist(),
        )


def _fold(source: str, train: Sequence[Sample], test: Sequence[Sample], C: float) -> dict[str, Any]:
    pipeline = fit_pipeline(train, C)
    calibration, decision, thresholds, _record = select_policy(train, C)
    meta = {"calibration": calibration, "decision": decision, "thresholds": thresholds}
    shipped = ModelClassifier(pipeline, meta, "0" * 12)
    alone = ModelClassifier(pipeline, {}, "0" * 12, threshold=0.0)
    keyword = KeywordClassifier()
    naive = NaiveTextModel().fit([s for s in train if is_firing_rule(s)])
    out: dict[str, Any] = {
        "source": source,
        "n": len(test),
        "train_sources": sorted({s.source for s in train}),
        "policy": decision,
        "calibration": calibration,
    }
    for condition in CONDITIONS:
        events = [without_severity(s.event) if condition == "no_severity_label" else s.event for s in test]
        preds: dict[str, tuple[list[str], list[float], list[str], list[float]]] = {}
        for name, clf in (("model", shipped), ("model_alone", alone), ("keyword", keyword)):
            ps = clf.predict_batch(events)
            preds[name] = (
                [p.category for p in ps],
                [p.category_p for p in ps],
                [p.severity for p in ps],
                [p.severity_p for p in ps],
            )
            if name == "model":
                out.setdefault("basis", {})[condition] = [p.severity_basis for p in ps]
        preds["naive"] = naive.predict(events)
        preds["always_warning"] = (
            ["other"] * len(events),
            [1.0] * len(events),
            ["warning"] * len(events),
            [1.0] * len(events),
        )
        out[condition] = preds
    out["truth"] = ([s.category for s in test], [s.severity for s in test])
    out["names"] = [str((s.event.get("labels") or {}).get("alertname", "")) for s in test]
    return out


def leave_one_source_out(samples: Sequence[Sample], C: float = C_REGULARISATION) -> dict[str, Any]:
    """Every rule source held out in turn; per-source and pooled metrics for every system."""
    folds = [_fold(source, train, test, C) for source, train, test in source_folds(samples)]
    return {"folds": folds, "summary": summarise(folds)}


def _metrics(
    truth_cat: list[str], truth_sev: list[str], pred: tuple[list[str], list[float], list[str], list[float]], system: str
) -> dict[str, Any]:
    cat, cat_p, sev, sev_p = pred
    correct = [a == b for a, b in zip(sev, truth_sev)]
    out = {
        "n": len(truth_sev),
        "severity_macro_f1": macro_f1(truth_sev, sev),
        "severity_accuracy": float(np.mean(correct)) if correct else 0.0,
        "urgent_fpr": urgent_fpr(truth_sev, sev),
        "urgent_share": float(np.mean([s == "urgent" for s in sev])) if sev else 0.0,
        "severity_ece": expected_calibration_error(sev_p, correct) if system != "always_warning" else None,
        "severity": head_metrics(truth_sev, sev, SEVERITIES),
    }
    if system != "always_warning":
        out["category_accuracy"] = float(np.mean([a == b for a, b in zip(cat, truth_cat)])) if cat else 0.0
        out["category_macro_f1"] = macro_f1(truth_cat, cat)
        out["category"] = head_metrics(truth_cat, cat, CATEGORIES)
    return out


def reliability(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = RELIABILITY_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: count, mean confidence, accuracy (for the reliability diagram)."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else 0.0,
                "accuracy": float(ok[m].mean()) if m.any() else 0.0,
            }
        )
    return out


def summarise(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per source and pooled metrics, per condition and system; reliability bins of the pooled no-label severity."""
    out: dict[str, Any] = {"per_source": {}, "pooled": {}, "mean_over_sources": {}, "reliability": {}}
    for condition in CONDITIONS:
        pooled_truth: tuple[list[str], list[str]] = ([], [])
        pooled: dict[str, tuple[list[Any], list[Any], list[Any], list[Any]]] = {s: ([], [], [], []) for s in SYSTEMS}
        for fold in folds:
            tc, ts = fold["truth"]
            pooled_truth[0].extend(tc)
            pooled_truth[1].extend(ts)
            per = out["per_source"].setdefault(fold["source"], {}).setdefault(condition, {})
            for system in SYSTEMS:
                pred = fold[condition][system]
                per[system] = _metrics(tc, ts, pred, system)
                for k in range(4):
                    pooled[system][k].extend(pred[k])
        out["pooled"][condition] = {s: _metrics(pooled_truth[0], pooled_truth[1], pooled[s], s) for s in SYSTEMS}
        out["mean_over_sources"][condition] = {
            s: {
                key: float(np.mean([out["per_source"][f["source"]][condition][s][key] for f in folds]))
                for key in ("severity_macro_f1", "urgent_fpr", "category_accuracy")
                if key in out["pooled"][condition][s]
            }
            for s in SYSTEMS
        }
        if condition == "no_severity_label":
            for s in ("model", "model_alone", "naive"):
                _, _, sev, sev_p = pooled[s]
                out["reliability"][s] = reliability(sev_p, [a == b for a, b in zip(sev, pooled_truth[1])])
            basis = [b for f in folds for b in f["basis"][condition]]
            out["basis_share"] = {b: basis.count(b) / len(basis) for b in sorted(set(basis))}
    out["n"] = sum(f["n"] for f in folds)
    out["sources"] = [
        {
            "source": f["source"],
            "n": f["n"],
            "severity_counts": {s: f["truth"][1].count(s) for s in SEVERITIES if s in f["truth"][1]},
            "policy": {
                k: f["policy"][k]
                for k in ("severity_min_confidence", "severity_fallback", "false_page_cost", "category_fallback")
            },
            "temperature": f["calibration"],
        }
        for f in folds
    ]
    return out


def threshold_pairs(folds: Sequence[dict[str, Any]], condition: str = "no_severity_label") -> dict[str, Any]:
    """Rules of one source sharing an alertname with different severities: do they get different answers?"""
    pairs = 0
    split = 0
    for fold in folds:
        by_name: dict[str, list[int]] = {}
        for i, name in enumerate(fold["names"]):
            by_name.setdefault(name, []).append(i)
        sev_truth = fold["truth"][1]
        sev_pred = fold[condition]["model"][2]
        for idx in by_name.values():
            if len(idx) > 1 and len({sev_truth[i] for i in idx}) > 1:
                pairs += 1
                split += len({sev_pred[i] for i in idx}) > 1
    return {"pairs": pairs, "answered_differently": split}
