"""Fitting the model: pipeline, augmentation, fallback thresholds, artifact.

Everything is deterministic: a fixed corpus order, a hash-based split and
augmentation, a stateless hasher and lbfgs (no random start), so training twice on
the same data gives the same model, byte for byte.

Two augmentations, both applied to training rows only, both aimed at the two ways
production differs from the catalogue:

* *Severity dropped*: for a fixed half of the alerts labels.severity is removed, so
  the severity head also learns from words and works for senders that omit it.
* *Unseen service*: every training event also appears with its service identity
  masked (words of the service / job name, full metric names, metric namespaces,
  label values, name bigrams). The model is thereby pushed to learn from generic
  words ("replication", "heap", "5xx") that carry over to software it never saw,
  while the unmasked copy still lets it use a product name it does know.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from classifier.columns import ActiveColumns
from classifier.corpus import Sample, build_corpus, samples_sha256, split_by_service, unit_hash
from classifier.dataset import default_rules_path, load_rules
from classifier.examples import EXAMPLES_PATH, load_examples
from classifier.features import EventTokenizer, tokens_batch, words
from classifier.heads import TwoHeads
from classifier.keyword import P_TEXT, KeywordClassifier
from classifier.model import DEFAULT_MODEL_PATH, DEFAULT_SEVERITY, ModelClassifier, encode_artifact
from streams.errors import InvalidInputError
from streams.model.taxonomy import CATEGORIES, SEVERITIES

# Predicted or true labels: a list, or a numpy array of them (object dtype).
Labels = Sequence[str] | np.ndarray

FEATURE_VERSION = "features-2"
N_FEATURES = 2**18
# Chosen once by 5-fold cross-validation grouped by service on the *training*
# services only (C in 1, 3, 10, 30); the test services played no part.
C_REGULARISATION = 10.0
SEVERITY_DROP_SHARE = 0.5
THRESHOLD_GRID = tuple(round(float(x), 2) for x in np.arange(0.0, 0.91, 0.05))
CREATED_BY = "opsloop classifier train"
# Words of service / job names that say nothing about which service it is.
_GENERIC_NAME_WORDS = frozenset({"exporter", "embedded", "server", "service", "monitor", "self", "and"})
# Token prefixes that identify a service rather than describe a problem.
_IDENTITY_PREFIXES = frozenset({"m", "mns", "lv", "nb"})


class TrainingDataError(InvalidInputError, ValueError):
    """The corpus cannot be trained on (e.g. a class is missing from the training side)."""


# Chosen by the cross-source selection below (balanced lifts the rare info class; the
# probabilities are re-calibrated afterwards, so the weighting does not bias confidence).
SEVERITY_CLASS_WEIGHT: str | None = "balanced"


def build_pipeline(C: float = C_REGULARISATION) -> Pipeline:
    """Events -> tokens -> hashed counts -> seen columns -> log-scaled, L2-normalised -> two heads."""
    return Pipeline(
        [
            ("tokens", EventTokenizer()),
            ("hash", FeatureHasher(n_features=N_FEATURES, input_type="string", alternate_sign=False)),
            ("columns", ActiveColumns()),
            ("scale", TfidfTransformer(use_idf=False, sublinear_tf=True, norm="l2")),
            (
                "heads",
                TwoHeads(
                    category=LogisticRegression(C=C, class_weight="balanced", max_iter=3000),
                    severity=LogisticRegression(C=C, class_weight=SEVERITY_CLASS_WEIGHT, max_iter=3000),
                ),
            ),
        ]
    )


def without_severity(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of an event without labels.severity (the rest shared, not copied)."""
    labels = event.get("labels")
    if not isinstance(labels, dict) or "severity" not in labels:
        return event
    return dict(event, labels={k: v for k, v in labels.items() if k != "severity"})


def drop_severity_tokens(tokens: list[str]) -> list[str]:
    """Tokens as if the event had carried no labels.severity."""
    return [t for t in tokens if not t.startswith(("sev:", "sevraw:"))]


def identity_words(sample: Sample) -> frozenset[str]:
    """Words naming the sample's service (its service name and job label)."""
    found = set(words(sample.service))
    labels = sample.event.get("labels")
    if isinstance(labels, dict) and isinstance(labels.get("job"), str):
        found.update(words(labels["job"]))
    return frozenset(found - _GENERIC_NAME_WORDS)


def mask_identity(tokens: list[str], identity: frozenset[str]) -> list[str]:
    """Tokens as if the event came from a service the model has never heard of."""
    out = []
    for tok in tokens:
        prefix, _, value = tok.partition(":")
        if prefix in _IDENTITY_PREFIXES:
            continue
        if prefix in ("n", "w") and value in identity:
            continue
        out.append(tok)
    return out


def _drops_severity(sample: Sample, salt: str) -> bool:
    return sample.origin == "rule" and unit_hash(salt, sample.ref) < SEVERITY_DROP_SHARE


def training_rows(samples: Sequence[Sample]) -> tuple[list[list[str]], np.ndarray]:
    """Augmented token rows and their (category, severity) targets."""
    rows: list[list[str]] = []
    targets: list[tuple[str, str]] = []
    for sample, tokens in zip(samples, tokens_batch([s.event for s in samples])):
        full = drop_severity_tokens(tokens) if _drops_severity(sample, "drop-severity") else tokens
        masked = mask_identity(tokens, identity_words(sample))
        if _drops_severity(sample, "drop-severity-masked"):
            masked = drop_severity_tokens(masked)
        for row in (full, masked):
            rows.append(row)
            targets.append((sample.category, sample.severity))
    return rows, np.array(targets, dtype=object)


def fit_pipeline(samples: Sequence[Sample], C: float = C_REGULARISATION) -> Pipeline:
    """Fit on augmented rows; the tokenizer step is stateless, so the whole pipeline then takes events."""
    rows, targets = training_rows(samples)
    for column, name in ((0, "category"), (1, "severity")):
        if len(set(targets[:, column])) < 2:
            raise TrainingDataError(f"training data has fewer than two {name} classes")
    pipeline = build_pipeline(C)
    # One BLAS thread: multi-threaded BLAS on a busy 2-core machine was 5-10x slower
    # here, and single-threaded reductions are reproducible run to run.
    with threadpool_limits(limits=1):
        pipeline[1:].fit(rows, targets)
    return pipeline


def macro_f1(truth: Sequence[str], pred: Labels) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``truth`` (as the report scores)."""
    present = sorted(set(truth))
    return float(f1_score(list(truth), list(pred), labels=present, average="macro", zero_division=0))


def threshold_curve(
    truth: Sequence[str], model: Labels, p: np.ndarray, rules: Labels, where: np.ndarray | None = None
) -> list[float]:
    """Macro-F1 of "model if p >= t else rules" for every t of THRESHOLD_GRID (rules only ``where`` True, if given)."""
    model_a = np.asarray(model, dtype=object)
    rules_a = np.asarray(rules, dtype=object)
    usable = np.ones(len(model_a), bool) if where is None else where
    return [macro_f1(truth, np.where((p >= t) | ~usable, model_a, rules_a)) for t in THRESHOLD_GRID]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class TrainingRun:
    """What one training run produced: the artifact bytes, its metadata and the split."""

    artifact: bytes
    meta: dict[str, Any]
    classifier: ModelClassifier
    train: list[Sample]
    test: list[Sample]
    extras: dict[str, Any] = field(default_factory=dict)


def load_corpus_split(
    rules_path: str | Path | None = None, examples_path: str | Path | None = None
) -> tuple[list[Sample], list[Sample], dict[str, str]]:
    """(train, test, source file hashes) from the catalogue and the hand-labelled examples."""
    rules_file = Path(rules_path) if rules_path else default_rules_path()
    examples_file = Path(examples_path) if examples_path else EXAMPLES_PATH
    corpus = build_corpus(load_rules(rules_file), load_examples(examples_file))
    train, test = split_by_service(corpus)
    sources = {"rules_sha256": file_sha256(rules_file), "examples_sha256": file_sha256(examples_file)}
    return train, test, sources


def train_model(
    rules_path: str | Path | None = None,
    examples_path: str | Path | None = None,
    C: float = C_REGULARISATION,
    with_thresholds: bool = True,
) -> TrainingRun:
    """Fit on the training services and package the artifact (metrics are added by evaluation)."""
    train, test, sources = load_corpus_split(rules_path, examples_path)
    pipeline = fit_pipeline(train, C)
    if with_thresholds:
        calibration, decision, thresholds, selection = select_policy(train, C)
    else:
        calibration, decision, thresholds, selection = (
            {"category": 1.0, "severity": 1.0},
            None,
            {"category": 0.0, "severity": 0.0},
            {},
        )
    meta: dict[str, Any] = {
        "created_by": CREATED_BY,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "feature_version": FEATURE_VERSION,
        "training_data_sha256": samples_sha256(train),
        **sources,
        "dataset_credit": '"Awesome Prometheus alerts" by Samuel Berthe and contributors, CC BY 4.0',
        "params": {
            "C": C,
            "n_features": N_FEATURES,
            "active_columns": int(len(pipeline.named_steps["columns"].columns_)),
            "severity_drop_share": SEVERITY_DROP_SHARE,
            "category_class_weight": "balanced",
            "severity_class_weight": None,
            "augmentation": ["severity-dropped half", "service identity masked copy"],
        },
        "n_train": len(train),
        "n_test": len(test),
        "test_services": sorted({s.service for s in test}),
        "thresholds": thresholds,
        "calibration": calibration,
        "decision": decision,
        "policy_selection": selection,
        "metrics": {},
    }
    artifact = encode_artifact(pipeline, meta)
    return TrainingRun(artifact, meta, ModelClassifier.from_bytes(artifact), train, test)


def with_metrics(run: TrainingRun, metrics: dict[str, Any]) -> TrainingRun:
    """The same fitted model re-packaged with its evaluation metrics in the metadata."""
    meta = dict(run.meta, metrics=metrics)
    artifact = encode_artifact(run.classifier.pipeline, meta)
    return TrainingRun(artifact, meta, ModelClassifier.from_bytes(artifact), run.train, run.test, run.extras)


def write_artifact(run: TrainingRun, path: str | Path = DEFAULT_MODEL_PATH) -> tuple[Path, Path]:
    """Write the artifact and its JSON sidecar (same metadata, for humans and diffs)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(run.artifact)
    sidecar = target.with_suffix(".json")
    sidecar.write_text(
        json.dumps(dict(run.meta, model_version=run.classifier.version), indent=2, sort_keys=True) + "\n"
    )
    return target, sidecar


# --- Cross-source calibration and the severity decision ---------------------------------
#
# What the model will meet in production is rules written by other people, so its
# probabilities are calibrated, and its decision thresholds chosen, on rules of
# sources it was not trained on: each training source (a catalogue group, the proxy
# for house style, see classifier/sources.py) is held out in turn, a model is fitted on
# the rest, and the held-out firing alerts are scored *without* labels.severity (the
# case where the severity head decides anything). Resolved notifications and the
# hand-labelled examples always train and are never scored here.


# Expected-cost decision: rows are the true severity, columns the answer, in SEVERITIES
# order (info, warning, action, urgent). A false page (urgent for a warning or an info)
# costs most; a missed page costs less than a false one, because a stated severity is
# honoured and what arrives without one is rarely a page (see LABELLING.md).
def severity_cost(false_page: float) -> tuple[tuple[float, ...], ...]:
    """The cost matrix with a false page (urgent for a warning) costing ``false_page``; for an info, 2 more."""
    return (
        (0.0, 1.0, 2.0, false_page + 2.0),
        (1.0, 0.0, 1.0, false_page),
        (2.0, 1.0, 0.0, 3.0),
        (5.0, 3.0, 2.0, 0.0),
    )


# The cost of a false page is a policy; the grid is searched for the lowest cost that
# keeps the cross-source false-page rate within MAX_URGENT_FPR at the best macro-F1.
FALSE_PAGE_COSTS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
MAX_URGENT_FPR = 0.08
CONFIDENCE_GRID = tuple(round(float(x), 2) for x in np.arange(0.0, 0.91, 0.05))
TEMPERATURE_GRID = tuple(round(float(x), 2) for x in np.arange(0.3, 4.01, 0.05))
SEVERITY_FALLBACKS = ("default", "keyword")


def is_firing_rule(sample: Sample) -> bool:
    """An alert rule's firing event (not its resolved copy, not a hand-written example)."""
    return sample.origin == "rule" and not sample.ref.endswith("r")


def rule_sources(samples: Sequence[Sample]) -> list[str]:
    """The alert-rule sources present, in first-seen order."""
    seen: dict[str, None] = {}
    for s in samples:
        if s.origin == "rule":
            seen.setdefault(s.source, None)
    return list(seen)


def source_folds(samples: Sequence[Sample]) -> list[tuple[str, list[Sample], list[Sample]]]:
    """(source, training samples, held-out firing alerts) for each rule source held out in turn.

    The training side is every sample of every other source (their resolved copies and
    the hand-labelled examples included); nothing of the held-out source trains.
    """
    return [
        (
            source,
            [s for s in samples if s.source != source],
            [s for s in samples if s.source == source and is_firing_rule(s)],
        )
        for source in rule_sources(samples)
    ]


def cross_source_logits(samples: Sequence[Sample], C: float = C_REGULARISATION) -> dict[str, Any]:
    """Out-of-source logits of both heads for every firing alert, labels.severity removed.

    One fit per rule source (on everything else, examples included). Returns the
    indices scored, their logits per head, the classes of each head and the source of
    each scored row.
    """
    idx = [i for i, s in enumerate(samples) if is_firing_rule(s)]
    rows = {i: drop_severity_tokens(t) for i, t in zip(idx, tokens_batch([samples[i].event for i in idx]))}
    cat_logits: dict[int, np.ndarray] = {}
    sev_logits: dict[int, np.ndarray] = {}
    classes: tuple[list[str], list[str]] | None = None
    for source, train, _held_samples in source_folds(samples):
        held = [i for i in idx if samples[i].source == source]
        clf = ModelClassifier(fit_pipeline(train, C), {}, "0" * 12)
        cat_names = [str(c) for c in clf.category_classes]
        sev_names = [str(c) for c in clf.severity_classes]
        X = clf._scorer.matrix([rows[i] for i in held])
        cl, sl = clf._scorer.logits(X)
        for j, i in enumerate(held):
            cat_logits[i] = _aligned(cl[j], cat_names, CATEGORIES)
            sev_logits[i] = _aligned(sl[j], sev_names, SEVERITIES)
        classes = (cat_names, sev_names)
    assert classes is not None, "no alert rules to calibrate on"
    return {
        "index": idx,
        "category": np.array([cat_logits[i] for i in idx]),
        "severity": np.array([sev_logits[i] for i in idx]),
        "source": [samples[i].source for i in idx],
        "tokens": [rows[i] for i in idx],
    }


def _aligned(logits: np.ndarray, names: list[str], taxonomy: Sequence[str]) -> np.ndarray:
    """Logits re-indexed onto the full taxonomy (a class the fold never saw: -inf)."""
    out = np.full(len(taxonomy), -np.inf)
    for j, name in enumerate(names):
        out[list(taxonomy).index(name)] = logits[j]
    return out


def softmax_t(logits: np.ndarray, t: float) -> np.ndarray:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def fit_temperature(logits: np.ndarray, truth_index: np.ndarray) -> float:
    """The temperature of TEMPERATURE_GRID minimising the negative log-likelihood (lowest on a tie)."""
    best, best_nll = 1.0, np.inf
    rows = np.arange(len(truth_index))
    for t in TEMPERATURE_GRID:
        p = softmax_t(logits, t)[rows, truth_index]
        nll = float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))
        if nll < best_nll - 1e-12:
            best, best_nll = t, nll
    return best


def severity_decision(
    proba: np.ndarray, cost: np.ndarray, min_confidence: float, default_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """(answer index, unsure mask): the least expected cost, the default below min_confidence."""
    idx = (proba @ cost).argmin(axis=1)
    p = proba[np.arange(len(idx)), idx]
    unsure = p < min_confidence
    return np.where(unsure, default_index, idx), unsure


def urgent_fpr(truth: Sequence[str], pred: Labels) -> float:
    """Share of warnings and infos answered urgent (a false page)."""
    calm = [p for t, p in zip(truth, pred) if t in ("info", "warning")]
    return float(np.mean([p == "urgent" for p in calm])) if calm else 0.0


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by size."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if len(conf) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() / len(conf) * abs(ok[m].mean() - conf[m].mean())
    return float(total)


def select_policy(
    samples: Sequence[Sample], C: float = C_REGULARISATION
) -> tuple[dict[str, float], dict[str, Any], dict[str, float], dict[str, Any]]:
    """Temperatures, the decision record, the thresholds and a selection record, all from cross-source OOF.

    Severity: the temperature minimising NLL; then, for each fallback (the default
    severity, or the keyword rules) and each minimum confidence of the grid, macro-F1
    and the urgent false-positive rate over the out-of-source firing alerts without
    labels.severity; the pair with the best macro-F1 whose false-page rate is at most
    MAX_URGENT_FPR wins (lowest confidence on a tie). Category: the temperature, then
    keyword fallback below a threshold only if some threshold beats the model alone; the
    fallback either takes every keyword answer (``keyword``) or all but those resting on a
    word of the text alone (``keyword_no_text``: such a word is a weaker guess than the
    model's), whichever scores best.
    """
    oof = cross_source_logits(samples, C)
    idx = oof["index"]
    truth_sev = [samples[i].severity for i in idx]
    truth_cat = [samples[i].category for i in idx]
    sev_index = np.array([SEVERITIES.index(s) for s in truth_sev])
    cat_index = np.array([CATEGORIES.index(c) for c in truth_cat])
    t_sev = fit_temperature(oof["severity"], sev_index)
    t_cat = fit_temperature(oof["category"], cat_index)
    sev_p = softmax_t(oof["severity"], t_sev)
    cat_p = softmax_t(oof["category"], t_cat)
    keyword = KeywordClassifier().predict_tokens(oof["tokens"])
    kw_sev = np.array([k[2] for k in keyword], dtype=object)
    kw_cat = np.array([k[0] for k in keyword], dtype=object)
    names = np.array(SEVERITIES, dtype=object)
    default_index = SEVERITIES.index(DEFAULT_SEVERITY)
    curves: dict[str, dict[str, list[float]]] = {}
    best: tuple[float, float, str, float] | None = None
    for false_page in FALSE_PAGE_COSTS:
        cost = np.asarray(severity_cost(false_page))
        for fallback in SEVERITY_FALLBACKS:
            f1s, fprs = [], []
            for t in CONFIDENCE_GRID:
                chosen, unsure = severity_decision(sev_p, cost, t, default_index)
                pred = names[chosen]
                if fallback == "keyword":
                    pred = np.where(unsure, kw_sev, pred)
                f1, fpr = macro_f1(truth_sev, pred), urgent_fpr(truth_sev, pred)
                f1s.append(round(f1, 4))
                fprs.append(round(fpr, 4))
                if fpr <= MAX_URGENT_FPR and (best is None or f1 > best[0] + 1e-12):
                    best = (f1, t, fallback, false_page)
            curves[f"{fallback}, false page {false_page:g}"] = {"macro_f1": f1s, "urgent_fpr": fprs}
    if best is None:  # nothing meets the false-page bound: always the default
        best = (macro_f1(truth_sev, [DEFAULT_SEVERITY] * len(truth_sev)), 1.01, "default", FALSE_PAGE_COSTS[-1])
    sev_f1, min_conf, sev_fallback, false_page = best
    argmax_pred = names[sev_p.argmax(axis=1)]
    cat_names = np.array(CATEGORIES, dtype=object)
    cat_pred = cat_names[cat_p.argmax(axis=1)]
    cat_top = cat_p.max(axis=1)
    kw_not_text = np.array([k[1] != P_TEXT for k in keyword], dtype=bool)
    cat_curves = {
        "keyword": [round(v, 4) for v in threshold_curve(truth_cat, cat_pred, cat_top, kw_cat)],
        "keyword_no_text": [round(v, 4) for v in threshold_curve(truth_cat, cat_pred, cat_top, kw_cat, kw_not_text)],
    }
    alone = macro_f1(truth_cat, cat_pred)
    cat_mode = max(cat_curves, key=lambda m: max(cat_curves[m]))  # the first on a tie
    cat_curve = cat_curves[cat_mode]
    best_t = THRESHOLD_GRID[int(np.argmax(cat_curve))]
    use_kw = max(cat_curve) > alone + 1e-9
    temperatures = {"category": t_cat, "severity": t_sev}
    decision = {
        "severity_order": list(SEVERITIES),
        "severity_cost": [list(r) for r in severity_cost(false_page)],
        "false_page_cost": false_page,
        "severity_min_confidence": min_conf,
        "severity_fallback": sev_fallback,
        "default_severity": DEFAULT_SEVERITY,
        "category_fallback": cat_mode if use_kw else "none",
    }
    thresholds = {"category": best_t if use_kw else 0.0, "severity": min_conf}
    record = {
        "procedure": "leave-one-source-out over the training sources; firing alerts without labels.severity",
        "sources": rule_sources(samples),
        "n_alerts": len(idx),
        "grid": list(CONFIDENCE_GRID),
        "max_urgent_fpr": MAX_URGENT_FPR,
        "severity": {
            "temperature": t_sev,
            "curves": curves,
            "chosen": {
                "fallback": sev_fallback,
                "min_confidence": min_conf,
                "false_page_cost": false_page,
                "macro_f1": round(sev_f1, 4),
            },
            "argmax_uncalibrated": {
                "macro_f1": round(macro_f1(truth_sev, names[oof["severity"].argmax(axis=1)]), 4),
                "urgent_fpr": round(urgent_fpr(truth_sev, names[oof["severity"].argmax(axis=1)]), 4),
            },
            "argmax": {
                "macro_f1": round(macro_f1(truth_sev, argmax_pred), 4),
                "urgent_fpr": round(urgent_fpr(truth_sev, argmax_pred), 4),
            },
            "keyword": {
                "macro_f1": round(macro_f1(truth_sev, kw_sev), 4),
                "urgent_fpr": round(urgent_fpr(truth_sev, kw_sev), 4),
            },
            "ece_uncalibrated": round(
                expected_calibration_error(
                    softmax_t(oof["severity"], 1.0).max(axis=1),
                    names[oof["severity"].argmax(axis=1)] == np.array(truth_sev, dtype=object),
                ),
                4,
            ),
            "ece_calibrated": round(
                expected_calibration_error(sev_p.max(axis=1), argmax_pred == np.array(truth_sev, dtype=object)), 4
            ),
        },
        "category": {
            "temperature": t_cat,
            "curve": cat_curves["keyword"],
            "curve_no_text": cat_curves["keyword_no_text"],
            "model_alone": round(alone, 4),
            "keyword": round(macro_f1(truth_cat, kw_cat), 4),
            "fallback": cat_mode if use_kw else "none",
            "threshold": best_t if use_kw else 0.0,
        },
    }
    return temperatures, decision, thresholds, record
