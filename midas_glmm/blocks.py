"""The data pass and the per-θ factorisation.

:class:`CrossProducts` holds the blocks of ``A = [Z X y]' W [Z X y]`` — computed from the rows
once (once per PIRLS step for a GLMM) and never again. :class:`BlockedCholesky` factors

    [Λ'Z'WZΛ + I   Λ'Z'W[X y]]
    [[X y]'WZΛ     [X y]'W[X y]]  =  L L'

for one θ using only those blocks. Storage follows structure (as in MixedModels.jl):

* the first term's diagonal block is block-diagonal — ``ℓ`` blocks of ``p × p``, so a scalar
  random intercept costs O(ℓ) per θ;
* the blocks between terms (crossed or nested factors) are sparse on input and become dense
  only in the rows of the later terms, which lme4 orders to have fewer levels;
* the ``[X y]`` rows are dense ``(p+1) × q`` strips.

The last row of L holds the solution of the penalised least-squares problem and the square root
of the penalised residual sum of squares, so one factorisation gives every profiled quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg import lapack

from .reterms import ReTerm

__all__ = ["CrossProducts", "BlockedCholesky"]


def _chol(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor by LAPACK's blocked dpotrf (several times faster than
    numpy.linalg.cholesky on the dense fill-in blocks of crossed factors)."""
    if A.shape[0] < 64:
        return np.linalg.cholesky(np.tril(A) + np.tril(A, -1).T)
    # Only the lower triangle of A is read. A C-ordered A is an F-ordered A' whose upper
    # triangle this is, so LAPACK factors it in place: A' = U'U with L = U'.
    A = np.ascontiguousarray(A)
    U, info = lapack.dpotrf(A.T, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    return U.T


def _block_diag_sparse(blocks: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix from an ``(ℓ, p, p)`` stack."""
    nl, p, _ = blocks.shape
    if p == 1:
        return sp.diags(blocks[:, 0, 0]).tocsr()
    return sp.bsr_matrix((blocks, np.arange(nl), np.arange(nl + 1)), shape=(nl * p, nl * p)).tocsr()


def _to_dense_block_diag(blocks: np.ndarray) -> np.ndarray:
    nl, p, _ = blocks.shape
    out = np.zeros((nl * p, nl * p))
    for a in range(p):
        for b in range(p):
            out[np.arange(nl) * p + a, np.arange(nl) * p + b] = blocks[:, a, b]
    return out


def _pairs_within_columns(A: sp.csc_matrix, B: sp.csc_matrix, lower: bool):
    """Every pair (entry of A, entry of B) in the same column, as entry indices ``(ea, eb)``,
    grouped by column, with the column pointer of the pairs. ``lower`` (B is A, rows sorted):
    only pairs whose B entry is at or above the A entry, i.e. row_B ≤ row_A."""
    ca = np.diff(A.indptr)
    col = np.repeat(np.arange(A.shape[1]), ca)  # column of each entry of A
    if lower:
        count = np.arange(A.nnz) - A.indptr[col] + 1  # entry i of its column pairs with 0..i
        per_column = ca * (ca + 1) // 2
    else:
        count = np.diff(B.indptr)[col]
        per_column = ca * np.diff(B.indptr)
    ea = np.repeat(np.arange(A.nnz), count)
    start = np.cumsum(count) - count
    eb = np.repeat(B.indptr[col] - start, count) + np.arange(len(ea))
    return ea, eb, np.concatenate([[0], np.cumsum(per_column)])


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
    _derived: dict = field(default_factory=dict, repr=False)

    def outer_map(self, j: int, m: int) -> sp.csc_matrix:
        """For scalar terms 0, j, m: the fixed linear map v ↦ A_j0 diag(v) A_m0', flattened
        (C order) to ``q_j·q_m`` entries — only the lower triangle when j = m, which is all the
        Cholesky factorisation reads.

        Built once from the data, so that the fill-in Σ_l v_l a_l b_l' costs one sparse
        matrix-vector product per θ. Column l holds the products of the nonzeros of column l of
        A_j0 and A_m0 (no two share a position), so it is assembled without sorting; compressed
        by column, the product runs over few long columns rather than many short rows."""
        key = (j, m)
        if key not in self._derived:
            A = self.ZjtZi[(j, 0)].tocsc()
            A.sort_indices()
            B = A if j == m else self.ZjtZi[(m, 0)].tocsc()
            ea, eb, indptr = _pairs_within_columns(A, B, lower=j == m)
            flat = A.indices[ea].astype(np.int64) * B.shape[0] + B.indices[eb]
            self._derived[key] = sp.csc_matrix(
                (A.data[ea] * B.data[eb], flat, indptr), shape=(A.shape[0] * B.shape[0], A.shape[1])
            )
        return self._derived[key]

    def dense_block(self, j: int, m: int) -> np.ndarray:
        """``Z_j'WZ_m`` (j > m ≥ 1) as a dense array, kept: its Cholesky rows are dense anyway."""
        key = ("dense", j, m)
        if key not in self._derived:
            self._derived[key] = self.ZjtZi[(j, m)].toarray()
        return self._derived[key]

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
            Xy[:, :-1] = X[rows]
            if shift is not None:
                Xy[:, :-1] -= shift
                Xy[:, :-1] /= scale
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
            Zj = terms[j].sparse_Z(w, rows)
            for i in range(j):
                ZjtZi[(j, i)] = (Zj.T @ terms[i].sparse_Z(None, rows)).tocsr()
        return cls(ZtZ, ZjtZi, XytZ, Xy.T @ Xyw, Xy.shape[0])

    def __add__(self, other: CrossProducts) -> CrossProducts:
        """Blocks of two disjoint sets of rows add up to the blocks of their union."""
        return CrossProducts(
            [a + b for a, b in zip(self.ZtZ, other.ZtZ)],
            {k: (v + other.ZjtZi[k]).tocsr() for k, v in self.ZjtZi.items()},
            [a + b for a, b in zip(self.XytZ, other.XytZ)],
            self.XytXy + other.XytXy,
            self.n + other.n,
        )


class BlockedCholesky:
    """Blocked Cholesky factor L of ``[Λ'AΛ + I, ...; ..., [X y]'W[X y]]`` for one θ.

    Parameters
    ----------
    cp : CrossProducts
    lams : list of ndarray
        ``λ_i`` (``p_i × p_i`` lower triangular) for each term.
    """

    def __init__(self, cp: CrossProducts, lams: list[np.ndarray]):
        self.lams = lams
        k = len(lams)
        # first term: block diagonal
        lam0 = lams[0]
        self._scalar0 = lam0.shape == (1, 1)
        if self._scalar0:  # a random intercept: everything is a vector over the levels
            lam = lam0[0, 0]
            d = np.sqrt(lam * lam * cp.ZtZ[0][:, 0, 0] + 1.0)
            self.L00 = d[:, None, None]
            self._L00inv = (1.0 / d)[:, None, None]
            self._T0 = (lam / d)[:, None, None]
        else:
            M0 = np.einsum("ba,lbc,cd->lad", lam0, cp.ZtZ[0], lam0)
            M0 += np.eye(lam0.shape[0])
            self.L00 = np.linalg.cholesky(M0)
            # T0 = λ0 L00^{-T} per level, so that  A Λ0 L00^{-T} = A @ blockdiag(T0)
            self._L00inv = np.linalg.inv(self.L00)
            self._T0 = np.einsum("ab,lcb->lac", lam0, self._L00inv)
        # L[j, m] for the later terms
        self.cp = cp
        self._lam_sp: dict[int, sp.csr_matrix] = {}
        self.Lj: dict[tuple[int, int], object] = {}
        T0sp = _block_diag_sparse(self._T0) if k > 1 and not self._scalar0 else None
        for j in range(1, k):
            if self._scalar_pair(j):  # scale the stored pattern: O(nnz)
                A = cp.ZjtZi[(j, 0)]
                self.Lj[(j, 0)] = sp.csr_matrix(
                    (A.data * (lams[j][0, 0] * self._T0[A.indices, 0, 0]), A.indices, A.indptr), shape=A.shape
                )
            else:
                T0sp = T0sp if T0sp is not None else _block_diag_sparse(self._T0)
                self.Lj[(j, 0)] = (self._lam_sparse(j).T @ cp.ZjtZi[(j, 0)] @ T0sp).tocsr()
            for m in range(1, j):
                if lams[j].shape == (1, 1) and lams[m].shape == (1, 1):
                    B = (lams[j][0, 0] * lams[m][0, 0]) * cp.dense_block(j, m)
                else:
                    B = (self._lam_sparse(j).T @ cp.ZjtZi[(j, m)] @ self._lam_sparse(m)).toarray()
                B += self._minus_outer(j, m)
                self.Lj[(j, m)] = sla.solve_triangular(self.Lj[(m, m)], B.T, lower=True, check_finite=False).T
            D = self._minus_outer(j, j)
            qj = D.shape[0]
            if lams[j].shape == (1, 1):
                D[np.diag_indices(qj)] += lams[j][0, 0] ** 2 * cp.ZtZ[j][:, 0, 0] + 1.0
            else:
                lam_blocks = np.broadcast_to(lams[j], (len(cp.ZtZ[j]),) + lams[j].shape)
                D += _to_dense_block_diag(np.einsum("lba,lbc,lcd->lad", lam_blocks, cp.ZtZ[j], lam_blocks))
                D[np.diag_indices(qj)] += 1.0
            self.Lj[(j, j)] = _chol(D)
        # the [X y] rows
        self.LX: list[np.ndarray] = []
        if self._scalar0:
            self.LX.append(cp.XytZ[0] * self._T0[:, 0, 0])
        else:
            XZ0 = cp.XytZ[0].reshape(cp.XytZ[0].shape[0], -1, lam0.shape[0])
            self.LX.append(np.einsum("cla,lab->clb", XZ0, self._T0).reshape(cp.XytZ[0].shape))
        for m in range(1, k):
            nl, p = len(cp.ZtZ[m]), lams[m].shape[0]
            B = (cp.XytZ[m].reshape(-1, nl, p) @ lams[m]).reshape(cp.XytZ[m].shape)
            for t in range(m):
                Lmt = self.Lj[(m, t)]
                B = B - (Lmt @ self.LX[t].T).T
            self.LX.append(sla.solve_triangular(self.Lj[(m, m)], B.T, lower=True, check_finite=False).T)
        S = cp.XytXy - sum(Lx @ Lx.T for Lx in self.LX)
        self.LXX = np.linalg.cholesky(S)

    def _scalar_pair(self, j: int) -> bool:
        """Terms 0 and j are both scalar: L[j,0] is A_j0 with its entries rescaled."""
        return self._scalar0 and self.lams[j].shape == (1, 1)

    def _lam_sparse(self, j: int) -> sp.csr_matrix:
        """Λ_j = I ⊗ λ_j as a sparse matrix (for products with the sparse cross-product blocks),
        built once per term and θ."""
        if j not in self._lam_sp:
            lam = self.lams[j]
            self._lam_sp[j] = _block_diag_sparse(np.broadcast_to(lam, (len(self.cp.ZtZ[j]),) + lam.shape))
        return self._lam_sp[j]

    def _minus_outer(self, j: int, m: int) -> np.ndarray:
        """−Σ_{t<m} L[j,t] L[m,t]' as a new dense ``q_j × q_m`` array (for j = m possibly only
        its lower triangle). With terms 0, j and m scalar, the t = 0 part is
        −λ_j λ_m A_j0 diag(T0²) A_m0', one product with the precomputed :meth:`CrossProducts.outer_map`."""
        qj, qm = (self.cp.ZtZ[i].shape[0] * self.lams[i].shape[0] for i in (j, m))
        out = None
        for t in range(m):
            if t == 0 and self._scalar_pair(j) and self._scalar_pair(m):
                v = self._T0[:, 0, 0] ** 2 * -(self.lams[j][0, 0] * self.lams[m][0, 0])
                term = (self.cp.outer_map(j, m) @ v).reshape(qj, qm)
            else:
                prod = self.Lj[(j, t)] @ self.Lj[(m, t)].T
                term = -(prod.toarray() if sp.issparse(prod) else prod)
            out = term if out is None else np.add(out, term, out=out)
        return out

    # ------------------------------------------------------------------ quantities
    @property
    def logdet_Z(self) -> float:
        """log|L_Z|² = log det(Λ'Z'WZΛ + I)."""
        s = 2.0 * np.log(np.diagonal(self.L00, axis1=1, axis2=2)).sum()
        for j in range(1, len(self.lams)):
            s += 2.0 * np.log(np.diag(self.Lj[(j, j)])).sum()
        return float(s)

    @property
    def p(self) -> int:
        """Number of fixed-effect columns."""
        return self.LXX.shape[0] - 1

    @property
    def RX(self) -> np.ndarray:
        """Lower Cholesky factor R_X of the Schur complement for β (``p × p``)."""
        return self.LXX[:-1, :-1]

    @property
    def logdet_X(self) -> float:
        """log|R_X|²."""
        return float(2.0 * np.log(np.diag(self.RX)).sum()) if self.p else 0.0

    @property
    def pwrss(self) -> float:
        """Penalised weighted residual sum of squares r² = ||y − Xβ̂ − ZΛû||² + ||û||²."""
        return float(self.LXX[-1, -1] ** 2)

    def beta(self) -> np.ndarray:
        """β̂ from R_X' β = c_β."""
        if not self.p:
            return np.zeros(0)
        return sla.solve_triangular(self.RX, self.LXX[-1, :-1], lower=True, trans="T")

    def u(self, beta: np.ndarray) -> list[np.ndarray]:
        """Spherical modes û by back-substitution through the blocks: L_Z' u = c_Z − L_XZ'β."""
        k = len(self.lams)
        us: list[np.ndarray] = [None] * k  # type: ignore[list-item]
        for m in range(k - 1, -1, -1):
            rhs = self.LX[m][-1] - self.LX[m][:-1].T @ beta
            for j in range(m + 1, k):
                rhs = rhs - self.Lj[(j, m)].T @ us[j]
            if m == 0 and self._scalar0:
                us[0] = rhs * self._L00inv[:, 0, 0]
            elif m == 0:
                p0 = self.lams[0].shape[0]
                us[0] = np.einsum("lba,lb->la", self._L00inv, rhs.reshape(-1, p0)).ravel()
            else:
                us[m] = sla.solve_triangular(self.Lj[(m, m)], rhs, lower=True, trans="T")
        return us

    def b(self, us: list[np.ndarray]) -> list[np.ndarray]:
        """Random effects on the data scale, b_i = Λ_i u_i (``ℓ_i × p_i`` arrays)."""
        return [u.reshape(-1, lam.shape[0]) @ lam.T for u, lam in zip(us, self.lams)]

    def vcov_beta_unscaled(self) -> np.ndarray:
        """(R_X R_X')⁻¹; times σ² it is the covariance of β̂."""
        Rinv = sla.solve_triangular(self.RX, np.eye(self.p), lower=True)
        return Rinv.T @ Rinv

    def condvar_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of Λ (Λ'Z'WZΛ + I)⁻¹ Λ' per level, ``(ℓ_i, p_i, p_i)`` per term.

        Times σ² these are lme4's conditional variances of the random effects (given β̂)."""
        k = len(self.lams)
        p0 = self.lams[0].shape[0]
        V0 = np.einsum("lba,lbc->lac", self._L00inv, self._L00inv)
        out = []
        if k > 1:
            # L_Z = [[D, 0], [B, C]]  →  (L_Z L_Z')⁻¹ blocks: D⁻ᵀD⁻¹ + GᵀG and (CCᵀ)⁻¹,
            # with G = C⁻¹ B D⁻¹.
            sizes = [self.Lj[(j, j)].shape[0] for j in range(1, k)]
            offs = np.concatenate([[0], np.cumsum(sizes)])
            C = np.zeros((offs[-1], offs[-1]))
            B = np.zeros((offs[-1], self._T0.shape[0] * p0))
            for j in range(1, k):
                for m in range(0, j + 1):
                    blk = self.Lj[(j, m)]
                    blk = blk.toarray() if sp.issparse(blk) else blk
                    if m == 0:
                        B[offs[j - 1] : offs[j]] = blk
                    else:
                        C[offs[j - 1] : offs[j], offs[m - 1] : offs[m]] = blk
            Dinv = _to_dense_block_diag(self._L00inv)
            G = sla.solve_triangular(C, B @ Dinv, lower=True)
            Gr = G.reshape(G.shape[0], -1, p0)
            V0 = V0 + np.einsum("rla,rlb->lab", Gr, Gr)
            Cinv = sla.solve_triangular(C, np.eye(C.shape[0]), lower=True)
            Vrest = Cinv.T @ Cinv
        out.append(V0)
        for j in range(1, k):
            p = self.lams[j].shape[0]
            blk = Vrest[offs[j - 1] : offs[j], offs[j - 1] : offs[j]]
            nl = blk.shape[0] // p
            blocks = np.stack([blk[l * p : (l + 1) * p, l * p : (l + 1) * p] for l in range(nl)])
            out.append(blocks)
        return [np.einsum("ab,lbc,dc->lad", lam, V, lam) for lam, V in zip(self.lams, out)]
