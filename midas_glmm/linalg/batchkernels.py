"""Compiled kernels of fit_many's Gaussian batch (numba, cached on disk): the profiled criterion
at many (response, θ) points in one pass (:func:`evaluate_diagonal`, :func:`evaluate_general`, read by
:class:`~midas_glmm.engine.lmmbatch.BatchCriterion`), and the per-batch passes over the rows
(:func:`ols_sums`, :func:`residual_sums`), each sum taken row by row so that a response's numbers do
not depend on the other responses of its batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import kernels  # called from compiled code: the module itself, not the lazy proxy

__all__ = ["evaluate_diagonal", "evaluate_general", "ols_sums", "residual_sums"]


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
def _copy_tail(T0, T):
    """T = T₀, the tail's data blocks laid out dense (with the tail's λ = I, as every group takes
    them: formed once by the caller, where a scatter per group had compiled the factor's scatter)."""
    qt = T.shape[0]
    for a in range(qt):
        for b in range(qt):
            T[a, b] = T0[a, b]


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
    diagpos, Ns, qs, tailoff, T0, nsparse, pan_n, pan_ptr, pan_dest, pan_src,
):  # fmt: skip
    """The sparse part's elimination by the block-sparse kernels (any nodes, any fill): fills
    T = M, the [X y] strip R (sparse rows solved, tail rows = c) and returns log|L_ss|² (∞ if a
    pivot block is not positive definite)."""
    q, p = XZx.shape
    m = p + 1
    qt = q - qs
    kernels.scale_blocks(A, L, colptr, rowidx, blkoff, nsize, nterm, lam, lamoff, Ns)
    _copy_tail(T0, T)
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
    _lam_t_rows(R2, lam, lamoff, nsize, nterm, nodeoff, np.int64(0), Ns, np.int64(0), R)
    for r in range(qs, q):
        for h in range(m):
            R[r, h] = R2[r, h]
    kernels.forward_solve(L, colptr, rowidx, blkoff, nsize, nodeoff, Ns, R, False)
    return logdet_s


@njit(cache=True)
def _eliminate_diagonal(
    A, T, R, W, Zw, Bw, wu, XZx, zy, k, lam, colptr, blkoff, nterm, nsize, lamoff, Ns, qs,
    tailoff, T0, nsparse, tail_scalar, B1, C, C_term, C_n,
):  # fmt: skip
    """The elimination of a diagonal sparse part (scalar nodes coupled to tail nodes only) by dense
    products: fills T = M (lower triangle), the [X y] strip R (sparse rows Λ_s'c / d_j, tail rows
    c) and returns log|L_ss|² = Σ_j log d_j."""
    q, p = XZx.shape
    qt = q - qs
    _copy_tail(T0, T)
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
        # c = Z_t'[X y] − Σ_j w_j a_j z_j', written row by row: an update of a slice of R by an
        # array (R[qs:] -= ...) compiles numba's shape-error messages, ~4 s on a first call
        BZ = B1.T @ Zw
        for r in range(qs, q):
            for h in range(p):
                R[r, h] = XZx[r, h] - BZ[r - qs, h]
            R[r, p] = zy[k, r] - BZ[r - qs, p]
    return logdet_s


@njit(cache=True)
def _group_points(
    g, i, k, logdet_s, T, Tw, R, ct, S, G, XXx, xy, rr, p_group, p_lam, lamoff, nsize, nterm,
    nodeoff, tailoff, Ns, N, qs, tail_scalar, reml, n, ldW, out_val, out_S,
):  # fmt: skip
    """The criterion at the points of group g (from i on) after its sparse elimination (T = M,
    the strip R, log|L_ss|²): each point's tail factor, R_t and [X y] Schur factor. Returns the
    first point of the next group."""
    q, m = R.shape
    p = m - 1
    qt = q - qs
    nmp = n - p if reml else n
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
    npts = len(p_group)
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
    return i


@njit(cache=True)
def evaluate_diagonal(
    g_resp, g_lam, p_group, p_lam, A, XZx, XXx, zy, xy, rr, colptr, blkoff, nsize, nterm, nodeoff,
    lamoff, Ns, N, qs, tailoff, T0, nsparse, tail_scalar, B1, C, C_term, C_n,
    reml, n, ldW, out_val, out_S,
):  # fmt: skip
    """The criterion at points sorted by group, for a diagonal sparse part (crossed or single
    intercepts: :func:`_eliminate_diagonal`); a group is one response and one θ_s (``g_lam``: λ
    with the tail's λ = I), a point adds its λ_t (``p_lam``). ``out_S[i]``: the lower Cholesky
    factor of the [X y] Schur complement at point i (R_X, c_β and r on its last row). A kernel of
    its own: it compiles none of the block-sparse kernels :func:`evaluate_general` calls."""
    q, p = XZx.shape
    m, qt = p + 1, q - qs
    T, Tw, R, ct = np.zeros((qt, qt)), np.zeros((qt, qt)), np.empty((q, m)), np.empty((qt, m))
    S, G = np.empty((m, m)), np.empty((m, m))
    W, Zw = np.empty(Ns), np.empty((Ns, m))
    Bw = np.empty((Ns if not len(C_n) else 0, qt))
    wu = np.empty(len(C_n))
    i = np.int64(0)  # not a literal 0: _group_points is compiled for one type of i
    for g in range(len(g_resp)):
        k = g_resp[g]
        lam = g_lam[g]
        logdet_s = _eliminate_diagonal(
            A, T, R, W, Zw, Bw, wu, XZx, zy, k, lam, colptr, blkoff, nterm, nsize, lamoff, Ns, qs,
            tailoff, T0, nsparse, tail_scalar, B1, C, C_term, C_n,
        )  # fmt: skip
        i = _group_points(
            g, i, k, logdet_s, T, Tw, R, ct, S, G, XXx, xy, rr, p_group, p_lam, lamoff, nsize, nterm,
            nodeoff, tailoff, Ns, N, qs, tail_scalar, reml, n, ldW, out_val, out_S,
        )  # fmt: skip


@njit(cache=True)
def evaluate_general(
    g_resp, g_lam, p_group, p_lam, A, XZx, XXx, zy, xy, rr, colptr, rowidx, blkoff, nsize, nterm,
    nodeoff, lamoff, diagpos, Ns, N, qs, tailoff, T0, nsparse, pan_n, pan_ptr,
    pan_dest, pan_src, tail_scalar, reml, n, ldW, out_val, out_S,
):  # fmt: skip
    """:func:`evaluate_diagonal` for any sparse part (nested factors, random slopes), eliminated
    by the block-sparse kernels (:func:`_eliminate_general`)."""
    q, p = XZx.shape
    m, qt = p + 1, q - qs
    T, Tw, R, ct = np.zeros((qt, qt)), np.zeros((qt, qt)), np.empty((q, m)), np.empty((qt, m))
    S, G = np.empty((m, m)), np.empty((m, m))
    L, R2 = np.empty(max(nsparse, 1)), np.empty((q, m))
    maxpan = 0
    for j in range(len(pan_n)):
        maxpan = max(maxpan, pan_n[j])
    B = np.empty(maxpan * qt)
    i = np.int64(0)  # not a literal 0: _group_points is compiled for one type of i
    npts = len(p_group)
    for g in range(len(g_resp)):
        k = g_resp[g]
        lam = g_lam[g]
        logdet_s = _eliminate_general(
            A, L, T, B, R, R2, XZx, zy, k, lam, colptr, rowidx, blkoff, nsize, nterm, nodeoff, lamoff,
            diagpos, Ns, qs, tailoff, T0, nsparse, pan_n, pan_ptr, pan_dest, pan_src,
        )  # fmt: skip
        if not logdet_s < np.inf:
            while i < npts and p_group[i] == g:
                out_val[i] = np.inf
                i += 1
            continue
        i = _group_points(
            g, i, k, logdet_s, T, Tw, R, ct, S, G, XXx, xy, rr, p_group, p_lam, lamoff, nsize, nterm,
            nodeoff, tailoff, Ns, N, qs, tail_scalar, reml, n, ldW, out_val, out_S,
        )  # fmt: skip


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
