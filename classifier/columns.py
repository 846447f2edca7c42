"""Pipeline step keeping only the hashed columns that occurred in training.

Hashing keeps feature extraction stateless and fast, but leaves 2**18 columns of which
a few thousand are ever used. Dropping the never-seen ones before fitting makes
training take seconds instead of minutes, keeps the artifact small, and stops unseen
tokens from diluting the normalised weight of known ones at prediction time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin


class ActiveColumns(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type stubs
    """Remember which columns are non-zero in training; keep only those, in order."""

    def fit(self, X: Any, y: Any = None) -> ActiveColumns:
        X = sp.csr_matrix(X)
        used = np.zeros(X.shape[1], dtype=bool)
        used[X.indices] = True
        self.columns_ = np.flatnonzero(used).astype(np.int32)
        remap = np.full(X.shape[1], -1, dtype=np.int32)
        remap[self.columns_] = np.arange(len(self.columns_), dtype=np.int32)
        self.remap_ = remap
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> sp.csr_matrix:
        X = sp.csr_matrix(X)
        new_index = self.remap_[X.indices]
        keep = new_index >= 0
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        counts = np.bincount(rows[keep], minlength=X.shape[0])
        indptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return sp.csr_matrix((X.data[keep], new_index[keep], indptr), shape=(X.shape[0], len(self.columns_)))
