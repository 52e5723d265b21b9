"""The factor of Λ'Z'WZΛ + I eliminated term by term in numpy, for models of random intercepts.

The levels of one term share no rows, so a term's block of Z'WZ is diagonal. When the earlier
terms' elimination fills none of it (nested factors, an observation-level effect beside its
groups, a term crossed with a later one only), the whole term is one *stage*: its pivots are
independent, and

    L_ii = √a_ii,   L_ji = a_ji / L_ii,   a_jk −= L_ji L_ki   (j ≥ k among the rows of column i)

run for all its levels at once as a few vector operations. The terms after the last stage form
the dense tail (LAPACK). Forward and backward solves and Takahashi's selected inverse go stage by
stage the same way:

    Σ_ji = −(1/L_ii) Σ_k Σ_jk L_ki,   Σ_ii = (1/L_ii) (1/L_ii − Σ_k L_ki Σ_ki)   (k among rows of i).

The last stage's entries below its pivots all lie in the tail's rows. When they fill much of that
n × q_t block B (crossed factors: every person meets most items) B is laid out dense: the stage's
update of the tail is one BLAS product T −= B'B, its solves and selected inverse products with B,
rather than scattered sums over every pair of a column's entries (300 a level for 24 items, where
nested factors form 1-3).

The layout is the block-sparse one of :mod:`.kernels` with every node a scalar (so a node is a
random effect), and the pattern is the same fill as :func:`.kernels.symbolic` finds: a plan so
built is a valid input to the compiled kernels too. Nothing here is compiled; every index the
stages need is computed once per plan (:class:`StageElimination`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas

from .orderings import group_pairs, sorted_unique

__all__ = ["staged_pattern", "StageElimination", "dense_last_stage", "dense_block"]


#: the last stage's block of tail rows is laid out dense (:func:`dense_last_stage`) when its
#: stored entries fill at least this share of it: the scattered sums cost about n c²/2 indirect
#: updates for c entries a column, the dense product n q_t²/2 multiply-adds at a twentieth of
#: the cost each (BLAS against numpy's bincount), level at c ≈ q_t/4 ...
DENSE_STAGE_SHARE = 0.25
#: ... and it has at most this many entries (8 MB)
DENSE_STAGE_ENTRIES = 1 << 20


def dense_last_stage(levels: int, tail: int, entries: int) -> bool:
    """Whether the last stage's ``entries`` below its pivots, in ``levels`` columns and ``tail``
    rows of the tail, are laid out as a dense levels × tail block (:data:`DENSE_STAGE_SHARE`)."""
    size = levels * tail
    return 0 < size <= DENSE_STAGE_ENTRIES and entries >= DENSE_STAGE_SHARE * size


def staged_pattern(rows: np.ndarray, cols: np.ndarray, node_base: np.ndarray, max_pairs: int, per_level: float):
    """The factor's pattern over the leading terms that are stages, for scalar nodes coupled at
    (``rows`` > ``cols``) in the data, the terms' first nodes ``node_base``: (stages, colptr,
    rowidx, dense) for the columns of those terms (each column's rows sorted, its own first; rows
    of later terms included; ``dense``: the last stage's tail block is laid out dense,
    :func:`dense_last_stage`), or None when the eliminations would form by scattered sums more
    than ``max_pairs`` products a_jk −= L_ji L_ki, or more than ``per_level`` per level eliminated
    (crossed terms coupled densely whose block of the tail is not dense enough: the compiled
    kernels' case). A dense last stage forms none (one BLAS product), and its fill, all of it
    inside the tail, is not enumerated."""
    N = int(node_base[-1])
    k = len(node_base) - 1
    pending = cols.astype(np.int64) * N + rows  # column-major keys, rows sorted
    if len(pending) > 1 and not np.all(pending[1:] > pending[:-1]):
        pending = sorted_unique(pending)
    kept, pairs, stages = [], 0, k
    within = []  # the products formed up to each stage, and the levels eliminated by then
    for t in range(k):
        a, b = int(node_base[t]), int(node_base[t + 1])
        col = pending // N
        lo, hi = np.searchsorted(col, [a, b])  # this term's columns (keys sorted by column)
        mine = pending[lo:hi]
        if len(mine) and np.any(mine % N < b):  # two levels of this term coupled by the fill
            stages = t
            break
        counts = np.bincount(mine // N - a, minlength=b - a)
        pairs += int(np.sum(counts * (counts + 1) // 2))
        kept.append(mine)
        within.append((pairs, b))
        r = mine % N
        if t + 1 < k:
            nxt = (r >= b) & (r < node_base[t + 2])
            if np.bincount(mine[nxt] // N - a, minlength=b - a).max(initial=0) > 1:
                # eliminating this term couples two levels of the next: the tail starts there, and
                # this term's fill, all of it inside the tail, is not needed
                stages = t + 1
                break
        if pairs > max_pairs:
            return None
        first, second = group_pairs(counts)
        fill = r[first] * N + r[second]  # (row r[second] > column r[first]) for every pair
        pending = sorted_unique(np.concatenate([pending[:lo], pending[hi:], fill]))
    Ns = int(node_base[stages])
    dense = bool(kept) and dense_last_stage(Ns - int(node_base[stages - 1]), N - Ns, len(kept[-1]))
    # the scattered sums, in all and per level eliminated so far (the dense last stage's are none)
    scattered = within[: len(within) - int(dense)]
    if scattered and (scattered[-1][0] > max_pairs or any(formed > per_level * b for formed, b in scattered)):
        return None
    keys = np.concatenate([np.arange(Ns, dtype=np.int64) * (N + 1), *kept]) if kept else np.zeros(0, np.int64)
    keys = np.sort(keys)
    colptr = np.searchsorted(keys // N, np.arange(Ns + 1)).astype(np.int64)
    return stages, colptr, (keys % N).astype(np.int64), dense


class _Stage:
    """The index arrays of one stage: its columns ``c0:c1`` (one term's levels). ``qt``: the
    last stage's block of tail rows is laid out dense, n × qt (its entries at ``dense``), rather
    than every pair of a column's entries indexed."""

    def __init__(self, c0, c1, colptr, rowidx, col_of, Ns, lookup, tail_index, qt=0):
        self.c0, self.c1 = c0, c1
        p0, p1 = int(colptr[c0]), int(colptr[c1])
        n = c1 - c0
        self.diag = colptr[c0:c1].copy()  # the pivots' positions
        pos = np.arange(p0, p1)
        is_off = np.ones(len(pos), bool)
        is_off[self.diag - p0] = False
        self.off = pos[is_off]  # the entries below the pivots
        self.off_col = col_of[self.off] - c0  # their column within the stage
        self.off_at = self.off_col + c0  # and that column's random effect
        self.off_row = rowidx[self.off]
        self.fw_row = self.off_row - c1  # their row among the rows after the stage
        self.n, self.Ns, self.qt = n, Ns, qt
        self.sa = None  # the selected inverse's indices, made on its first use (selection)
        #: the dense block's places of the entries below the pivots (row-major n × qt), or None
        self.dense = (self.off_col * qt + self.fw_row).astype(np.int64) if qt else None
        if qt:
            return
        counts = np.bincount(self.off_col, minlength=n)
        # the Schur complement's updates a_jk −= L_ji L_ki, j ≥ k, and where a_jk is held
        first, second = group_pairs(counts, diagonal=True)
        self.fa, self.fb = second, first  # indices into off: the row of fa ≥ the row of fb
        ja, kb = self.off_row[second], self.off_row[first]
        sparse = kb < Ns  # a_jk in the sparse part (else both rows are the tail's)
        self.f_sparse = sparse
        dest_sp = lookup(kb[sparse], ja[sparse])
        dest_tl = tail_index(ja[~sparse], kb[~sparse])
        self.dsp, self.dsp_inv = np.unique(dest_sp, return_inverse=True)
        self.dtl, self.dtl_inv = np.unique(dest_tl, return_inverse=True)
        self.all_sparse = bool(sparse.all())
        self._flat = {}  # m → the flat places of the solves' sums for right-hand sides of m columns
        self.counts = counts

    def selection(self, lookup, tail_index) -> None:
        """The selected inverse's indices: every ordered pair (a, b) of a column's entries below
        the pivot (``sa``, ``sb``: indices into ``off``), and where Σ at (row a, row b) is read,
        in the sparse part (``s_src_sp``) or the tail (``s_src_tl``). Made when first needed:
        an LMM optimised by BOBYQA inverts only for its results."""
        first, second = group_pairs(self.counts, diagonal=True, ordered=True)
        ra, rb = self.off_row[first], self.off_row[second]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        held = lo < self.Ns  # in the sparse part (else both rows are the tail's)
        self.s_sparse = held
        self.s_src_sp = lookup(lo[held], hi[held])
        self.s_src_tl = tail_index(hi[~held], lo[~held])
        self.sa, self.sb = first, second

    def flat(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(forward, backward): for each entry below the pivots and each of m columns, its place in
        the flattened rows after the stage (row − c1, forward: where it is subtracted) and in the
        flattened stage rows (column − c0, backward)."""
        if m not in self._flat:
            h = np.arange(m)
            self._flat[m] = (
                ((self.off_row - self.c1)[:, None] * m + h).ravel(),
                (self.off_col[:, None] * m + h).ravel(),
            )
        return self._flat[m]


def dense_block(st: _Stage, Loff: np.ndarray) -> np.ndarray:
    """A dense stage's entries below its pivots as its n × qt block B of tail rows."""
    B = np.zeros(st.n * st.qt)
    B[st.dense] = Loff
    return B.reshape(st.n, st.qt)


class StageElimination:
    """Term-by-term elimination of a staged plan (every node a scalar): the factor, its solves,
    its selected inverse, and the products with Z'WZ an LMM's gradient takes.

    Parameters
    ----------
    plan : FactorPlan
        Built with ``stages``: the first ``plan.split`` terms are stages, the rest the tail.
    dense : bool
        The last stage's block of tail rows is laid out dense (:func:`staged_pattern`'s answer).
    """

    def __init__(self, plan, dense: bool = False):
        self.Ns, self.qt, self.nsparse = plan.Ns, plan.qt, plan.nsparse
        colptr, rowidx = plan.colptr, plan.rowidx
        col_of = np.repeat(np.arange(plan.Ns), np.diff(colptr))
        N, keys = plan.N, plan.keys

        def lookup(col, row):
            pos = np.searchsorted(keys, col * N + row)
            if len(pos) and (pos.max() >= len(keys) or np.any(keys[pos] != col * N + row)):
                raise np.linalg.LinAlgError("a coupling outside the staged pattern")
            return pos

        tailoff, qt = plan.tailoff, plan.qt

        def tail_index(row, col):
            return tailoff[row] * qt + tailoff[col]

        self._index = (lookup, tail_index)
        base = plan.node_base
        self.stages = [
            _Stage(int(base[t]), int(base[t + 1]), colptr, rowidx, col_of, plan.Ns, lookup, tail_index, qt * last)
            for t, last in ((t, dense and t == plan.split - 1) for t in range(plan.split))
        ]
        # every stored entry of the data blocks A (sparse part, then the tail's): its two random
        # effects and the terms whose λ scale it
        tr, tc = plan.tail_entries()
        self.e_row = np.concatenate([rowidx, plan.Ns + tr]).astype(np.int64)
        self.e_col = np.concatenate([col_of, plan.Ns + tc]).astype(np.int64)
        self.t_row, self.t_col = plan.nterm[self.e_row], plan.nterm[self.e_col]
        self.t_pair = self.t_row * plan.k + self.t_col  # λ_row λ_col is entry t_pair of λλ'
        self.offdiag = self.e_row != self.e_col
        self.tail_flat = (tr * qt + tc).astype(np.int64)
        self.tail_diag = np.arange(qt) * (qt + 1)
        self.q = plan.q
        # I's entries in the layout of A: 1 at every column's pivot of the sparse part (the tail's
        # diagonal is added to its dense block)
        self.identity = np.zeros(len(self.e_row))
        self.identity[plan.colptr[:-1]] = 1.0
        self._G = None  # (A, Z'WZ as a scipy matrix) of an LMM's constant blocks

    # ----------------------------------------------------------------- factor
    def factor(self, A: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, list]:
        """(L's sparse part, the tail's Schur complement T (lower triangle), 0, each stage's
        (pivots, entries below them)) for the data blocks A and λ_t per term (``lam``, scalars);
        the third item is 1 + the node whose pivot is not positive, if one is (the factor is then
        not to be used). The fourth spares the solves reading L again (``vals``)."""
        scaled = np.outer(lam, lam).ravel()[self.t_pair]  # λ_row λ_col of every entry
        scaled *= A
        scaled += self.identity  # Λ'AΛ + I, its sparse part
        L = scaled[: self.nsparse]  # a view: scaled is this call's own array
        qt = self.qt
        Tf = np.zeros(qt * qt)
        if qt:
            Tf[self.tail_flat] = scaled[self.nsparse :]
            Tf[self.tail_diag] += 1.0
        vals = []
        for st in self.stages:
            d = L[st.diag]
            if not d.min() > 0.0:  # also NaN
                return L, Tf.reshape(qt, qt), 1 + st.c0 + int(np.argmin(d > 0.0)), vals
            np.sqrt(d, out=d)
            L[st.diag] = d
            if not len(st.off):
                vals.append((d, None, None))
                continue
            Loff = L[st.off] / d[st.off_col]
            L[st.off] = Loff
            if st.dense is not None:  # T −= B'B on T's lower triangle (BLAS dsyrk; see _panel_updates)
                B = dense_block(st, Loff)
                Tt = blas.dsyrk(-1.0, B.T, beta=1.0, c=Tf.reshape(qt, qt).T, trans=0, lower=0, overwrite_c=1)
                Tf = Tt.T.reshape(-1)
                vals.append((d, Loff, B))
                continue
            vals.append((d, Loff, None))
            prod = Loff[st.fa] * Loff[st.fb]
            if st.all_sparse:
                L[st.dsp] -= np.bincount(st.dsp_inv, prod, minlength=len(st.dsp))
            else:
                L[st.dsp] -= np.bincount(st.dsp_inv, prod[st.f_sparse], minlength=len(st.dsp))
                Tf[st.dtl] -= np.bincount(st.dtl_inv, prod[~st.f_sparse], minlength=len(st.dtl))
        return L, Tf.reshape(qt, qt), 0, vals

    def _values(self, L: np.ndarray, vals) -> list:
        """Each stage's (pivots, entries below them, a dense stage's block B of them or None):
        ``vals`` from :meth:`factor`, or read from L."""
        if vals is not None:
            return vals
        out = []
        for st in self.stages:
            Loff = np.take(L, st.off) if len(st.off) else None
            out.append((np.take(L, st.diag), Loff, None if st.dense is None else dense_block(st, Loff)))
        return out

    def forward(self, L: np.ndarray, R: np.ndarray, vals=None) -> None:
        """R ← L_sparse⁻¹R in place (q × m), the tail's rows updated but not solved."""
        q, m = R.shape
        one = R[:, 0] if m == 1 else None  # a vector: its own bincounts, no flat places
        for st, (d, Loff, B) in zip(self.stages, self._values(L, vals)):
            if B is not None:  # the last stage: the rows after it are the tail's, R_tail −= B'R_stage
                R[st.c0 : st.c1] /= d[:, None]
                R[st.c1 :] -= B.T @ R[st.c0 : st.c1]
                continue
            if one is not None:
                one[st.c0 : st.c1] /= d
                if Loff is not None:  # R_j −= L_ji R_i for the entries below the pivots
                    one[st.c1 :] -= np.bincount(st.fw_row, np.take(one, st.off_at) * Loff, minlength=q - st.c1)
                continue
            R[st.c0 : st.c1] /= d[:, None]
            if Loff is not None:
                part = np.take(R, st.off_at, axis=0)
                part *= Loff[:, None]
                R[st.c1 :] -= np.bincount(st.flat(m)[0], part.ravel(), minlength=(q - st.c1) * m).reshape(-1, m)

    def backward(self, L: np.ndarray, X: np.ndarray, vals=None) -> None:
        """X ← L_sparse'⁻¹X in place (q × m), the tail's rows already solved."""
        q, m = X.shape
        one = X[:, 0] if m == 1 else None
        for st, (d, Loff, B) in zip(reversed(self.stages), reversed(self._values(L, vals))):
            if B is not None:  # X_stage −= B X_tail
                X[st.c0 : st.c1] -= B @ X[st.c1 :]
                X[st.c0 : st.c1] /= d[:, None]
                continue
            if one is not None:
                if Loff is not None:  # X_i −= Σ_j L_ji X_j
                    one[st.c0 : st.c1] -= np.bincount(st.off_col, np.take(one, st.off_row) * Loff, minlength=st.n)
                one[st.c0 : st.c1] /= d
                continue
            if Loff is not None:
                part = np.take(X, st.off_row, axis=0)
                part *= Loff[:, None]
                X[st.c0 : st.c1] -= np.bincount(st.flat(m)[1], part.ravel(), minlength=st.n * m).reshape(-1, m)
            X[st.c0 : st.c1] /= d[:, None]

    def selected_inverse(self, L: np.ndarray, Zt: np.ndarray, vals=None) -> np.ndarray:
        """(Λ'Z'WZΛ + I)⁻¹ on the sparse part's pattern, given its tail block Zt (full); ``vals``
        as for the solves."""
        Z = np.zeros(self.nsparse)
        Ztf = Zt.ravel()
        for st, (d, Loff, B) in zip(reversed(self.stages), reversed(self._values(L, vals))):
            dinv = 1.0 / d
            if Loff is None:
                Z[st.diag] = dinv * dinv
                continue
            if B is not None:  # Σ_ji = −(B Σ_tail)_ij / L_ii, Σ_ii = (1/L_ii − Σ_j B_ij Σ_ji) / L_ii
                S = B @ Zt
                S *= -dinv[:, None]
                Z[st.off] = S.ravel()[st.dense]
                Z[st.diag] = (dinv - np.einsum("ij,ij->i", B, S)) * dinv
                continue
            if st.sa is None:
                st.selection(*self._index)
            sig = np.empty(len(st.sa))
            sig[st.s_sparse] = Z[st.s_src_sp]
            sig[~st.s_sparse] = Ztf[st.s_src_tl]
            z = np.bincount(st.sa, Loff[st.sb] * sig, minlength=len(st.off))
            z *= -dinv[st.off_col]
            Z[st.off] = z
            Z[st.diag] = (dinv - np.bincount(st.off_col, Loff * z, minlength=st.n)) * dinv
        return Z

    # ----------------------------------------------------------------- products with Z'WZ
    def logdet_blocks(self, A: np.ndarray, S: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """(GΛS)_ii for every random effect, G = Z'WZ held as the data blocks ``A`` and S the
        selected inverse at the same positions."""
        g = A * S
        out = np.bincount(self.e_col, g * lam[self.t_row], minlength=self.q)
        off = self.offdiag
        out += np.bincount(self.e_row[off], (g * lam[self.t_col])[off], minlength=self.q)
        return out

    def symmetric_product(self, A: np.ndarray, V: np.ndarray) -> np.ndarray:
        """G V for G = Z'WZ held as the data blocks ``A`` (lower entries), V q × m."""
        if self._G is None or self._G[0] is not A:
            off = self.offdiag
            r = np.concatenate([self.e_row, self.e_col[off]])
            c = np.concatenate([self.e_col, self.e_row[off]])
            self._G = (A, sp.csr_matrix((np.concatenate([A, A[off]]), (r, c)), shape=(self.q, self.q)))
        return np.asarray(self._G[1] @ V)
