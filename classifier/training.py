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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import scipy
import sklearn
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from streams.errors import InvalidInputError

from classifier.columns import ActiveColumns
from classifier.corpus import Sample, build_corpus, samples_sha256, split_by_service, unit_hash
from classifier.dataset import default_rules_path, load_rules
from classifier.examples import EXAMPLES_PATH, load_examples
from classifier.features import EventTokenizer, tokens_batch, words
from classifier.heads import TwoHeads
from classifier.keyword import KeywordClassifier
from classifier.model import DEFAULT_MODEL_PATH, ModelClassifier, encode_artifact

FEATURE_VERSION = "features-1"
N_FEATURES = 2**18
# Chosen once by 5-fold cross-validation grouped by service on the *training*
# services only (C in 1, 3, 10, 30); the test services played no part.
C_REGULARISATION = 10.0
SEVERITY_DROP_SHARE = 0.5
CV_FOLDS = 5
THRESHOLD_GRID = tuple(round(float(x), 2) for x in np.arange(0.0, 0.91, 0.05))
# Fallback thresholds maximise macro-F1 averaged over these held-out conditions (the
# two the report scores): one threshold serves senders with and without labels.severity.
SELECTION_CONDITIONS = ("as_sent", "no_severity_label")
CREATED_BY = "opsloop classifier train"
# Words of service / job names that say nothing about which service it is.
_GENERIC_NAME_WORDS = frozenset({"exporter", "embedded", "server", "service", "monitor", "self", "and"})
# Token prefixes that identify a service rather than describe a problem.
_IDENTITY_PREFIXES = frozenset({"m", "mns", "lv", "nb"})


class TrainingDataError(InvalidInputError, ValueError):
    """The corpus cannot be trained on (e.g. a class is missing from the training side)."""


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
                    severity=LogisticRegression(C=C, max_iter=3000),
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


def validation_rows(samples: Sequence[Sample]) -> list[list[str]]:
    """Held-out rows: as sent, with labels.severity missing on the same fixed half of alerts."""
    return [
        drop_severity_tokens(tokens) if _drops_severity(sample, "drop-severity") else tokens
        for sample, tokens in zip(samples, tokens_batch([s.event for s in samples]))
    ]


def condition_rows(samples: Sequence[Sample]) -> dict[str, list[list[str]]]:
    """Held-out token rows under each condition the report scores (see SELECTION_CONDITIONS)."""
    tokens = tokens_batch([s.event for s in samples])
    return {"as_sent": tokens, "no_severity_label": [drop_severity_tokens(t) for t in tokens]}


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


def out_of_fold(
    samples: Sequence[Sample], C: float = C_REGULARISATION, folds: int = CV_FOLDS
) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold predictions over the training services, folds grouped by service.

    One fit per fold; its held-out services are scored under every selection
    condition (as sent, and with labels.severity removed).
    """
    n = len(samples)
    rows = condition_rows(samples)
    out = {
        condition: {"cat_pred": np.empty(n, dtype=object), "sev_pred": np.empty(n, dtype=object),
                    "cat_p": np.zeros(n), "sev_p": np.zeros(n)}
        for condition in SELECTION_CONDITIONS
    }
    groups = [s.service for s in samples]
    for train_idx, val_idx in GroupKFold(n_splits=folds).split(np.zeros(n), groups=groups):
        pipeline = fit_pipeline([samples[i] for i in train_idx], C)
        clf = ModelClassifier(pipeline, {}, "0" * 12)
        for condition in SELECTION_CONDITIONS:
            cproba, sproba = clf.predict_proba_tokens([rows[condition][i] for i in val_idx])
            res = out[condition]
            res["cat_pred"][val_idx] = clf.category_classes[cproba.argmax(1)]
            res["sev_pred"][val_idx] = clf.severity_classes[sproba.argmax(1)]
            res["cat_p"][val_idx] = cproba.max(1)
            res["sev_p"][val_idx] = sproba.max(1)
    return out


def macro_f1(truth: Sequence[str], pred: Sequence[str] | np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``truth`` (as the report scores)."""
    present = sorted(set(truth))
    return float(f1_score(list(truth), list(pred), labels=present, average="macro", zero_division=0))


def threshold_curve(truth: Sequence[str], model: Sequence[str] | np.ndarray, p: np.ndarray, rules: Sequence[str]) -> list[float]:
    """Macro-F1 of "model if p >= t else rules" for every t of THRESHOLD_GRID."""
    model_a = np.asarray(model, dtype=object)
    rules_a = np.asarray(rules, dtype=object)
    return [macro_f1(truth, np.where(p >= t, model_a, rules_a)) for t in THRESHOLD_GRID]


def choose_threshold(curves: Sequence[Sequence[float]]) -> float:
    """The lowest threshold maximising the mean of the given macro-F1 curves."""
    mean = np.mean(np.asarray(curves, dtype=float), axis=0)
    best = int(np.flatnonzero(mean >= mean.max() - 1e-12)[0])
    return THRESHOLD_GRID[best]


def choose_thresholds(samples: Sequence[Sample], C: float = C_REGULARISATION) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-head fallback thresholds from out-of-fold predictions on the training services only.

    Objective: macro-F1 (the metric the issue scores), averaged over the two conditions
    the report scores, because one threshold serves events with and without
    labels.severity. Returns the thresholds and a record of the selection (the CV
    numbers at the chosen threshold, for the artifact metadata and the report).
    """
    oof = out_of_fold(samples, C)
    rows = condition_rows(samples)
    keyword = KeywordClassifier()
    truth = {"category": [s.category for s in samples], "severity": [s.severity for s in samples]}
    thresholds: dict[str, float] = {}
    record: dict[str, Any] = {
        "objective": "mean over conditions of out-of-fold macro-F1",
        "conditions": list(SELECTION_CONDITIONS),
        "folds": CV_FOLDS,
        "grouped_by": "service",
        "n_train_events": len(samples),
        "n_train_services": len({s.service for s in samples}),
        "grid": list(THRESHOLD_GRID),
    }
    for head, pred_key, p_key, kw_index in (("category", "cat_pred", "cat_p", 0), ("severity", "sev_pred", "sev_p", 2)):
        curves, rules_by_condition = {}, {}
        for condition in SELECTION_CONDITIONS:
            rules = [cast(str, k[kw_index]) for k in keyword.predict_tokens(rows[condition])]  # a label: index 0 or 2
            rules_by_condition[condition] = rules
            res = oof[condition]
            curves[condition] = threshold_curve(truth[head], res[pred_key], res[p_key], rules)
        t = choose_threshold(list(curves.values()))
        i = THRESHOLD_GRID.index(t)
        thresholds[head] = t
        record[head] = {
            "threshold": t,
            "curve": {c: [round(v, 4) for v in curve] for c, curve in curves.items()},
            "cv": {
                c: {
                    "model": round(curves[c][i], 4),
                    "model_alone": round(macro_f1(truth[head], oof[c][pred_key]), 4),
                    "keyword": round(macro_f1(truth[head], rules_by_condition[c]), 4),
                    "fallback_rate": round(float(np.mean(oof[c][p_key] < t)), 4),
                }
                for c in SELECTION_CONDITIONS
            },
        }
    return thresholds, record


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
        thresholds, selection = choose_thresholds(train, C)
    else:
        thresholds, selection = {"category": 0.0, "severity": 0.0}, {}
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
        "threshold_selection": selection,
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
    sidecar.write_text(json.dumps(dict(run.meta, model_version=run.classifier.version), indent=2, sort_keys=True) + "\n")
    return target, sidecar
