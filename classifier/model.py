"""The trained model at prediction time: artifact loading, batched prediction, fallback.

The artifact is a pickle of plain types (metadata + the compressed, pickled sklearn
pipeline), so the scikit-learn version it was made with can be checked *before* any
sklearn object is unpickled: unpickling across versions can fail obscurely or, worse,
load and predict subtly differently. Only load artifacts you produced (pickle).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import sklearn

from streams.errors import CorruptDataError, NotFoundError

from classifier.features import clear_caches, tokens_batch
from classifier.keyword import KeywordClassifier
from classifier.prediction import Prediction
from classifier.scoring import FastScorer

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "opsloop-classifier/1"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "model" / "opsloop-classifier.pkl"
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


class ModelClassifier:
    """The learned classifier, falling back to keyword rules per head when unsure.

    A head (category or severity) whose top probability is below its threshold takes
    the keyword rules' answer instead, and the Prediction says fallback=True. The
    thresholds come from the artifact (chosen on training data only, see training.py)
    unless overridden.
    """

    def __init__(
        self,
        pipeline: Any,
        meta: Mapping[str, Any],
        model_sha256: str,
        threshold: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.meta = dict(meta)
        self.version = "model-" + model_sha256[:12]
        thresholds = self.meta.get("thresholds", {})
        self.category_threshold = float(threshold if threshold is not None else thresholds.get("category", 0.0))
        self.severity_threshold = float(threshold if threshold is not None else thresholds.get("severity", 0.0))
        self._scorer = FastScorer(pipeline)
        heads = pipeline.named_steps["heads"].estimators_
        self._category_head, self._severity_head = heads
        self.category_classes = self._category_head.classes_
        self.severity_classes = self._severity_head.classes_
        # Plain-str class names, so predictions carry str rather than numpy scalars.
        self._category_names = np.array([str(c) for c in self.category_classes], dtype=object)
        self._severity_names = np.array([str(c) for c in self.severity_classes], dtype=object)
        self._keyword = KeywordClassifier()

    def clear_caches(self) -> None:
        """Forget every memo (feature caches and token columns); predictions do not change."""
        clear_caches()
        self._scorer.clear_memo()

    @property
    def threshold(self) -> float:
        """The stricter of the two head thresholds (for display and decision records)."""
        return max(self.category_threshold, self.severity_threshold)

    def predict_proba_tokens(self, tokens: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of both heads for pre-tokenised events."""
        category, severity = self._scorer.proba(self._scorer.matrix(tokens))
        return category, severity

    def predict_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One Prediction per event, in order; features for the whole batch at once."""
        if len(events) == 0:
            return []
        tokens = tokens_batch(events)
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
        out = [Prediction(c, cp, s, sp, version, False) for c, cp, s, sp in zip(categories, cat_ps, severities, sev_ps)]
        if unsure.any():
            where = np.flatnonzero(unsure).tolist()
            for i, (kw_category, kw_cp, kw_severity, kw_sp) in zip(where, self._keyword.predict_tokens([tokens[i] for i in where])):
                category, cp, severity, sp = categories[i], cat_ps[i], severities[i], sev_ps[i]
                if cp < self.category_threshold:
                    category, cp = kw_category, kw_cp
                if sp < self.severity_threshold:
                    severity, sp = kw_severity, kw_sp
                out[i] = Prediction(category, cp, severity, sp, version, True)
        return out

    @classmethod
    def from_bytes(cls, data: bytes, path: str | Path = "<bytes>", threshold: float | None = None) -> "ModelClassifier":
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
        return cls(pipeline, meta, digest, threshold=threshold)


def load_classifier(path: str | Path | None = None, threshold: float | None = None) -> ModelClassifier | KeywordClassifier:
    """The committed model, or the one at ``path``.

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
    return ModelClassifier.from_bytes(artifact.read_bytes(), artifact, threshold=threshold)
