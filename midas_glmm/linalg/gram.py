"""The Gram matrix A'WA of a tall array of a few columns (the rows of [X y] in a data pass), and
a symmetric matrix from its stored lower triangle.

OpenBLAS' matrix product is slow for a p × p result summed over 1e5 rows and more: with p ≤ 8
it costs 2-4x the p(p + 1)/2 dot products of A's columns (1e5 × 7: 1.7 ms against 0.6), whose
memory a column-ordered A holds in runs. Below :data:`DOT_ROWS` rows, or for wider arrays, the
product's one call is the cheaper.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["gram", "from_lower", "DOT_ROWS", "DOT_COLUMNS"]

#: from this many rows ...
DOT_ROWS = 10_000
#: ... and up to this many columns, A'WA is summed column pair by column pair
DOT_COLUMNS = 8


def gram(A: np.ndarray, Aw: np.ndarray | None = None) -> np.ndarray:
    """A'WA = A'(Aw) for ``Aw`` = WA, W diagonal (A'A without it): symmetric, each column pair
    summed once by a dot product when A is column-ordered, tall and narrow (see the module)."""
    B = A if Aw is None else Aw
    n, p = A.shape
    if n < DOT_ROWS or p > DOT_COLUMNS or not (A.flags.f_contiguous and B.flags.f_contiguous):
        return A.T @ B
    out = np.empty((p, p))
    for a in range(p):
        col = B[:, a]
        for b in range(a + 1):
            out[a, b] = out[b, a] = A[:, b] @ col
    return out


#: up to this order :func:`from_lower` mirrors by a cached index (numpy's tril builds a mask per call)
MIRROR_INDEX_MAX = 64


@functools.cache
def _strict_upper(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(k, 1)``, formed once per order (read only)."""
    rows, cols = np.triu_indices(k, 1)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def from_lower(M: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle (the diagonal included) is M's, a new array:
    M's upper triangle is not read (the blocks keep only their lower one). The same numbers as
    ``np.tril(M) + np.tril(M, -1).T``, whose two masks cost more than the copy on the few columns of
    [X y] (~20 µs a fit)."""
    k = M.shape[0]
    if k > MIRROR_INDEX_MAX:
        return np.tril(M) + np.tril(M, -1).T
    out = np.array(M, dtype=float)
    rows, cols = _strict_upper(k)
    out[rows, cols] = out[cols, rows]
    return out
