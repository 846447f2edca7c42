"""The trained model at prediction time: artifact loading, batched prediction, fallback.

The artifact is a pickle of plain types (metadata + the compressed, pickled sklearn
pipeline), so the scikit-learn version it was made with can be checked *before* any
sklearn object is unpickled: unpickling across versions can fail obscurely or, worse,
load and predict subtly differently. Only load artifacts you produced (pickle).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import sklearn

from classifier.features import clear_caches, tokens_batch
from classifier.keyword import P_EXPLICIT, P_TEXT, KeywordClassifier
from classifier.prediction import Prediction, with_stated_categories
from classifier.scoring import FastScorer
from streams.errors import CorruptDataError, NotFoundError

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "opsloop-classifier/1"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "model" / "opsloop-classifier.pkl"
DEFAULT_SEVERITY_ENV = "OPSLOOP_DEFAULT_SEVERITY"
RETRAIN_HINT = "retrain it with `opsloop classifier train` (or `python -m classifier.cli train`)"


class ModelVersionError(CorruptDataError):
    """The artifact was trained under another scikit-learn version than the one installed."""


class ModelArtifactError(CorruptDataError):
    """The artifact is unreadable, corrupted or of an unknown format."""


class ModelNotFoundError(NotFoundError, FileNotFoundError):
    """An explicitly requested artifact does not exist."""


def encode_artifact(pipeline: Any, meta: Mapping[str, Any]) -> bytes:
    """Serialise a fitted pipeline with its metadata; same inputs give the same bytes."""
    model_bytes = zlib.compress(pickle.dumps(pipeline, protocol=5), 9)
    outer = {
        "format": ARTIFACT_FORMAT,
        "meta": dict(meta),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "model": model_bytes,
    }
    return pickle.dumps(outer, protocol=5)


def read_artifact_meta(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outer record, metadata) of an artifact, without unpickling any sklearn object."""
    try:
        outer = pickle.loads(Path(path).read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise ModelArtifactError(f"{path} is not a readable classifier artifact ({exc}); {RETRAIN_HINT}") from exc
    if not isinstance(outer, dict) or outer.get("format") != ARTIFACT_FORMAT:
        raise ModelArtifactError(f"{path} is not an {ARTIFACT_FORMAT} artifact; {RETRAIN_HINT}")
    return outer, dict(outer["meta"])


def check_sklearn_version(meta: Mapping[str, Any], path: str | Path) -> None:
    """Refuse artifacts from another scikit-learn, saying how to fix it."""
    trained = meta.get("sklearn_version")
    if trained != sklearn.__version__:
        raise ModelVersionError(
            f"classifier artifact {path} was trained with scikit-learn {trained}, but scikit-learn "
            f"{sklearn.__version__} is installed; {RETRAIN_HINT}, or install scikit-learn=={trained}"
        )


# Tokens that mean the sender stated the severity (classifier/features.py), most pressing last.
STATED_SEVERITY_TOKENS = (
    ("sev:info", "info"),
    ("sev:warning", "warning"),
    ("sev:action", "action"),
    ("sev:urgent", "urgent"),
)
CLOSING_TOKEN = "closing:1"
# Tokens that mean the kind of event fixes its category (the keyword rules' explicit tier).
EXPLICIT_CATEGORY_TOKENS = (
    "scan:drift",
    "scan:compliance",
    "scan:cost",
    "tp:pr",
    "k:timer",
    "tp:dependabot_alert",
    "tp:secret_scanning_alert",
    "tp:code_scanning_alert",
    "tp:deployment",
    "tp:deployment_status",
    "tp:workflow_run",
    "tp:pipeline",
    "tp:release",
    "tp:check_run",
)
DEFAULT_SEVERITY = "warning"
PREDICTION_MEMO_MAX = (
    20_000  # token lists ModelClassifier.predict_batch remembers the prediction of (then it starts over)
)


class TokenColumns:
    """The feature columns of a few tokens (-1: never seen in training), to ask which rows use them."""

    def __init__(self, cols: np.ndarray, n_columns: int) -> None:
        self.cols = cols
        self._wanted = np.zeros(n_columns, dtype=bool)
        self._wanted[cols[cols >= 0]] = True

    def present(self, X: Any) -> np.ndarray:
        """Boolean matrix rows x cols: does the row use each column (a -1 column never).

        Read off the CSR arrays rather than by column slicing (``X[:, cols]``): scipy's fancy
        indexing cost ~0.1 ms a call whatever the batch, three calls a batch, and at a steady
        rate a batch is ~16 events. Every stored value is positive (``FastScorer.matrix``), so a
        stored column is a used one.
        """
        out = np.zeros((X.shape[0], len(self.cols)), dtype=bool)
        hits = np.flatnonzero(self._wanted[X.indices])
        if len(hits):
            rows = np.searchsorted(X.indptr, hits, side="right") - 1
            hit, col = np.nonzero(X.indices[hits, None] == self.cols[None, :])
            out[rows[hit], col] = True
        return out


class ModelClassifier:
    """The learned classifier with a cost-sensitive severity decision.

    Per event:

    * **severity stated** by the sender (labels.severity, a webhook's severity /
      urgency, a scan's worst finding) is honoured as is; a closing event (resolved,
      acknowledged, merged) is ``info``. ``severity_inferred=False``, probability 1.0.
    * otherwise the severity is **inferred**: the severity head's probabilities are
      calibrated (temperature scaling fitted on rules of catalogue groups left out of training,
      see training.py), the answer minimises the expected cost under ``severity_cost``
      (a false page costs most), and when the calibrated probability of that answer is
      below ``severity_min_confidence`` the event gets ``default_severity``
      (``warning`` unless configured) and ``severity_basis="default"``.
    * the category comes from the calibrated category head; below the category
      threshold the keyword rules answer when the artifact's cross-source selection
      found that this helps (``category_fallback``): ``keyword`` takes their answer
      whatever it rests on, ``keyword_no_text`` all but those resting on a word of the text
      alone (a word of the name, or "other" when they find nothing). A kind of event that fixes its
      category (a scan, a pull request, a timer) gets the rules' explicit answer.

    Artifacts without a ``decision`` record (made before this policy) keep the old
    behaviour: each head falls back to the keyword rules below its threshold.
    """

    def __init__(
        self,
        pipeline: Any,
        meta: Mapping[str, Any],
        model_sha256: str,
        threshold: float | None = None,
        default_severity: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.meta = dict(meta)
        self.version = "model-" + model_sha256[:12]
        thresholds = self.meta.get("thresholds", {})
        self.category_threshold = float(threshold if threshold is not None else thresholds.get("category", 0.0))
        self.severity_threshold = float(threshold if threshold is not None else thresholds.get("severity", 0.0))
        decision = self.meta.get("decision")
        self.decision = dict(decision) if decision else None
        if self.decision is not None and threshold is not None:
            # An explicit threshold overrides the policy's minimum severity confidence too.
            self.decision["severity_min_confidence"] = float(threshold)
        calibration = self.meta.get("calibration") or {}
        self.temperatures = (float(calibration.get("category", 1.0)), float(calibration.get("severity", 1.0)))
        self.default_severity = default_severity or (self.decision or {}).get("default_severity") or DEFAULT_SEVERITY
        self._scorer = FastScorer(pipeline)
        heads = pipeline.named_steps["heads"].estimators_
        self._category_head, self._severity_head = heads
        self.category_classes = self._category_head.classes_
        self.severity_classes = self._severity_head.classes_
        # Plain-str class names, so predictions carry str rather than numpy scalars.
        self._category_names = np.array([str(c) for c in self.category_classes], dtype=object)
        self._severity_names = np.array([str(c) for c in self.severity_classes], dtype=object)
        if self.default_severity not in self._severity_names:
            raise ValueError(f"default severity {self.default_severity!r} is not one of {list(self._severity_names)}")
        self._keyword = KeywordClassifier()
        if self.decision:
            cost = np.asarray(self.decision["severity_cost"], dtype=np.float64)
            order = [list(self.decision["severity_order"]).index(c) for c in self._severity_names]
            self._cost = np.ascontiguousarray(cost[np.ix_(order, order)])  # rows: true, cols: predicted
            self._default_index = int(np.flatnonzero(self._severity_names == self.default_severity)[0])
        self._stated_cols = self._columns([t for t, _ in STATED_SEVERITY_TOKENS])
        self._stated_levels = np.array([lvl for _, lvl in STATED_SEVERITY_TOKENS], dtype=object)
        self._closing_col = self._columns([CLOSING_TOKEN])
        self._explicit_cols = self._columns(list(EXPLICIT_CATEGORY_TOKENS))
        # predictions by token list: a prediction depends on its event's tokens only (each row is
        # scored on its own), and alerts repeat (re-sends, one rule firing on many instances)
        self._memo: dict[tuple[str, ...], Prediction] = {}

    def _columns(self, tokens: list[str]) -> TokenColumns:
        """The feature columns of the given tokens (-1 for one never seen in training), to ask which rows use them."""
        cols = np.array([self._scorer.column(t) for t in tokens], dtype=np.int64)
        return TokenColumns(cols, self._scorer.n_columns)

    def clear_caches(self) -> None:
        """Forget every memo (feature caches and token columns); predictions do not change."""
        clear_caches()
        self._scorer.clear_memo()
        self._memo.clear()

    @property
    def threshold(self) -> float:
        """The stricter of the two head thresholds (for display and decision records)."""
        return max(self.category_threshold, self.severity_threshold)

    def predict_proba_tokens(self, tokens: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw (uncalibrated) class probabilities of both heads for pre-tokenised events."""
        category, severity = self._scorer.proba(self._scorer.matrix(tokens))
        return category, severity

    def calibrated_proba_tokens(self, tokens: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated class probabilities of both heads (the artifact's temperatures)."""
        category, severity = self._scorer.proba(self._scorer.matrix(tokens), self.temperatures)
        return category, severity

    def predict_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One Prediction per event, in order; features for the whole batch at once."""
        if len(events) == 0:
            return []
        tokens = tokens_batch(events)
        if self.decision is None:
            return with_stated_categories(events, self._predict_legacy(tokens))
        return with_stated_categories(events, self._remembered(tokens))

    def _remembered(self, tokens: Sequence[list[str]]) -> list[Prediction]:
        """:meth:`decide_tokens`, asked only for the token lists it was not asked before."""
        memo = self._memo
        if len(memo) >= PREDICTION_MEMO_MAX:
            memo.clear()
        keys = [tuple(t) for t in tokens]
        missing: dict[tuple[str, ...], list[str]] = {}
        for key, toks in zip(keys, tokens):
            if key not in memo and key not in missing:
                missing[key] = toks
        if missing:
            memo.update(zip(missing, self.decide_tokens(list(missing.values()))))
        return [memo[key] for key in keys]

    def decide_tokens(self, tokens: Sequence[list[str]]) -> list[Prediction]:
        """The decision policy on pre-tokenised events (see the class docstring)."""
        X = self._scorer.matrix(tokens)
        cat_proba, sev_proba = self._scorer.proba(X, self.temperatures)
        n = X.shape[0]
        rows = np.arange(n)
        version = self.version
        decision = self.decision
        assert decision is not None
        # Severity: stated, else the cheapest answer in expectation, else the default.
        stated = self._stated_cols.present(X)
        closing = self._closing_col.present(X)[:, 0]
        has_stated = stated.any(axis=1) | closing
        expected_cost = sev_proba @ self._cost
        sev_idx = expected_cost.argmin(axis=1)
        sev_p = sev_proba[rows, sev_idx]
        unsure = sev_p < float(decision["severity_min_confidence"])
        fallback_sev = decision.get("severity_fallback", "default")
        if fallback_sev == "default":
            sev_idx = np.where(unsure, self._default_index, sev_idx)
            sev_p = sev_proba[rows, sev_idx]
        severities = self._severity_names[sev_idx].tolist()
        sev_ps = sev_p.tolist()
        basis = np.where(unsure, "default" if fallback_sev == "default" else "rules", "model").tolist()
        if has_stated.any():
            last = len(self._stated_levels) - 1 - stated[:, ::-1].argmax(axis=1)  # the most pressing stated level
            for i in np.flatnonzero(has_stated).tolist():
                severities[i] = "info" if closing[i] else str(self._stated_levels[last[i]])
                sev_ps[i] = 1.0
                basis[i] = "stated"
        # Category: calibrated head; keyword rules below the threshold if selected; explicit kinds.
        cat_idx = cat_proba.argmax(axis=1)
        cat_p = cat_proba[rows, cat_idx]
        categories = self._category_names[cat_idx].tolist()
        cat_ps = cat_p.tolist()
        cat_inferred = [True] * n
        cat_basis = ["model"] * n
        explicit = cast(np.ndarray, self._explicit_cols.present(X).any(axis=1))  # rows x cols: a row vector
        cat_fallback = decision.get("category_fallback")
        cat_unsure = (
            (cat_p < self.category_threshold) if cat_fallback in ("keyword", "keyword_no_text") else np.zeros(n, bool)
        )
        sev_rules = unsure & ~has_stated if fallback_sev == "keyword" else np.zeros(n, bool)
        ask = np.flatnonzero(explicit | cat_unsure | sev_rules).tolist()
        fell_back = [False] * n
        if ask:
            for i, (kw_c, kw_cp, kw_s, kw_sp) in zip(ask, self._keyword.predict_tokens([tokens[i] for i in ask])):
                if explicit[i] and kw_cp >= P_EXPLICIT:
                    categories[i], cat_ps[i], cat_inferred[i], cat_basis[i] = kw_c, kw_cp, False, "stated"
                elif cat_unsure[i] and (cat_fallback == "keyword" or kw_cp != P_TEXT):
                    categories[i], cat_ps[i], fell_back[i], cat_basis[i] = kw_c, kw_cp, True, "rules"
                if sev_rules[i]:
                    severities[i], sev_ps[i], fell_back[i] = kw_s, kw_sp, True
        out = []
        for i in range(n):
            b = basis[i]
            out.append(
                Prediction(
                    categories[i],
                    cat_ps[i],
                    severities[i],
                    sev_ps[i],
                    version,
                    fell_back[i] or b == "default",
                    severity_inferred=b != "stated",
                    category_inferred=cat_inferred[i],
                    severity_basis=b,
                    category_basis=cat_basis[i],
                )
            )
        return out

    def _predict_legacy(self, tokens: Sequence[list[str]]) -> list[Prediction]:
        """The policy of artifacts without a decision record: keyword fallback per head below its threshold."""
        cat_proba, sev_proba = self.predict_proba_tokens(tokens)
        n = len(tokens)
        rows = np.arange(n)
        cat_idx = cat_proba.argmax(axis=1)
        sev_idx = sev_proba.argmax(axis=1)
        cat_p = cat_proba[rows, cat_idx]
        sev_p = sev_proba[rows, sev_idx]
        unsure = (cat_p < self.category_threshold) | (sev_p < self.severity_threshold)
        categories = self._category_names[cat_idx].tolist()
        severities = self._severity_names[sev_idx].tolist()
        cat_ps = cat_p.tolist()
        sev_ps = sev_p.tolist()
        version = self.version
        out = [
            Prediction(c, cp, s, sp, version, False, True, True, "model")
            for c, cp, s, sp in zip(categories, cat_ps, severities, sev_ps)
        ]
        if unsure.any():
            where = np.flatnonzero(unsure).tolist()
            for i, (kw_category, kw_cp, kw_severity, kw_sp) in zip(
                where, self._keyword.predict_tokens([tokens[i] for i in where])
            ):
                category, cp, severity, sp = categories[i], cat_ps[i], severities[i], sev_ps[i]
                cat_rules = cp < self.category_threshold
                if cat_rules:
                    category, cp = kw_category, kw_cp
                if sp < self.severity_threshold:
                    severity, sp = kw_severity, kw_sp
                out[i] = Prediction(
                    category, cp, severity, sp, version, True, True, True, "rules", "rules" if cat_rules else "model"
                )
        return out

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        path: str | Path = "<bytes>",
        threshold: float | None = None,
        default_severity: str | None = None,
    ) -> ModelClassifier:
        """Build from artifact bytes, checking format, sklearn version and integrity first."""
        try:
            outer = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
            raise ModelArtifactError(f"{path} is not a readable classifier artifact ({exc}); {RETRAIN_HINT}") from exc
        if not isinstance(outer, dict) or outer.get("format") != ARTIFACT_FORMAT:
            raise ModelArtifactError(f"{path} is not an {ARTIFACT_FORMAT} artifact; {RETRAIN_HINT}")
        meta = dict(outer["meta"])
        check_sklearn_version(meta, path)
        model_bytes = outer["model"]
        digest = hashlib.sha256(model_bytes).hexdigest()
        if digest != outer.get("model_sha256"):
            raise ModelArtifactError(f"{path} is corrupted (model hash mismatch); {RETRAIN_HINT}")
        pipeline = pickle.loads(zlib.decompress(model_bytes))
        return cls(pipeline, meta, digest, threshold=threshold, default_severity=default_severity)


def load_classifier(
    path: str | Path | None = None, threshold: float | None = None, default_severity: str | None = None
) -> ModelClassifier | KeywordClassifier:
    """The committed model, or the one at ``path``.

    ``default_severity`` (else $OPSLOOP_DEFAULT_SEVERITY, else the artifact's, else
    ``warning``) is what an event gets when its severity was not stated and the model
    is not confident enough.

    With no path and no committed artifact, the keyword rules are returned (and a
    warning logged) so a fresh checkout still classifies. An explicit path that does
    not exist, an artifact from another scikit-learn (ModelVersionError) or a corrupted
    one (ModelArtifactError) is an error: silently degrading would hide a deploy mistake.
    """
    if path is None:
        if not DEFAULT_MODEL_PATH.is_file():
            log.warning("no classifier artifact at %s; using keyword rules (%s)", DEFAULT_MODEL_PATH, RETRAIN_HINT)
            return KeywordClassifier()
        path = DEFAULT_MODEL_PATH
    artifact = Path(path)
    if not artifact.is_file():
        raise ModelNotFoundError(f"no classifier artifact at {artifact}; {RETRAIN_HINT}")
    default_severity = default_severity or os.environ.get(DEFAULT_SEVERITY_ENV) or None
    return ModelClassifier.from_bytes(
        artifact.read_bytes(), artifact, threshold=threshold, default_severity=default_severity
    )
