"""The fitted pipeline's arithmetic, without scikit-learn's per-call overhead.

Calling ``pipeline.predict_proba`` costs about a millisecond per call in input
validation before any arithmetic happens, and FeatureHasher walks every token through
a Python generator. For a stream processor that classifies single events as well as
batches, that overhead is the whole budget. ``FastScorer`` does the same arithmetic
(same murmurhash column, same log-scaled counts, same L2 norm, same softmax) straight
from the fitted steps, memoising token -> column; tests check it against the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

_INT32_MIN = -2147483648
_MEMO_LIMIT = 500_000
_UNSEEN = -2  # memo default: "not looked up yet" (-1 means "column never seen in training")


class FastScorer:
    """Token lists -> class probabilities of both heads, equal to the pipeline's."""

    def __init__(self, pipeline: Any) -> None:
        hasher = pipeline.named_steps["hash"]
        columns = pipeline.named_steps["columns"]
        scale = pipeline.named_steps["scale"]
        if hasher.alternate_sign or hasher.input_type != "string":
            raise ValueError("FastScorer expects a string FeatureHasher without alternate signs")
        if scale.use_idf or not scale.sublinear_tf or scale.norm != "l2":
            raise ValueError("FastScorer expects sublinear tf, no idf, l2 norm")
        self.n_features = int(hasher.n_features)
        self.remap = columns.remap_
        self.n_columns = len(columns.columns_)
        heads = pipeline.named_steps["heads"].estimators_
        self.coef_t = [np.ascontiguousarray(np.asarray(h.coef_, dtype=np.float64).T) for h in heads]
        self.intercept = [np.asarray(h.intercept_, dtype=np.float64) for h in heads]
        for head in heads:
            if len(head.classes_) < 3:
                raise ValueError("FastScorer expects multinomial heads (three or more classes)")
        self._memo: dict[str, int] = {}

    def clear_memo(self) -> None:
        """Forget the token -> column memo (for cold-start measurements)."""
        self._memo.clear()

    def column(self, token: str) -> int:
        """The kept column a token lands in, or -1 if that column was never seen in training."""
        h = murmurhash3_32(token, seed=0)
        n = self.n_features
        index = (2147483647 - (n - 1)) % n if h == _INT32_MIN else abs(h) % n
        col = int(self.remap[index])
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()  # start over: the tokens seen lately stay cached, not a past storm's
        self._memo[token] = col
        return col

    def matrix(self, tokens_list: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Scaled feature rows, as the pipeline's hash -> columns -> scale steps produce them."""
        n = len(tokens_list)
        lengths = np.fromiter(map(len, tokens_list), dtype=np.int64, count=n)
        memo = self._memo
        total = int(lengths.sum())
        flat = np.fromiter(
            map(memo.get, chain.from_iterable(tokens_list), repeat(_UNSEEN)), dtype=np.int64, count=total
        )
        if (flat == _UNSEEN).any():  # tokens not seen since start-up: hash each once
            unseen = set(chain.from_iterable(tokens_list)).difference(memo)
            fresh = {tok: self.column(tok) for tok in unseen}  # column() also memoises
            flat = np.fromiter(
                map(memo.get, chain.from_iterable(tokens_list), repeat(_UNSEEN)), dtype=np.int64, count=total
            )
            if (flat == _UNSEEN).any():  # memo full: this batch's own table for the rest
                lookup = fresh.get
                flat = np.fromiter(
                    (lookup(tok, col) for tok, col in zip(chain.from_iterable(tokens_list), flat.tolist())),
                    dtype=np.int64,
                    count=total,
                )
        keep = flat >= 0
        rows = np.repeat(np.arange(n), lengths)[keep]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        X = sp.csr_matrix(
            (np.ones(int(keep.sum())), flat[keep].astype(np.int32), indptr),
            shape=(n, self.n_columns),
        )
        X.sum_duplicates()
        np.log(X.data, out=X.data)
        X.data += 1.0
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        norms = np.sqrt(np.bincount(rows, weights=X.data * X.data, minlength=n))
        norms[norms == 0.0] = 1.0
        X.data /= norms[rows]
        return X

    def logits(self, X: sp.csr_matrix) -> list[np.ndarray]:
        """Raw logits of each head for scaled rows."""
        out = []
        for coef_t, intercept in zip(self.coef_t, self.intercept):
            logits = X @ coef_t
            logits += intercept
            out.append(logits)
        return out

    def proba(self, X: sp.csr_matrix, temperatures: Sequence[float] = (1.0, 1.0)) -> list[np.ndarray]:
        """Softmax probabilities of each head for scaled rows (logits divided by the head's temperature)."""
        out = []
        for coef_t, intercept, t in zip(self.coef_t, self.intercept, temperatures):
            logits = X @ coef_t
            logits += intercept
            if t != 1.0:
                logits /= t
            out.append(softmax_inplace(logits))
        return out


def softmax_inplace(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in place."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits
