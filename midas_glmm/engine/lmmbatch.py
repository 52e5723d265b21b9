"""Many responses on one Gaussian design: the profiled criterion at many (response, θ) points in
one compiled pass, and the lock-step Newton iteration :func:`~midas_glmm.many.fit_many` runs
on it.

A single fit spends its time in ~35 evaluations of the criterion, each a factorisation called
from Python. Here every response is moved at once: each Newton step evaluates, for all responses
together, the central-difference stencil of :func:`~midas_glmm.engine.optimize.fd_derivatives` around
each response's own θ, in one call of a compiled kernel.

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
from numba import njit

from ..linalg import kernels
from .factor import lam_flat

__all__ = ["BatchCriterion", "newton_many"]

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
#: tails larger than this are factored by LAPACK in the single-fit path instead
MAX_TAIL = 400


# ----------------------------------------------------------------------------- compiled kernel
@njit(cache=True)
def _cholesky_lower(T, n):
    """T[:n, :n] ← its lower Cholesky factor (the lower triangle is read); False if not PD."""
    for j in range(n):
        s = T[j, j]
        for k in range(j):
            s -= T[j, k] * T[j, k]
        if not s > 0.0:
            return False
        d = np.sqrt(s)
        T[j, j] = d
        for i in range(j + 1, n):
            s = T[i, j]
            for k in range(j):
                s -= T[i, k] * T[j, k]
            T[i, j] = s / d
    return True


@njit(cache=True)
def _lam_t_rows(M, lam, lamoff, nsize, nterm, nodeoff, node_lo, node_hi, row0, out):
    """out[rows of nodes lo..hi] = λ' M[those rows] node by node (rows shifted by ``row0``)."""
    m = M.shape[1]
    for a in range(node_lo, node_hi):
        pa = nsize[a]
        o = nodeoff[a] - row0
        lo = lamoff[nterm[a]]
        for c in range(pa):
            for h in range(m):
                s = 0.0
                for d in range(c, pa):  # λ lower triangular
                    s += lam[lo + d * pa + c] * M[o + d, h]
                out[o + c, h] = s


@njit(cache=True)
def _scale_tail(M, Tw, lam, lamoff, nsize, nterm, tailoff, Ns, N, scalar):
    """Tw (lower blocks) = λ_a' M_ab λ_b for tail nodes a ≥ b, from M's lower blocks."""
    if scalar:
        qt = N - Ns
        s = np.empty(qt)
        for a in range(qt):
            s[a] = lam[lamoff[nterm[Ns + a]]]
        for a in range(qt):
            sa = s[a]
            for b in range(a + 1):
                Tw[a, b] = sa * M[a, b] * s[b]
        return
    for a in range(Ns, N):
        pa, oa, la = nsize[a], tailoff[a], lamoff[nterm[a]]
        for b in range(Ns, a + 1):
            pb, ob, lb = nsize[b], tailoff[b], lamoff[nterm[b]]
            for r in range(pa):
                for c in range(pb):
                    s = 0.0
                    for d in range(r, pa):
                        for e in range(c, pb):
                            s += lam[la + d * pa + r] * M[oa + d, ob + e] * lam[lb + e * pb + c]
                    Tw[oa + r, ob + c] = s


@njit(cache=True)
def _tail_rows(A, colptr, rowidx, blkoff, nsize, tailoff, Ns, B1):
    """B1[j] = a_tj, the data's tail rows of the scalar sparse node j, dense (Ns × qt)."""
    B1[:, :] = 0.0
    for j in range(Ns):
        for e in range(colptr[j] + 1, colptr[j + 1]):
            node = rowidx[e]
            for r in range(nsize[node]):
                B1[j, tailoff[node] + r] = A[blkoff[e] + r]


@njit(cache=True)
def _eliminate_general(
    A, L, T, B, R, R2, XZx, zy, k, lam, colptr, rowidx, blkoff, nsize, nterm, nodeoff, lamoff,
    diagpos, Ns, qs, tailoff, brow, bcol, boff, nsparse, pan_n, pan_ptr, pan_dest, pan_src,
):  # fmt: skip
    """The sparse part's elimination by the block-sparse kernels (any nodes, any fill): fills
    T = M, the [X y] strip R (sparse rows solved, tail rows = c) and returns log|L_ss|² (∞ if a
    pivot block is not positive definite)."""
    q, p = XZx.shape
    m = p + 1
    qt = q - qs
    kernels.scale_blocks(A, L, colptr, rowidx, blkoff, nsize, nterm, lam, lamoff, Ns)
    T[:, :] = 0.0
    if qt:
        kernels.scatter_tail(A[nsparse:], brow, bcol, boff, nsize, nterm, lam, lamoff, tailoff, T)
    bad = kernels.factor_sparse(L, colptr, rowidx, blkoff, nsize, Ns, tailoff, T, len(pan_n) > 0)
    if bad:
        return np.inf
    for pi in range(len(pan_n)):
        nb = pan_n[pi]
        Bp = B[: nb * qt]
        Bp[:] = 0.0
        for e in range(pan_ptr[pi], pan_ptr[pi + 1]):
            Bp[pan_dest[e]] = L[pan_src[e]]
        Bm = Bp.reshape(nb, qt)
        T -= Bm.T @ Bm
    logdet_s = 0.0
    for e in range(len(diagpos)):
        logdet_s += 2.0 * np.log(L[diagpos[e]])
    # the [X y] strip: Λ_s' on the sparse rows, the tail rows as they are (λ_t = I)
    for r in range(q):
        for h in range(p):
            R2[r, h] = XZx[r, h]
        R2[r, p] = zy[k, r]
    _lam_t_rows(R2, lam, lamoff, nsize, nterm, nodeoff, 0, Ns, 0, R)
    for r in range(qs, q):
        for h in range(m):
            R[r, h] = R2[r, h]
    kernels.forward_solve(L, colptr, rowidx, blkoff, nsize, nodeoff, Ns, R, False)
    return logdet_s


@njit(cache=True)
def evaluate_points(
    g_resp, g_lam, p_group, p_lam,
    A, XZx, XXx, zy, xy, rr,
    colptr, rowidx, blkoff, nsize, nterm, nodeoff, lamoff, diagpos, Ns, N, qs, tailoff,
    brow, bcol, boff, nsparse, pan_n, pan_ptr, pan_dest, pan_src, tail_scalar, diagonal, B1, C, C_term, C_n,
    reml, n, ldW, out_val, out_S,
):  # fmt: skip
    """The criterion at points sorted by group; a group is one response and one θ_s (``g_lam``:
    λ with the tail's λ = I), a point adds its λ_t (``p_lam``). ``out_S[i]``: the lower Cholesky
    factor of the [X y] Schur complement at point i (R_X, c_β and r on its last row)."""
    q, p = XZx.shape
    m = p + 1
    qt = q - qs
    L = np.empty(max(nsparse, 1))
    T = np.zeros((qt, qt))
    Tw = np.zeros((qt, qt))
    R = np.empty((q, m))
    R2 = np.empty((q, m))
    ct = np.empty((qt, m))
    S = np.empty((m, m))
    G = np.empty((m, m))
    maxpan = 0
    for i in range(len(pan_n)):
        maxpan = max(maxpan, pan_n[i])
    B = np.empty(maxpan * qt)
    nd = Ns if diagonal else 0
    W = np.empty(nd)
    Zw = np.empty((nd, m))
    Bw = np.empty((nd if not len(C_n) else 0, qt))
    wu = np.empty(len(C_n))
    nmp = n - p if reml else n
    i = 0
    npts = len(p_group)
    for g in range(len(g_resp)):
        k = g_resp[g]
        lam = g_lam[g]
        if diagonal:  # Λ'Z'ZΛ + I diagonal on the sparse part: dense products only
            T[:, :] = 0.0
            kernels.scatter_tail(A[nsparse:], brow, bcol, boff, nsize, nterm, lam, lamoff, tailoff, T)
            logdet_s = 0.0
            for j in range(Ns):
                lj = lam[lamoff[nterm[j]]]
                d2 = lj * lj * A[blkoff[colptr[j]]] + 1.0
                logdet_s += np.log(d2)
                wj = lj * lj / d2  # (λ_j / d_j)²
                W[j] = wj
                f = lj / np.sqrt(d2)
                for h in range(p):
                    R[j, h] = XZx[j, h] * f
                    Zw[j, h] = XZx[j, h] * wj
                R[j, p] = zy[k, j] * f
                Zw[j, p] = zy[k, j] * wj
            if qt:
                # M = A_tt − Σ_j w_j a_j a_j' (grouped by (term, a_jj) when that is shorter)
                if len(C_n):
                    for u in range(len(C_n)):
                        lu = lam[lamoff[C_term[u]]]
                        wu[u] = lu * lu / (lu * lu * C_n[u] + 1.0)
                    if tail_scalar:  # C packed by rows of its lower triangle: half the reads
                        Tp = wu @ C.reshape(len(C_n), -1)
                        e = 0
                        for a in range(qt):
                            for b in range(a + 1):
                                T[a, b] -= Tp[e]
                                e += 1
                    else:  # whole: a vector node's diagonal block is read whole
                        T -= (wu @ C.reshape(len(C_n), qt * qt)).reshape(qt, qt)
                else:
                    for j in range(Ns):
                        for a in range(qt):
                            Bw[j, a] = B1[j, a] * W[j]
                    T -= B1.T @ Bw
                # c = Z_t'[X y] − Σ_j w_j a_j z_j'
                for r in range(qs, q):
                    for h in range(p):
                        R[r, h] = XZx[r, h]
                    R[r, p] = zy[k, r]
                R[qs:] -= B1.T @ Zw
        else:
            logdet_s = _eliminate_general(
                A,
                L,
                T,
                B,
                R,
                R2,
                XZx,
                zy,
                k,
                lam,
                colptr,
                rowidx,
                blkoff,
                nsize,
                nterm,
                nodeoff,
                lamoff,
                diagpos,
                Ns,
                qs,
                tailoff,
                brow,
                bcol,
                boff,
                nsparse,
                pan_n,
                pan_ptr,
                pan_dest,
                pan_src,
            )
            if not logdet_s < np.inf:
                while i < npts and p_group[i] == g:
                    out_val[i] = np.inf
                    i += 1
                continue
        for a in range(m):
            for b in range(m):
                if a < p and b < p:
                    v = XXx[a, b]
                elif a < p:
                    v = xy[k, a]
                elif b < p:
                    v = xy[k, b]
                else:
                    v = rr[k]
                for r in range(qs):
                    v -= R[r, a] * R[r, b]
                G[a, b] = v
        while i < npts and p_group[i] == g:
            lt = p_lam[i]
            logdet_t = 0.0
            ok = True
            if qt:
                _scale_tail(T, Tw, lt, lamoff, nsize, nterm, tailoff, Ns, N, tail_scalar)
                for a in range(qt):
                    Tw[a, a] += 1.0
                ok = _cholesky_lower(Tw, qt)
                if ok:
                    for a in range(qt):
                        logdet_t += 2.0 * np.log(Tw[a, a])
                    # R_t = L_tt⁻¹ Λ_t' c
                    _lam_t_rows(R[qs:], lt, lamoff, nsize, nterm, nodeoff, Ns, N, qs, ct)
                    for a in range(qt):
                        for h in range(m):
                            s = ct[a, h]
                            for b in range(a):
                                s -= Tw[a, b] * ct[b, h]
                            ct[a, h] = s / Tw[a, a]
            if ok:
                for a in range(m):
                    for b in range(a + 1):
                        v = G[a, b]
                        for r in range(qt):
                            v -= ct[r, a] * ct[r, b]
                        S[a, b] = v
                ok = _cholesky_lower(S, m)
            if not ok:
                out_val[i] = np.inf
                i += 1
                continue
            logdet_x = 0.0
            if reml:
                for a in range(p):
                    logdet_x += 2.0 * np.log(S[a, a])
            r2 = S[p, p] * S[p, p]
            if not r2 > 0.0:
                out_val[i] = np.inf
            else:
                out_val[i] = logdet_s + logdet_t + logdet_x + nmp * (1.0 + np.log(2.0 * np.pi * r2 / nmp)) - ldW
            for a in range(m):
                for b in range(m):
                    out_S[i, a, b] = S[a, b] if b <= a else 0.0
            i += 1


# ----------------------------------------------------------------------------- the data pass
@njit(cache=True)
def ols_sums(Y, off, X, Xty, sy):
    """Xty[j, k] += Σ_r X[r, j] y_rk and sy[k] += Σ_r y_rk, with y = Y − off, row by row: every
    sum runs over the rows in order, whatever the number of responses K (Y: n × K, any strides)."""
    n, K = Y.shape
    p = X.shape[1]
    for r in range(n):
        o = off[r]
        for k in range(K):
            y = Y[r, k] - o
            sy[k] += y
            for j in range(p):
                Xty[j, k] += X[r, j] * y


@njit(cache=True)
def residual_sums(Y, off, Xs, B, w, zidx, zval, zy, xy, rr, yss):
    """With r = y − X_s b (y = Y − off, b = B[:, k]) and prior weights w, row by row (each sum in
    row order, whatever K): Z'Wr (zy, q × K; row r of Z has its non-zeros zval[r] in the columns
    zidx[r]), X_s'Wr (xy, p × K), r'Wr (rr) and y'Wy (yss)."""
    n, K = Y.shape
    p = Xs.shape[1]
    s = zidx.shape[1]
    for r in range(n):
        o = off[r]
        wr = w[r]
        for k in range(K):
            y = Y[r, k] - o
            e = y
            for j in range(p):
                e -= Xs[r, j] * B[j, k]
            we = wr * e
            rr[k] += e * we
            yss[k] += y * y * wr
            for j in range(p):
                xy[j, k] += Xs[r, j] * we
            for a in range(s):
                zy[zidx[r, a], k] += zval[r, a] * we


# ----------------------------------------------------------------------------- the criterion
class BatchCriterion:
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
        P = crit.plan
        tm = crit.tmap
        self.crit, self.P, self.tmap = crit, P, tm
        self.zy, self.xy, self.rr = (np.ascontiguousarray(a, dtype=float) for a in (zy, xy, rr))
        p = crit.p
        self.XZx = np.ascontiguousarray(crit.blocks.XZ[:, :p])
        self.XXx = np.ascontiguousarray(crit.blocks.XX[:p, :p])
        self.m = len(tm)
        base, self.lamoff = lam_flat(tm.lams(tm.start))  # λ = I
        self.base = base
        # where each θ element sits in the flat λ, and which belong to the tail's terms
        self.lampos = np.array([int(np.flatnonzero(lam_flat(tm.lams(e))[0] != 0.0)[0]) for e in np.eye(self.m)])
        term_of = np.repeat(np.arange(len(tm.terms)), np.diff(tm.offsets))
        self.tail = term_of >= P.split
        # θ of one-column terms: the criterion is even in each (it enters as θ²), so at 0 its
        # gradient vanishes and it does not couple to the others; not so in a term with columns
        # below a diagonal element (flipping a column of λ leaves ΛΛ' as it is)
        self.scalar_theta = np.array([tm.terms[t].p == 1 for t in term_of], dtype=bool)
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
        self.diagpos = np.asarray(P.diagpos, dtype=np.int64)
        self.C, self.C_term, self.C_n = self._grouped_gram()

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
        _tail_rows(A, P.colptr, P.rowidx, P.blkoff, P.nsize, P.tailoff, P.Ns, self.B1)
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

    def with_responses(self, zy: np.ndarray, xy: np.ndarray, rr: np.ndarray) -> BatchCriterion:
        """The same design's criterion for another batch of responses (nothing analysed again)."""
        other = copy.copy(self)
        other.zy, other.xy, other.rr = (np.ascontiguousarray(a, dtype=float) for a in (zy, xy, rr))
        return other

    @property
    def usable(self) -> bool:
        """Whether the compiled path takes this design (a tail LAPACK-sized is left to Factor)."""
        return self.P.qt <= MAX_TAIL

    def __call__(self, resp: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(criteria, S) at the points (resp[i], theta[i]); S[i] is the lower Cholesky factor of
        the [X y] Schur complement there."""
        resp = np.asarray(resp, dtype=np.int64)
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        npts = len(resp)
        lam = np.tile(self.base, (npts, 1))
        lam[:, self.lampos] = theta
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
        evaluate_points(
            resp[first], np.ascontiguousarray(sparse_lam[first]), group[order].astype(np.int64),
            np.ascontiguousarray(lam[order]),
            c.blocks.A, self.XZx, self.XXx, self.zy, self.xy, self.rr,
            P.colptr, P.rowidx, P.blkoff, P.nsize, P.nterm, P.nodeoff, self.lamoff, self.diagpos,
            P.Ns, P.N, P.qs, P.tailoff, P.brow, P.bcol, P.boff, P.nsparse,
            self.pan_n, self.pan_ptr, self.pan_dest, self.pan_src, self.tail_scalar, self.diagonal,
            self.B1, self.C, self.C_term, self.C_n,
            c.REML, float(c.n), float(c.ldW), vals, S,
        )  # fmt: skip
        out, out_S = np.empty(npts), np.empty_like(S)
        out[order], out_S[order] = vals, S
        return out, out_S


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
        quadratic = (size < 0.05 * last_size[act]) & (gain < MAX_GAIN) & (next_size < STEP_TOL)
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
