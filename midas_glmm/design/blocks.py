"""The data pass: the cross-product blocks of ``[Z X y]' W [Z X y]``.

:class:`CrossProducts` holds the blocks — computed from the rows once (once per PIRLS step for a
GLMM on Dask data) and never again. Blocks of disjoint sets of rows add up
(:meth:`CrossProducts.__add__`), which is how chunks of rows and Dask partitions combine. What is
done with them per θ lives in :mod:`sparsity` (the structure, once) and :mod:`factor` (the
numbers, per θ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..linalg.gram import gram
from .reterms import ReTerm

__all__ = ["CrossProducts"]


CHUNK_ROWS = 1 << 17


@dataclass
class CrossProducts:
    """Blocks of ``[Z X y]' W [Z X y]``, the only thing the LMM needs from the rows.

    Attributes
    ----------
    ZtZ : list of ndarray, each (ℓ_i, p_i, p_i)
        Diagonal blocks ``Z_i'WZ_i``, one ``p_i × p_i`` block per level.
    ZjtZi : dict (j, i) -> scipy.sparse.csr_matrix
        ``Z_j'WZ_i`` for ``j > i`` (crossed or nested terms).
    XytZ : list of ndarray, each (k+1, q_i)
        ``[X y]'WZ_i``.
    XytXy : ndarray, (k+1, k+1)
        ``[X y]'W[X y]``.
    n : int
        Number of rows summed over.
    """

    ZtZ: list[np.ndarray]
    ZjtZi: dict[tuple[int, int], sp.csr_matrix]
    XytZ: list[np.ndarray]
    XytXy: np.ndarray
    n: int

    @classmethod
    def from_rows(
        cls,
        terms: list[ReTerm],
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray | None = None,
        shift: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        chunk_rows: int = CHUNK_ROWS,
        beta_removed: np.ndarray | None = None,
    ) -> CrossProducts:
        """The data pass: ``A = [Z X_s y]' W [Z X_s y]`` in blocks, with X_s = (X − shift)/scale.

        Rows are read in chunks of ``chunk_rows`` and the blocks summed, so the only row-sized
        temporaries are one chunk's; the same sum over chunks is how partitions of a larger-than-
        memory data set combine (:meth:`__add__`). With ``beta_removed`` = b the last column is
        y − X_s b instead of y."""
        n = X.shape[0]
        y = np.asarray(y, dtype=float).reshape(n)
        w = None if weights is None else np.asarray(weights, dtype=float)
        total = None
        buf = np.empty((min(max(n, 1), chunk_rows), X.shape[1] + 1), order="F")  # one chunk of [X_s y]
        for a in range(0, max(n, 1), chunk_rows):
            rows = slice(a, min(n, a + chunk_rows))
            Xy = buf[: rows.stop - rows.start]
            for j in range(X.shape[1]):  # column by column: the buffer's columns are runs
                if shift is None:
                    Xy[:, j] = X[rows, j]
                else:
                    np.subtract(X[rows, j], shift[j], out=Xy[:, j])
                    Xy[:, j] /= scale[j]
            Xy[:, -1] = y[rows]
            if beta_removed is not None:
                Xy[:, -1] -= Xy[:, :-1] @ beta_removed
            part = cls._chunk(terms, Xy, None if w is None else w[rows], rows)
            total = part if total is None else total + part
        return total

    @classmethod
    def _chunk(cls, terms: list[ReTerm], Xy: np.ndarray, w: np.ndarray | None, rows: slice) -> CrossProducts:
        ZtZ, XytZ = [], []
        Xyw = Xy if w is None else Xy * w[:, None]
        for t in terms:
            p, nl = t.p, t.nlevels
            codes, Zc = t.codes[rows], t.Zcols[rows]
            ones = t.is_intercept  # Z'WZ is a weighted count
            blk = np.empty((nl, p, p))
            for a in range(p):
                wz = w if ones else (Zc[:, a] if w is None else w * Zc[:, a])
                for b in range(a + 1):
                    s = np.bincount(codes, weights=wz if ones else wz * Zc[:, b], minlength=nl)
                    blk[:, a, b] = s
                    blk[:, b, a] = s
            ZtZ.append(blk)
            xz = np.empty((Xy.shape[1], nl, p))
            for a in range(p):
                for c in range(Xy.shape[1]):
                    col = Xyw[:, c] if ones else Xyw[:, c] * Zc[:, a]
                    xz[c, :, a] = np.bincount(codes, weights=col, minlength=nl)
            XytZ.append(xz.reshape(Xy.shape[1], nl * p))
        ZjtZi = {}
        for j in range(1, len(terms)):
            Zj = None
            for i in range(j):
                if terms[j].is_intercept and terms[i].is_intercept:
                    codes = (terms[j].codes[rows], terms[i].codes[rows])
                    ZjtZi[(j, i)] = _cell_counts(*codes, terms[j].nlevels, terms[i].nlevels, w)
                    continue
                Zj = terms[j].sparse_Z(w, rows) if Zj is None else Zj
                ZjtZi[(j, i)] = (Zj.T @ terms[i].sparse_Z(None, rows)).tocsr()
        return cls(ZtZ, ZjtZi, XytZ, gram(Xy, Xyw), Xy.shape[0])

    def scaled(self, c: float) -> CrossProducts:
        """The blocks of the same rows with their weights multiplied by ``c`` (the row count stays)."""
        return CrossProducts(
            [c * a for a in self.ZtZ],
            {k: (c * v).tocsr() for k, v in self.ZjtZi.items()},
            [c * a for a in self.XytZ],
            c * self.XytXy,
            self.n,
        )

    def __add__(self, other: CrossProducts) -> CrossProducts:
        """Blocks of two disjoint sets of rows add up to the blocks of their union."""
        return CrossProducts(
            [a + b for a, b in zip(self.ZtZ, other.ZtZ)],
            {k: (v + other.ZjtZi[k]).tocsr() for k, v in self.ZjtZi.items()},
            [a + b for a, b in zip(self.XytZ, other.XytZ)],
            self.XytXy + other.XytXy,
            self.n + other.n,
        )


def _cell_counts(cj: np.ndarray, ci: np.ndarray, nj: int, ni: int, w: np.ndarray | None = None) -> sp.csr_matrix:
    """Z_j'WZ_i of two random intercepts: the rows (their weights ``w``) in each cell of their
    levels' cross-tabulation (nj × ni; a cell summing to 0 not stored, as the sparse product it
    replaces leaves it out), summed directly, row by row in order as that product sums them, rather
    than by the product (0.4-0.9 ms a crossed model's build)."""
    key = np.asarray(cj, dtype=np.int64) * ni + np.asarray(ci, dtype=np.int64)
    if nj * ni <= max(4 * len(key), 1 << 16):  # a dense sum over every cell is cheap
        sums = np.bincount(key, weights=w, minlength=nj * ni)
        cells = np.flatnonzero(sums)
        sums = sums[cells]
    else:
        cells, inverse = np.unique(key, return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=w, minlength=len(cells))
        kept = sums != 0
        cells, sums = cells[kept], sums[kept]
    index = np.int32 if nj * ni < 2**31 else np.int64
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cells // ni, minlength=nj))]).astype(index)
    return sp.csr_matrix((sums.astype(float), (cells % ni).astype(index), indptr), shape=(nj, ni))
