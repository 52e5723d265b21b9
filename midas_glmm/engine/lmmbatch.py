"""Many responses on one Gaussian design: the profiled criterion at many (response, θ) points in
one call, and the lock-step Newton iteration :func:`~midas_glmm.many.fit_many` runs on it.

A single fit spends its time in ~35 evaluations of the criterion, each a factorisation called
from Python. Here every response is moved at once: each Newton step evaluates, for all responses
together, the central-difference stencil of :func:`~midas_glmm.engine.optimize.fd_derivatives` around
each response's own θ, in one call: of a compiled kernel (:class:`BatchCriterion`,
:mod:`~midas_glmm.linalg.batchkernels`), or for one term of one or two columns
per level of numpy's closed form (:class:`LevelBatch`), which compiles nothing.

The kernel saves most of the factorisations of a stencil. Write θ = (θ_s, θ_t) for the terms of
the factor's block-sparse part and of its dense tail. With the tail's λ_t set to I, eliminating
the sparse part gives (B' = A_ts Λ_s L_ss⁻ᵀ, L_ss L_ss' = Λ_s'A_ssΛ_s + I)

    M = A_tt − B'B,    c = Z_t'W[X y] − B'L_ss⁻¹Λ_s'Z_s'W[X y],    G = [X y]'W[X y] − R_s'R_s,

and for any λ_t the tail's factor and the rest of the criterion follow from dense work of the
tail's size alone: L_tt L_tt' = Λ_t'MΛ_t + I, R_t = L_tt⁻¹Λ_t'c, and the Cholesky factor of
G − R_t'R_t holds log|R_X|² and r². Stencil points that differ only in θ_t (for crossed
intercepts, the tail factor's θ) share one sparse elimination.

When the sparse part is diagonal (crossed or single intercepts) the elimination is dense products:
B'B = Σ_j w_j a_j a_j' with w_j = λ_j²/(λ_j² a_jj + 1), grouped over the levels with the same
term and a_jj.

Where a Hessian is not positive definite the step is damped. A response whose stencil cannot be
evaluated, whose steps stop descending, or that does not converge in :data:`MAX_STEPS` steps is
left to the single-fit optimizer.
"""

from __future__ import annotations

import copy

import numpy as np

from ..linalg import lazy
from ..linalg.gram import from_lower
from .factor import lam_flat

__all__ = ["BatchCriterion", "LevelBatch", "newton_many"]

batchkernels = lazy.load("batchkernels")  # compiled: loaded on first use

#: central-difference step, relative to max(1, |θ_i|), as fd_derivatives
FD_STEP = 1e-4
#: Newton steps before a response is handed to the single-fit optimizer
MAX_STEPS = 10
#: a θ element at its bound stays there when its gradient is above −this (a singular fit)
HELD_GRADIENT = 1e-6
#: converged after a plain Newton step below this (relative to max(1, |θ_i|)): what is left
#: after it is of the order of its square
FINAL_STEP = 1e-5
#: or converged when the steps shrink quadratically: the last one at most 1/20 of the one before,
#: gaining less than MAX_GAIN (on the −2 log-likelihood scale), and the next one, extrapolated
#: as |δ_k|³/|δ_k−1|², below STEP_TOL
MAX_GAIN = 1e-3
STEP_TOL = 1e-7
#: the extrapolation only from a step below this (relative): a larger one was not yet in Newton's
#: quadratic phase, and the ratio of the two steps underrates what is left (a step of 0.24 then
#: one of 1.2e-3 extrapolates 3e-8 where 9e-6 was left, 1e-8 of deviance)
QUADRATIC_FROM = 0.05
#: tails larger than this are factored by LAPACK in the single-fit path instead
MAX_TAIL = 400
#: the groups of a criterion call are eliminated and evaluated in chunks whose tails and strips
#: take about this many bytes (a chunk's are written by one kernel and read by the next)
CHUNK_BYTES = 1 << 20


# ----------------------------------------------------------------------------- the criterion
class _PointCriterion:
    """What the batch criteria share: the design's criterion, a batch's own blocks and where
    each θ element sits in the flat λ (λ linear in θ, one entry per element)."""

    def __init__(self, crit, zy: np.ndarray, xy: np.ndarray, rr: np.ndarray):
        self.crit, self.P, self.tmap = crit, crit.plan, crit.tmap
        tm = self.tmap
        self.zy, self.xy, self.rr = (np.ascontiguousarray(a, dtype=float) for a in (zy, xy, rr))
        self.m = len(tm)
        self.base, self.lamoff = lam_flat(tm.lams(tm.start))  # λ = I
        self.lampos = np.array([int(np.flatnonzero(lam_flat(tm.lams(e))[0] != 0.0)[0]) for e in np.eye(self.m)])
        self.term_of = np.repeat(np.arange(len(tm.terms)), np.diff(tm.offsets))
        # θ of one-column terms: the criterion is even in each (it enters as θ²), so at 0 its
        # gradient vanishes and it does not couple to the others; not so in a term with columns
        # below a diagonal element (flipping a column of λ leaves ΛΛ' as it is)
        self.scalar_theta = np.array([tm.terms[t].p == 1 for t in self.term_of], dtype=bool)

    def with_responses(self, zy: np.ndarray, xy: np.ndarray, rr: np.ndarray):
        """The same design's criterion for another batch of responses (nothing analysed again)."""
        other = copy.copy(self)
        other.zy, other.xy, other.rr = (np.ascontiguousarray(a, dtype=float) for a in (zy, xy, rr))
        return other

    def point_lams(self, theta: np.ndarray) -> np.ndarray:
        """The flat λ of every point (points × entries) from its θ (points × len θ)."""
        lam = np.tile(self.base, (len(theta), 1))
        lam[:, self.lampos] = theta
        return lam


class BatchCriterion(_PointCriterion):
    """The profiled REML/ML criterion of many responses on one design.

    Parameters
    ----------
    crit : LMMCriterion
        Any response's criterion on the design: its plan, Z'WZ and X blocks are shared.
    zy, xy, rr : ndarray
        The responses' own blocks, Z'Wr (K × q, node order), X'Wr (K × p) and r'Wr (K,), with
        r the response less its rough OLS fit (see :func:`~midas_glmm.engine.lmm.lmm_criterion`).

    What comes from the design alone (the layout, the tail rows B1 and the grouped sums C_u) is
    built once; :meth:`with_responses` gives the same criterion for another batch.
    """

    def __init__(self, crit, zy: np.ndarray, xy: np.ndarray, rr: np.ndarray):
        super().__init__(crit, zy, xy, rr)
        P, p = self.P, crit.p
        self.XZx = np.ascontiguousarray(crit.blocks.XZ[:, :p])
        self.XXx = np.ascontiguousarray(crit.blocks.XX[:p, :p])
        self.tail = self.term_of >= P.split
        panels = P.panels or []
        self.pan_n = np.array([nb for nb, _, _ in panels], dtype=np.int64)
        self.pan_ptr = np.concatenate([[0], np.cumsum([len(d) for _, d, _ in panels])]).astype(np.int64)
        self.pan_dest = np.concatenate([d for _, d, _ in panels] or [np.zeros(0, np.int64)]).astype(np.int64)
        self.pan_src = np.concatenate([s for _, _, s in panels] or [np.zeros(0, np.int64)]).astype(np.int64)
        self.tail_scalar = bool(np.all(P.nsize[P.Ns :] == 1))
        # a diagonal sparse part (scalar nodes, each coupled to tail nodes only) with a densely
        # coupled tail (where the factor itself updates the tail by dense panels): dense
        # products (B1 is Ns × qt) in place of the block-sparse kernels
        sparse_rows = P.rowidx < P.Ns
        sparse_rows[P.colptr[:-1]] = False
        self.diagonal = bool(
            P.Ns > 0
            and np.all(P.nsize[: P.Ns] == 1)
            and not sparse_rows.any()
            and (P.qt == 0 or (P.panels is not None and P.Ns * P.qt <= 1 << 22))
        )
        # a forest: scalar nodes each coupled to at most one later node (two levels of nested
        # intercepts), no tail: eliminated node by node without fill, no block-sparse kernel
        self.forest = bool(
            not self.diagonal
            and P.Ns > 0
            and P.qt == 0
            and np.all(P.nsize[: P.Ns] == 1)
            and np.all(np.diff(P.colptr[: P.Ns + 1]) <= 2)
        )
        self.diagpos = np.asarray(P.diagpos, dtype=np.int64)
        self.C, self.C_term, self.C_n = self._grouped_gram()
        # the tail's data blocks dense (I ≥ J blocks, as the factor's scatter lays them with λ = I)
        self.T0 = P.tail_data(crit.blocks.A)

    def _grouped_gram(self):
        """For a diagonal sparse part: B1 (Ns × qt), the data's tail rows a_tj of each node; and,
        as M = A_tt − Σ_j w_j a_j a_j' with w_j = λ_j²/(λ_j² a_jj + 1) depends on a node only
        through its term and a_jj (its number of rows, unweighted), the sums C_u = Σ_{j in u}
        a_j a_j' over the distinct (term, a_jj), computed once (U × qt², or U × its packed lower
        triangle for a scalar tail): used when there are at most half as many distinct pairs as
        nodes and the C_u fit in 32 MB."""
        P = self.P
        self.B1 = np.zeros((P.Ns if self.diagonal else 0, P.qt))
        none = (np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0))
        if not self.diagonal or P.qt == 0:
            return none
        A = self.crit.blocks.A
        _tail_rows(P, A, self.B1)
        diag = A[P.blkoff[P.colptr[:-1]]]
        keys = np.column_stack([P.nterm[: P.Ns].astype(float), diag])
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.ravel()
        U = len(uniq)
        if U > P.Ns // 2 or U * P.qt * P.qt > 1 << 22:
            return none
        lower = np.tril_indices(P.qt)
        C = np.zeros((U, len(lower[0]) if self.tail_scalar else P.qt * P.qt))
        for u in range(U):
            rows = self.B1[inv == u]
            Cu = rows.T @ rows
            C[u] = Cu[lower] if self.tail_scalar else Cu.ravel()  # packed lower triangle by rows
        return C, uniq[:, 0].astype(np.int64), uniq[:, 1].copy()

    @property
    def usable(self) -> bool:
        """Whether the compiled path takes this design (a tail LAPACK-sized is left to Factor)."""
        return self.P.qt <= MAX_TAIL

    def _elimination(self, g_resp: np.ndarray, g_lam: np.ndarray, m: int):
        """The sparse part's elimination of groups lo..hi − 1 (responses ``g_resp`` at λ
        ``g_lam``) into a chunk's tails, strips and log-determinants, ``f(lo, hi, Ts, Rs,
        logdets)``: a diagonal part's (compiled for its case), a forest's, or the block-sparse
        kernels'; a design compiles only the one it takes. Its scratch is made here."""
        P, A = self.P, self.crit.blocks.A
        qt = P.qt
        common = (g_resp, g_lam, A, self.XZx, self.zy, P.colptr)
        if self.diagonal:
            grouped = len(self.C_n) > 0
            kernel = batchkernels.diagonal_eliminator(grouped, self.tail_scalar)
            work = (np.empty(P.Ns), np.empty((P.Ns, m)), np.empty(len(self.C_n)), np.empty(self.C.shape[1]))
            work += (np.empty((0 if grouped else P.Ns, qt)), np.empty((m, qt)))
            args = (*common, P.blkoff, P.nterm, self.lamoff, P.Ns, P.qs, self.T0, self.B1, self.C, self.C_term)
            return lambda lo, hi, Ts, Rs, logdets: kernel(lo, hi, *args, self.C_n, *work, Ts, Rs, logdets)
        if self.forest:
            D = np.empty(P.Ns)
            args = (*common, P.rowidx, P.blkoff, P.nterm, self.lamoff, P.Ns, D)
            return lambda lo, hi, Ts, Rs, logdets: batchkernels.eliminate_forest(lo, hi, *args, Rs, logdets)
        maxpan = int(self.pan_n.max(initial=0))
        work = (np.empty(max(P.nsparse, 1)), np.empty((P.q, m)), np.empty(maxpan * qt))
        args = (*common, P.rowidx, P.blkoff, P.nsize, P.nterm, P.nodeoff, self.lamoff, self.diagpos, P.Ns, P.qs)
        args += (P.tailoff, self.T0, self.pan_n, self.pan_ptr, self.pan_dest, self.pan_src, *work)
        return lambda lo, hi, Ts, Rs, logdets: batchkernels.eliminate_general(lo, hi, *args, Ts, Rs, logdets)

    def __call__(self, resp: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(criteria, S) at the points (resp[i], theta[i]); S[i] is the lower Cholesky factor of
        the [X y] Schur complement there."""
        resp = np.asarray(resp, dtype=np.int64)
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        npts = len(resp)
        lam = self.point_lams(theta)
        sparse_lam = lam.copy()
        sparse_lam[:, self.lampos[self.tail]] = self.base[self.lampos[self.tail]]
        # group the points by (response, θ_s): one sparse elimination per group
        key = np.column_stack([resp.astype(float), theta[:, ~self.tail]])
        _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
        group = group.ravel()
        order = np.argsort(group, kind="stable")
        P, c = self.P, self.crit
        vals = np.empty(npts)
        S = np.empty((npts, c.p + 1, c.p + 1))
        g_resp, g_lam = resp[first], np.ascontiguousarray(sparse_lam[first])
        p_group, p_lam = group[order].astype(np.int64), np.ascontiguousarray(lam[order])
        m, qt = c.p + 1, P.qt
        ngroups = len(first)
        chunk = max(1, min(ngroups, CHUNK_BYTES // (8 * (qt * qt + P.q * m))))
        Ts, Rs, logdets = np.empty((chunk, qt, qt)), np.empty((chunk, P.q, m)), np.empty(chunk)
        # every kernel's scratch made here: one made in a kernel compiles numba's array constructors
        points = batchkernels.points_kernel(self.tail_scalar)
        point_work = (np.zeros((qt, qt)), np.empty((qt, m)), np.empty(qt), np.empty((m, m)), np.empty((m, m)))
        eliminate = self._elimination(g_resp, g_lam, m)
        i = np.int64(0)  # not a literal 0: the points kernel is compiled for one type of i
        for lo in range(0, ngroups, chunk):
            hi = min(lo + chunk, ngroups)
            eliminate(lo, hi, Ts, Rs, logdets)
            i = points(
                lo, hi, i, g_resp, logdets, Ts, Rs, self.XXx, self.xy, self.rr, p_group, p_lam, self.lamoff,
                P.nsize, P.nterm, P.nodeoff, P.tailoff, P.Ns, P.N, P.qs, c.REML, float(c.n), float(c.ldW),
                *point_work, vals, S,
            )  # fmt: skip
        out, out_S = np.empty(npts), np.empty_like(S)
        out[order], out_S[order] = vals, S
        return out, out_S


class LevelBatch(_PointCriterion):
    """:class:`BatchCriterion` of a one-term design of one or two columns per level (``(1 | g)``,
    ``(x | g)``), in numpy: the closed form of :class:`~midas_glmm.engine.factor.LevelSystem`
    at every (response, θ) point of a call at once, no compiled kernel.

    Per point, with M_l = λ'A_lλ + I and W's level rows L_l⁻¹λ'c_l (c_l the level's rows of
    Z'[X r_k], L_l the closed-form Cholesky factor of M_l): log|L_Z|² = Σ_l log det M_l and the
    [X r] Schur complement XX_k − Σ_l W_l'W_l, whose Cholesky factor holds log|R_X|² and r.
    Every sum runs over one point's levels alone, so a point's value does not depend on the
    other points of the call (nor a response's fit on its batch)."""

    #: most points × levels in the arrays of one pass (a call's points go in chunks of this)
    CHUNK = 1 << 16

    def __init__(self, crit, zy: np.ndarray, xy: np.ndarray, rr: np.ndarray):
        super().__init__(crit, zy, xy, rr)
        P, p = self.P, crit.p
        self.pz, self.levels = int(P.p_term[0]), P.terms[0].nlevels
        A = crit.blocks.A[: P.nsparse].reshape(self.levels, self.pz * self.pz)
        self.A = np.ascontiguousarray(A[:, 0] if self.pz == 1 else A[:, [0, 2, 3]].T)  # (a, b, c) rows
        # Z'X by column of the term: pz × p × levels
        self.C = np.ascontiguousarray(crit.blocks.XZ[:, :p].reshape(self.levels, self.pz, p).transpose(1, 2, 0))
        XX = crit.blocks.XX
        self.XXx = from_lower(XX)[:p, :p]

    @staticmethod
    def applies(crit) -> bool:
        """Whether the design is one term of one or two columns per level."""
        P = crit.plan
        return P.k == 1 and P.Ns > 0 and (P.diagonal or P.blockdiag) and int(P.p_term[0]) <= 2

    @property
    def usable(self) -> bool:
        """Always: no tail to factor."""
        return True

    def __call__(self, resp: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(criteria, S) at the points (resp[i], theta[i]), as :meth:`BatchCriterion.__call__`."""
        resp = np.asarray(resp, dtype=np.int64)
        lam = self.point_lams(np.atleast_2d(np.asarray(theta, dtype=float)))
        npts, m = len(resp), self.crit.p + 1
        vals, S = np.empty(npts), np.zeros((npts, m, m))
        step = max(1, self.CHUNK // max(self.levels, 1))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a bad point: ∞ below
            for a in range(0, npts, step):
                self._points(resp[a : a + step], lam[a : a + step], vals[a : a + step], S[a : a + step])
        return vals, S

    def _points(self, resp, lam, vals, S) -> None:
        """One chunk of points: their values and Schur factors into ``vals`` and ``S``."""
        p, levels = self.crit.p, self.levels
        m = p + 1
        zy = self.zy[resp].reshape(len(resp), levels, self.pz)
        if self.pz == 1:
            s = (lam[:, 0] ** 2)[:, None]
            M = s * self.A + 1.0
            ok = np.all(M > 0.0, axis=1)
            logdet = np.log(M).sum(axis=1)
            f = np.sqrt(s / M)  # λ / L_l
            W = np.empty((m, len(resp), levels))
            np.multiply(self.C[0][:, None, :], f, out=W[:p])
            np.multiply(zy[:, :, 0], f, out=W[p])
            Ws = [W]
        else:  # L_l = [L00 0; L10 √d11] from M_l = [m00 m10; m10 m11] (factor.pair_cholesky)
            l00, l10, l11 = (lam[:, j, None] for j in (0, 2, 3))
            a, b, c = self.A
            m00 = l00 * l00 * a + 2.0 * l00 * l10 * b + l10 * l10 * c + 1.0
            L00 = np.sqrt(m00)
            L10 = (l11 * l00 * b + l11 * l10 * c) / L00
            d11 = l11 * l11 * c + 1.0 - L10 * L10
            ok = np.all(m00 > 0.0, axis=1) & np.all(d11 > 0.0, axis=1)
            logdet = np.log(m00 * d11).sum(axis=1)
            c0 = np.empty((m, len(resp), levels))  # each level's two rows of Z'[X r]
            c1 = np.empty((m, len(resp), levels))
            c0[:p], c0[p] = self.C[0][:, None, :], zy[:, :, 0]
            c1[:p], c1[p] = self.C[1][:, None, :], zy[:, :, 1]
            W0 = (l00 * c0 + l10 * c1) / L00  # L_l⁻¹ λ'c_l, first row
            W1 = (l11 * c1 - L10 * W0) / np.sqrt(d11)
            Ws = [W0, W1]
        XX = np.empty((len(resp), m, m))
        XX[:, :p, :p] = self.XXx
        XX[:, p, :p] = XX[:, :p, p] = self.xy[resp]
        XX[:, p, p] = self.rr[resp]
        for i in range(m):
            for j in range(i + 1):
                acc = XX[:, i, j].copy()
                for W in Ws:
                    acc -= (W[i] * W[j]).sum(axis=1)
                XX[:, i, j] = XX[:, j, i] = acc
        L = _cholesky_points(XX, ok)
        vals[:] = _criterion_values(self.crit, logdet, L, ok)
        S[:] = L


def _tail_rows(P, A: np.ndarray, B1: np.ndarray) -> None:
    """B1[j] = a_tj, the data's tail rows of each scalar sparse node j of a diagonal sparse part,
    laid out dense (Ns × qt): every entry of column j below its pivot lies in a tail node (of
    ``nsize`` rows, at ``tailoff`` in the tail), its block at ``blkoff`` in A."""
    cp = np.asarray(P.colptr[: P.Ns + 1], dtype=np.int64)
    below = np.ones(cp[-1] - cp[0], dtype=bool)
    below[cp[:-1] - cp[0]] = False  # each column's pivot
    e = np.arange(cp[0], cp[-1])[below]
    j = np.repeat(np.arange(P.Ns), np.diff(cp) - 1)
    node = P.rowidx[e]
    size = P.nsize[node]
    which = np.repeat(np.arange(len(e)), size)  # an entry per row of its node
    r = np.arange(len(which)) - np.repeat(np.cumsum(size) - size, size)
    B1[j[which], P.tailoff[node][which] + r] = A[P.blkoff[e][which] + r]


def _cholesky_points(A: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of the points' matrices A[i] where ``ok`` (cleared in place where a
    matrix is not positive definite; zeros there)."""
    L = np.zeros_like(A)
    try:
        L[ok] = np.linalg.cholesky(A[ok])
    except np.linalg.LinAlgError:  # some point's matrix is not positive definite
        for i in np.flatnonzero(ok):
            try:
                L[i] = np.linalg.cholesky(A[i])
            except np.linalg.LinAlgError:
                ok[i] = False
    return L


def _criterion_values(crit, logdet_z: np.ndarray, L: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The profiled criterion from log|L_Z|² and the Cholesky factor L of the [X y] Schur
    complement (its diagonal: R_X, then r), ∞ where not ``ok`` or r² = 0."""
    p = crit.p
    dg = np.diagonal(L, axis1=1, axis2=2)
    r2 = dg[:, p] ** 2
    ok = ok & (r2 > 0.0)
    nmp = crit.n - p if crit.REML else crit.n
    logdet_x = 2.0 * np.log(dg[:, :p]).sum(axis=1) if crit.REML else 0.0
    value = logdet_z + logdet_x + nmp * (1.0 + np.log(2.0 * np.pi * r2 / nmp)) - crit.ldW
    return np.where(ok, value, np.inf)


# ----------------------------------------------------------------------------- lock-step Newton
def _stencil(m: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Unit offsets of fd_derivatives' stencil: 0, +e_i, −e_i, then ±(e_i + e_j) for j < i."""
    E = np.eye(m)
    pairs = [(i, j) for i in range(m) for j in range(i)]
    rows = [np.zeros(m)] + list(E) + list(-E) + [E[i] + E[j] for i, j in pairs] + [-(E[i] + E[j]) for i, j in pairs]
    return np.array(rows), pairs


def _derivatives(f: np.ndarray, steps: np.ndarray, m: int, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f0, g, H) per response from the stencil's values f (K × points), as fd_derivatives."""
    f0 = f[:, 0]
    fp, fm = f[:, 1 : 1 + m], f[:, 1 + m : 1 + 2 * m]
    g = (fp - fm) / (2 * steps)
    H = np.zeros((len(f), m, m))
    idx = np.arange(m)
    H[:, idx, idx] = (fp - 2 * f0[:, None] + fm) / steps**2
    npair = len(pairs)
    for a, (i, j) in enumerate(pairs):
        fpp, fmm = f[:, 1 + 2 * m + a], f[:, 1 + 2 * m + npair + a]
        h = (fpp - fp[:, i] - fp[:, j] + 2 * f0 - fm[:, i] - fm[:, j] + fmm) / (2 * steps[:, i] * steps[:, j])
        H[:, i, j] = H[:, j, i] = h
    return f0, g, H


def newton_many(bc: BatchCriterion, start: np.ndarray, other_start: np.ndarray | None = None) -> dict:
    """Minimise each response's criterion from its start by projected Newton steps on central
    differences, all responses at once.

    The criterion is smooth in θ across its bounds (it depends on ΛΛ'), so the stencil may step
    past a bound. A θ element at its bound with a non-negative gradient and positive curvature
    there is held (a singular fit); the Newton step moves the others, and a step that crosses a
    bound is cut back to it. A step is checked by the centre of the next stencil (no evaluation
    of its own) and halved while it does not descend; the last step, once converged, is
    evaluated alone. Returns a dict of arrays over the responses: ``done`` (converged),
    ``theta``, ``fun``, ``S`` (the Schur factor at θ̂) and ``nfev``. A response not ``done`` is
    for the single-fit optimizer (a stencil with a point that cannot be evaluated, no descent
    after 12 halvings, or no convergence in :data:`MAX_STEPS` steps). ``other_start`` (one θ for all responses): where
    the criterion is lower there than at a response's start, the response starts there instead
    (the single fit's choice between its moment start and lme4's λ = I)."""
    K, m = start.shape
    lower = np.where(np.isfinite(bc.tmap.lower), bc.tmap.lower, -np.inf)
    bounded = np.isfinite(lower)
    x = np.maximum(start.astype(float), lower)
    done = np.zeros(K, bool)
    failed = np.zeros(K, bool)
    fun = np.full(K, np.inf)
    nfev = np.zeros(K, np.int64)
    ms = bc.crit.p + 1
    S_hat = np.empty((K, ms, ms))
    unit, pairs = _stencil(m)
    npts = len(unit)
    eye = np.eye(m)
    base = x.copy()  # the last point known to descend (the centre of the last accepted stencil)
    f_base = np.full(K, np.inf)
    delta_k = np.zeros((K, m))  # the step from base to x, while x is unchecked
    t_k = np.ones(K)
    unchecked = np.zeros(K, bool)
    halvings = np.zeros(K, np.int64)
    last_size = np.zeros(K)  # each response's last full Newton step (relative), 0: none yet
    prev = x.copy()  # where each response's last step started
    for _ in range(MAX_STEPS + 12):
        act = np.flatnonzero(~done & ~failed)
        if not len(act):
            break
        xa = x[act]
        steps = FD_STEP * np.maximum(1.0, np.abs(xa))
        pts = (xa[:, None, :] + unit[None, :, :] * steps[:, None, :]).reshape(-1, m)
        if other_start is not None:  # the first stencils, with the other start beside each
            f, S = bc(
                np.concatenate([np.repeat(act, npts), act]), np.vstack([pts, np.tile(other_start, (len(act), 1))])
            )
            nfev[act] += npts + 1
            f_other, f, S = f[len(pts) :], f[: len(pts)], S[: len(pts)]
            better = f_other < f.reshape(len(act), npts)[:, 0]
            x[act[better]] = other_start
            base[act[better]] = other_start
            other_start = None
            if better.any():  # those take their stencil at the other start, in the next round
                keep = ~better
                act, xa, steps = act[keep], xa[keep], steps[keep]
                f = f.reshape(-1, npts)[keep].ravel()
                S = S.reshape(-1, npts, ms, ms)[keep].reshape(-1, ms, ms)
        else:
            f, S = bc(np.repeat(act, npts), pts)
            nfev[act] += npts
        f = f.reshape(len(act), npts)
        S_centre = S.reshape(len(act), npts, ms, ms)[:, 0]
        with np.errstate(invalid="ignore", over="ignore"):  # a stencil with an ∞ point: not ok below
            f0, g, H = _derivatives(f, steps, m, pairs)
        # the step that led here: halved while it does not descend
        worse = unchecked[act] & ~(f0 <= f_base[act] + 1e-10 * np.maximum(1.0, np.abs(f_base[act])))
        if worse.any():
            r = act[worse]
            halvings[r] += 1
            failed[r[halvings[r] > 12]] = True
            r = r[halvings[r] <= 12]
            t_k[r] *= 0.5
            x[r] = np.maximum(base[r] + t_k[r, None] * delta_k[r], lower)
            last_size[r] = 0.0
        keep = ~worse
        act, xa, f, f0, g, H, S_centre, steps = (a[keep] for a in (act, xa, f, f0, g, H, S_centre, steps))
        base[act], f_base[act], unchecked[act], halvings[act] = xa, f0, False, 0
        ok = np.all(np.isfinite(f), axis=1)
        # held at a bound: a one-column term's θ where the gradient pushes out of the region and
        # the curvature is positive; a multi-column term's diagonal at its bound (a column-sign
        # twin and couplings the stencil does not resolve) is for the single-fit optimizer
        diagH = np.diagonal(H, axis1=1, axis2=2)
        at_bound = bounded & (xa <= lower)
        multi = (at_bound & ~bc.scalar_theta).any(axis=1)
        failed[act[multi]] = True
        ok &= ~multi
        held = at_bound & (g >= -HELD_GRADIENT) & (diagH > 0)
        # At a bound with a flat gradient and negative curvature (a step cut back at the bound
        # that passed an interior optimum near it; by symmetry the gradient there is zero): go
        # back halfway to where the step started, and take the derivatives again there.
        escape = ok & (at_bound & ~held & (g >= -HELD_GRADIENT)).any(axis=1)
        if escape.any():
            r = act[escape]
            with np.errstate(invalid="ignore"):  # −∞ bounds of off-diagonal θ: not used
                back = lower + 0.5 * np.maximum(prev[r] - lower, 0.02)
            x[r] = np.where(at_bound[escape] & ~held[escape], back, xa[escape])
            last_size[r] = 0.0
        failed[act[~ok & ~escape]] = True
        ok &= ~escape
        free = ~held
        Hf = np.where(free[:, :, None] & free[:, None, :], H, 0.0) + held[:, :, None] * eye
        Hf = np.where(ok[:, None, None], Hf, eye)
        gf = np.where(free & ok[:, None], g, 0.0)
        # a Hessian that is not positive definite (far from the optimum, or a curvature of the
        # wrong sign on the way to a bound) is shifted until it is: a damped step
        low = np.linalg.eigvalsh(Hf)[:, 0]
        scale = np.maximum(np.abs(np.trace(Hf, axis1=1, axis2=2)) / m, 1e-8)
        shift = np.where(low > 1e-8 * scale, 0.0, 1e-3 * scale - 2.0 * np.minimum(low, 0.0))
        delta = -np.linalg.solve(Hf + shift[:, None, None] * eye, gf[..., None])[..., 0]
        # a multi-column term's diagonal goes at most 90% of the way to its bound in one step
        crossing = bounded & ~bc.scalar_theta & (xa + delta < lower)
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(crossing, 0.9 * (xa - lower) / -delta, np.inf).min(axis=1)
        cut = np.minimum(room, 1.0)
        delta = delta * cut[:, None]
        gain = -0.5 * np.einsum("ki,ki->k", gf, delta)
        # Converged: a plain Newton step below FINAL_STEP (what is left is of the order of its
        # square), or steps shrinking quadratically (the step 20-fold below the last, gaining
        # less than MAX_GAIN, and |δ_k+1| ≈ |δ_k|³/|δ_k−1|² below STEP_TOL)
        size = np.max(np.abs(delta) / np.maximum(1.0, np.abs(xa)), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            next_size = np.where(last_size[act] > 0, size**3 / last_size[act] ** 2, np.inf)
        full = (shift == 0.0) & (cut == 1.0) & ~np.any(xa + delta < lower, axis=1)  # a plain Newton step
        quadratic = (size < 0.05 * last_size[act]) & (last_size[act] < QUADRATIC_FROM) & (gain < MAX_GAIN)
        quadratic &= next_size < STEP_TOL
        conv = ok & full & ((size < FINAL_STEP) | quadratic)
        # the last step, evaluated alone; if it does not descend, the centre is the optimum
        if conv.any():
            c = np.flatnonzero(conv)
            cand = np.maximum(xa[c] + delta[c], lower)
            fv, Sv = bc(act[c], cand)
            nfev[act[c]] += 1
            better = fv <= f0[c]
            r = act[c]
            x[r] = np.where(better[:, None], cand, xa[c])
            fun[r] = np.where(better, fv, f0[c])
            S_hat[r] = np.where(better[:, None, None], Sv, S_centre[c])
            done[r] = True
        # the others step, to be checked by their next stencil
        s = np.flatnonzero(ok & ~conv)
        r = act[s]
        prev[r] = xa[s]
        delta_k[r], t_k[r], unchecked[r] = delta[s], 1.0, True
        x[r] = np.maximum(xa[s] + delta[s], lower)
        last_size[r] = np.where(full[s], size[s], 0.0)
    return {"done": done, "theta": x, "fun": fun, "S": S_hat, "nfev": nfev}
