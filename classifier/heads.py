"""The last pipeline step: one classifier per output (category, severity).

sklearn's MultiOutputClassifier clones a single estimator for every output; the two
heads here want different settings (category balances its many uneven classes, which
helps macro-F1; severity must not, or the rare "action" class gets over-predicted on
alerts), so each head is its own estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone


class TwoHeads(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type stubs
    """Fits ``category`` on Y[:, 0] and ``severity`` on Y[:, 1]."""

    def __init__(self, category: Any, severity: Any) -> None:
        self.category = category
        self.severity = severity

    def fit(self, X: Any, Y: Any) -> TwoHeads:
        Y = np.asarray(Y, dtype=object)
        self.estimators_ = [clone(self.category).fit(X, Y[:, 0]), clone(self.severity).fit(X, Y[:, 1])]
        return self

    def predict_proba(self, X: Any) -> list[np.ndarray]:
        return [est.predict_proba(X) for est in self.estimators_]

    def predict(self, X: Any) -> np.ndarray:
        return np.column_stack([est.predict(X) for est in self.estimators_])
