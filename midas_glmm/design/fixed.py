"""The fixed-effects matrix X: its rank check and its centring and scaling.

Both read X through its moments (column means and the centred cross-product), computed in one
pass over the rows, so that a common shift such as ``x + 1e7`` costs no precision and the same
rules apply to rows in memory and to the sums of Dask partitions.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError, RankDeficiencyWarning
from ..linalg.gram import DOT_ROWS, gram
from .columns import INTERCEPT

__all__ = [
    "RANK_TOL",
    "column_sums",
    "column_moments",
    "moments_from_gram",
    "independent_columns",
    "check_weighted_rank",
    "standardize",
    "constant_combination",
    "null_space",
]

#: a column is linearly dependent on others when its residual norm is below this fraction of its
#: (centred) norm; and a column whose spread is below CONSTANT_TOL times its size is constant
RANK_TOL = 1e-5

CONSTANT_TOL = 1e-12

_CHUNK_ROWS = 1 << 16


def column_sums(X: np.ndarray) -> np.ndarray:
    """Σ_i X[i, :] (or Σ_i y_i of a vector): one BLAS product with a column of ones. numpy's
    ``sum(axis=0)`` of a tall, narrow row-major array walks the rows one at a time, several
    times slower (2 ms against 0.2 ms for 1e5 × 6)."""
    X = np.asarray(X, dtype=float)
    if X.ndim == 1 or X.shape[0] == 0:
        return X.sum(axis=0)
    return X.T @ np.ones(X.shape[0])


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means ``m`` and the cross-product of the centred columns ``(X − 1m')'(X − 1m)``.

    One pass over the rows in chunks, around the first chunk's means (so that neither a copy of
    X nor a large common shift such as ``x + 1e7`` costs precision). ``X'X = C + n m m'``.
    From :data:`~midas_glmm.linalg.gram.DOT_ROWS` rows a chunk is shifted column by column into a
    column-ordered buffer, whose Gram matrix :func:`~midas_glmm.linalg.gram.gram` sums by dot
    products (numpy's broadcast over rows of a few columns and BLAS' product of a tall, narrow
    array cost 2-3x that: 1e5 × 2, 1.4 ms against 0.5)."""
    n, p = X.shape
    shift = column_sums(X[:_CHUNK_ROWS]) / min(n, _CHUNK_ROWS) if n else np.zeros(p)
    total, C = np.zeros(p), np.zeros((p, p))
    by_column = n >= DOT_ROWS
    buf = np.empty((min(n, _CHUNK_ROWS), p), order="F" if by_column else "C")  # page faults once
    for start in range(0, n, _CHUNK_ROWS):
        D = buf[: min(_CHUNK_ROWS, n - start)]
        if by_column:
            for j in range(p):
                np.subtract(X[start : start + len(D), j], shift[j], out=D[:, j])
        else:
            np.subtract(X[start : start + _CHUNK_ROWS], shift, out=D)
        total += column_sums(D)
        C += gram(D)
    dm = total / max(n, 1)
    return shift + dm, C - n * np.outer(dm, dm)


def moments_from_gram(G: np.ndarray, names: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    """``(n, m, C)`` of :func:`column_moments` read off ``G = X'X`` when X has an intercept column
    (whose row holds the column sums); without one, ``(1, 0, G)``: the columns as they are."""
    if INTERCEPT not in names:
        return 1.0, np.zeros(len(names)), G
    i = names.index(INTERCEPT)
    n = float(G[i, i])
    m = G[i] / n
    return n, m, G - n * np.outer(m, m)


def _sqrt_factor(C: np.ndarray) -> np.ndarray:
    """F with F'F = C for a positive semi-definite C, from the eigenvalues of its correlation form."""
    s = np.sqrt(np.maximum(np.diag(C), 0.0))
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    lam, V = np.linalg.eigh(C * np.outer(inv, inv))
    return (np.sqrt(np.maximum(lam, 0.0))[:, None] * V.T) * s


def _residual(v: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """v less its projection on the orthonormal columns of Q (twice, for orthogonality)."""
    for _ in range(2):
        v = v - Q @ (Q.T @ v)
    return v


def independent_columns(
    n: float, mean: np.ndarray, centred: np.ndarray, names: list[str], what: str = "fixed-effect model matrix"
) -> tuple[np.ndarray, list]:
    """Columns to keep: a column linearly dependent on the columns before it is dropped, as lme4
    does, with a :class:`RankDeficiencyWarning`. Returns the indices kept and the names dropped
    (the rule is :func:`_independent`)."""
    keep = _independent(n, mean, centred)
    dropped = [names[i] for i in range(len(names)) if i not in keep]
    if dropped:
        warnings.warn(
            f"{what} is rank deficient: dropping {len(dropped)} column(s) {dropped}",
            RankDeficiencyWarning,
            stacklevel=4,
        )
    return np.array(keep, dtype=int), dropped


def _independent(n: float, mean: np.ndarray, centred: np.ndarray) -> list[int]:
    """Indices of the columns independent of the columns before them.

    Judged from the moments of :func:`column_moments`: X = 1m' + X_c, so the rows ``[√n m'; F]``
    with F'F = X_c'X_c are a square root of X'X built from accurate pieces. Column k is dependent
    when its residual on the kept columns is below ``RANK_TOL`` times its norm, and, once the
    constant lies in the span of the kept columns (an intercept, or a full set of dummies), times
    its centred norm: a shift such as ``x + 1e7`` or Julian dates does not make a predictor look
    constant."""
    M = _sqrt_rows(n, mean, centred)
    const = np.zeros(M.shape[0])
    const[0] = 1.0  # the constant column 1 in these coordinates
    Q = np.zeros((M.shape[0], 0))  # orthonormal basis of the kept columns
    keep: list[int] = []
    for k in range(M.shape[1]):
        size, spread = np.linalg.norm(M[:, k]), np.linalg.norm(M[1:, k])
        if np.linalg.norm(_residual(const, Q)) < RANK_TOL:  # the constant is in the span
            if spread <= CONSTANT_TOL * size:
                continue
            size = spread
        res = _residual(M[:, k], Q)
        if size > 0 and np.linalg.norm(res) > RANK_TOL * size:
            keep.append(k)
            Q = np.column_stack([Q, res / np.linalg.norm(res)])
    return keep


def check_weighted_rank(X: np.ndarray, names: list[str], w: np.ndarray) -> None:
    """Raise when the rows with a positive weight cannot estimate every kept fixed effect (the
    zero-weight rows carry no information: lme4 judges rank on all rows and then fails)."""
    positive = w > 0
    if positive.all():
        return
    keep = _independent(int(positive.sum()), *column_moments(X[positive]))
    lost = [names[i] for i in range(len(names)) if i not in keep]
    if lost:
        raise DataError(
            f"the {int(positive.sum())} rows with a positive weight cannot estimate the fixed effect(s) {lost} "
            "(they are constant or collinear in those rows); give those rows weight or drop the term"
        )


def standardize(
    X: np.ndarray, names: list[str], gram: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centring and scaling of the columns of X, for conditioning, without a copy.

    Returns ``(shift, scale, S)``: the data pass uses X_s = (X − shift)/scale column-wise, and
    ``X β = X_s β_s`` with ``β = S β_s`` and ``Var β = S Var(β_s) S'``. Columns are centred
    only when the constant lies in the span of X, through ``X a = 1`` (an intercept, or a full
    set of dummies as in ``0 + C(f) + x``); the columns carrying ``a`` are left as they are, so
    the column space is unchanged. Without a constant in the span the columns are only scaled.
    The moments come from ``gram`` = X'X when the model has an intercept and the caller has it.
    """
    n, p = X.shape
    shift, scale, S = np.zeros(p), np.ones(p), np.eye(p)
    a, moments = _centring_plan(X, names, gram)
    for c in range(p):
        if a is not None and a[c] != 0:  # the columns that make the constant stay as they are
            continue
        m, s = moments(c)
        if not np.isfinite(s) or s <= 1e-12 * max(abs(m), 1.0):
            continue
        shift[c], scale[c] = m, s
        S[c, c] = 1.0 / s
        if a is not None:
            S[:, c] -= a * (m / s)
    return shift, scale, S


def _centring_plan(X: np.ndarray, names: list[str], gram: np.ndarray | None):
    """``(a, moments)``: the coefficients a with X a = 1 (None if the constant is not in the
    span of X), and a function of a column index returning its centre and spread."""
    if INTERCEPT in names:
        icpt = names.index(INTERCEPT)
        return np.eye(len(names))[icpt], lambda c: _moments(X, c, icpt, gram)
    n = X.shape[0]
    mean, centred = column_moments(X)
    a = constant_combination(n, mean, centred)
    spread = np.sqrt(np.maximum(np.diag(centred), 0.0) / max(n, 1))
    if a is None:
        return None, lambda c: (0.0, float(np.hypot(mean[c], spread[c])))
    return a, lambda c: (float(mean[c]), float(spread[c]))


def constant_combination(n: float, mean: np.ndarray, centred: np.ndarray) -> np.ndarray | None:
    """Coefficients a with ``X a = 1`` when the constant lies in the span of X's columns (for
    example a full set of dummies ``0 + C(f)``), from the moments of :func:`column_moments`;
    None when it does not. ``X a = 1`` means ``X_c a = 0`` and ``m'a = 1``: a is in the null
    space of the centred cross-product; it is then solved for, by least squares on the columns
    it uses, in the square root of :func:`_sqrt_rows`."""
    s = np.sqrt(np.maximum(np.diag(centred), 0.0))
    d = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 1.0)
    lam, V = np.linalg.eigh(centred * np.outer(d, d))
    null = V[:, lam <= RANK_TOL**2 * max(lam.max(initial=0.0), 1.0)] * d[:, None]
    along = null.T @ mean
    nonzero = np.abs(along) > 1e-8 * (np.abs(null).T @ np.abs(mean))  # beyond rounding
    if not nonzero.any():
        return None
    null, along = null[:, nonzero], along[nonzero]
    a = null @ along / (along @ along)
    used = np.abs(a) > 1e-8 * np.abs(a).max()
    M = _sqrt_rows(n, mean[used], centred[np.ix_(used, used)])
    target = np.zeros(M.shape[0])
    target[0] = np.sqrt(n)
    a = np.zeros_like(a)
    a[used] = np.linalg.lstsq(M, target, rcond=None)[0]
    return a


def _sqrt_rows(n: float, mean: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """``[√n m'; F]`` with F'F = C: a square root of X'X = C + n m m' built from accurate pieces."""
    return np.vstack([np.sqrt(n) * mean, _sqrt_factor(centred)])


def _moments(X: np.ndarray, c: int, icpt: int, gram: np.ndarray | None) -> tuple[float, float]:
    """Mean m and spread s = √(mean (x − m)²) of column c.

    From ``gram`` (mean = G[1,c]/n, mean square = G[c,c]/n) unless the column's mean dwarfs its
    spread (``x + 1e7``): the difference of the two would have lost the spread, which is then
    read off the column."""
    n = X.shape[0]
    col = X[:, c]
    if gram is None:
        m = col.mean()
        return float(m), float(np.sqrt(np.mean((col - m) ** 2)))
    m = gram[icpt, c] / n
    msq = gram[c, c] / n
    var = msq - m * m
    if var <= 1e-6 * msq:
        var = float(np.mean((col - m) ** 2))
    return float(m), float(np.sqrt(max(var, 0.0)))


def null_space(n: float, mean: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of the null space of X, from the moments of
    :func:`column_moments`: the directions v with Xv = 0 (none when X has full rank). A linear
    function l'β is estimable when l is orthogonal to every one of them (emmeans' rule)."""
    M = _sqrt_rows(n, mean, centred)
    s = np.linalg.norm(M, axis=0)
    d = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 1.0)
    _, sv, Vt = np.linalg.svd(M * d, full_matrices=True)
    sv = np.concatenate([sv, np.zeros(Vt.shape[0] - len(sv))])
    null = Vt[sv <= RANK_TOL * max(sv.max(initial=0.0), 1e-300)].T * d[:, None]
    if null.shape[1] == 0:
        return null
    q, _ = np.linalg.qr(null)
    return q
