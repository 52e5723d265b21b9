"""Compiled kernels of fit_many's Gaussian batch (numba, cached on disk): the profiled criterion
at many (response, θ) points, read by :class:`~midas_glmm.engine.lmmbatch.BatchCriterion`, chunk
by chunk of its groups (a group: one response at one θ_s) — the sparse part's elimination
(:func:`eliminate_general`; a :func:`diagonal_eliminator` for crossed or single intercepts;
:func:`eliminate_forest` for two levels of nested ones), then the points of those groups
(:func:`points_kernel`), each kernel called from Python (none links another of them, whose code
numba would optimise again inside it) — and the per-batch passes over the rows
(:func:`ols_sums`, :func:`residual_sums`), each sum taken row by row so that a response's numbers
do not depend on the other responses of its batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import kernels  # called from compiled code: the module itself, not the lazy proxy

__all__ = ["diagonal_eliminator", "eliminate_forest", "eliminate_general", "points_kernel", "ols_sums", "residual_sums"]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
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


@njit(cache=True, nogil=True)
def _copy_tail(T0, T):
    """T = T₀, the tail's data blocks laid out dense (with the tail's λ = I, as every group takes
    them: formed once by the caller, where a scatter per group had compiled the factor's scatter)."""
    qt = T.shape[0]
    for a in range(qt):
        for b in range(qt):
            T[a, b] = T0[a, b]


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _scale_tail(M, Tw, lam, lamoff, nsize, nterm, tailoff, Ns, N):
    """Tw (lower blocks) = λ_a' M_ab λ_b for tail nodes a ≥ b, from M's lower blocks."""
    for a in range(Ns, N):
        pa, oa, la = nsize[a], tailoff[a], lamoff[nterm[a]]
        for b in range(Ns, a + 1):
            pb, ob, lb = nsize[b], tailoff[b], lamoff[nterm[b]]
            if pa == 2 and pb == 2:  # written out (the loops below cost several times the arithmetic)
                a0, a1, a2 = lam[la], lam[la + 2], lam[la + 3]  # λ_a = [[a0, 0], [a1, a2]], λ_b alike
                b0, b1, b2 = lam[lb], lam[lb + 2], lam[lb + 3]
                m00, m01, m10, m11 = M[oa, ob], M[oa, ob + 1], M[oa + 1, ob], M[oa + 1, ob + 1]
                t0, t1 = m00 * b0 + m01 * b1, m10 * b0 + m11 * b1  # (M λ_b)'s first column
                Tw[oa, ob] = a0 * t0 + a1 * t1
                Tw[oa, ob + 1] = (a0 * m01 + a1 * m11) * b2
                Tw[oa + 1, ob] = a2 * t1
                Tw[oa + 1, ob + 1] = a2 * m11 * b2
                continue
            for r in range(pa):
                for c in range(pb):
                    s = 0.0
                    for d in range(r, pa):
                        for e in range(c, pb):
                            s += lam[la + d * pa + r] * M[oa + d, ob + e] * lam[lb + e * pb + c]
                    Tw[oa + r, ob + c] = s


@njit(cache=True, nogil=True)
def eliminate_general(
    g_lo, g_hi, g_resp, g_lam, A, XZx, zy, colptr, rowidx, blkoff, nsize, nterm, nodeoff, lamoff, diagpos,
    Ns, qs, tailoff, T0, pan_n, pan_ptr, pan_dest, pan_src, L, R2, B, Ts, Rs, logdets,
):  # fmt: skip
    """The sparse part's elimination by the block-sparse kernels (any nodes, any fill) for the
    groups g_lo..g_hi − 1 (a group: response ``g_resp[g]`` at λ ``g_lam[g]``, the tail's λ = I):
    Ts[g − g_lo] = M, Rs[g − g_lo] the [X y] strip (sparse rows solved, tail rows = c) and
    logdets[g − g_lo] = log|L_ss|² (∞ where a pivot block is not positive definite). Scratch (L,
    R2, B) from the caller, as for every kernel here: an array made in a kernel compiles numba's
    array constructors on a first call."""
    q, p = XZx.shape
    m = p + 1
    qt = q - qs
    for g in range(g_lo, g_hi):
        k, lam = g_resp[g], g_lam[g]
        T, R = Ts[g - g_lo], Rs[g - g_lo]
        kernels.scale_blocks(A, L, colptr, rowidx, blkoff, nsize, nterm, lam, lamoff, Ns)
        _copy_tail(T0, T)
        bad = kernels.factor_sparse(L, colptr, rowidx, blkoff, nsize, Ns, tailoff, T, len(pan_n) > 0)
        if bad:
            logdets[g - g_lo] = np.inf
            continue
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
        logdets[g - g_lo] = logdet_s
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


@njit(cache=True, nogil=True)
def eliminate_forest(g_lo, g_hi, g_resp, g_lam, A, XZx, zy, colptr, rowidx, blkoff, nterm, lamoff, Ns, D, Rs, logdets):
    """:func:`eliminate_general` for a sparse part that is a forest of scalar nodes, each coupled
    to at most one later node, its parent (two levels of nested random intercepts,
    ``(1|school/class)``), and no tail: no fill, so node by node in order, with K = Λ'AΛ + I,
    L_jj² = D_j (K_jj less its children's L_jc²) and L_πj = K_πj / L_jj taken from the parent's
    D_π; the strip's row j is solved and L_πj times it taken from its parent's. Scratch D (Ns)."""
    p = XZx.shape[1]
    m = p + 1
    for g in range(g_lo, g_hi):
        k, lam = g_resp[g], g_lam[g]
        R = Rs[g - g_lo]
        for j in range(Ns):
            lj = lam[lamoff[nterm[j]]]
            D[j] = lj * lj * A[blkoff[colptr[j]]] + 1.0
            for h in range(p):
                R[j, h] = XZx[j, h] * lj
            R[j, p] = zy[k, j] * lj
        logdet_s = 0.0
        for j in range(Ns):
            dj = D[j]
            if not dj > 0.0:
                logdet_s = np.inf
                break
            logdet_s += np.log(dj)
            ljj = np.sqrt(dj)
            for h in range(m):
                R[j, h] /= ljj
            e = colptr[j] + 1
            if e < colptr[j + 1]:  # its parent π: L_πj = λ_π λ_j a_πj / L_jj
                par = rowidx[e]
                l = lam[lamoff[nterm[par]]] * lam[lamoff[nterm[j]]] * A[blkoff[e]] / ljj
                D[par] -= l * l
                for h in range(m):
                    R[par, h] -= l * R[j, h]
        logdets[g - g_lo] = logdet_s


#: (grouped, tail_scalar) -> the compiled elimination of a diagonal sparse part, made on first use
_DIAGONAL_ELIMINATORS: dict = {}


def diagonal_eliminator(grouped: bool, tail_scalar: bool):
    """:func:`eliminate_general` for a diagonal sparse part (scalar nodes coupled to tail nodes
    only: crossed or single intercepts), by dense products, compiled for one case (constants of
    the closure, each cached on disk under them): the tail's update M = A_tt − Σ_j w_j a_j a_j'
    from the sums C_u grouped by (term, a_jj) (``grouped``; for a scalar tail, C packed by rows of
    its lower triangle), else from the tail rows B1 by BLAS. The grouped case is written in
    loops: its products are matrix-vector sized, and it compiles none of numba's BLAS bindings
    (~1.5 s of a first fit_many). Scratch from the caller: W (Ns), Zw (Ns × m), w_u, the packed
    Σ_u w_u C_u, B1 scaled by W (ungrouped) and (B1'Zw)' (m × qt)."""
    key = (bool(grouped), bool(tail_scalar))
    kernel = _DIAGONAL_ELIMINATORS.get(key)
    if kernel is None:
        kernel = _DIAGONAL_ELIMINATORS[key] = _diagonal_eliminator(*key)
    return kernel


def _diagonal_eliminator(grouped: bool, tail_scalar: bool):
    @njit(cache=True, nogil=True)
    def eliminate(
        g_lo, g_hi, g_resp, g_lam, A, XZx, zy, colptr, blkoff, nterm, lamoff, Ns, qs, T0, B1, C, C_term, C_n,
        W, Zw, wu, Tp, Bw, BZt, Ts, Rs, logdets,
    ):  # fmt: skip
        q, p = XZx.shape
        m = p + 1
        qt = q - qs
        nu = len(C_n)
        for g in range(g_lo, g_hi):
            k, lam = g_resp[g], g_lam[g]
            T, R = Ts[g - g_lo], Rs[g - g_lo]
            _copy_tail(T0, T)
            logdet_s = 0.0
            for j in range(Ns):  # L_jj² = d_j = λ_j² a_jj + 1; the strip's row Λ_s'c_j / L_jj
                lj = lam[lamoff[nterm[j]]]
                d2 = lj * lj * A[blkoff[colptr[j]]] + 1.0
                logdet_s += np.log(d2)
                wj = lj * lj / d2  # (λ_j / L_jj)²
                W[j] = wj
                f = lj / np.sqrt(d2)
                for h in range(p):
                    R[j, h] = XZx[j, h] * f
                    Zw[j, h] = XZx[j, h] * wj
                R[j, p] = zy[k, j] * f
                Zw[j, p] = zy[k, j] * wj
            logdets[g - g_lo] = logdet_s
            if qt == 0:
                continue
            # M = A_tt − Σ_j w_j a_j a_j'
            if grouped:  # Σ_u w_u C_u, u over the distinct (term, a_jj)
                for u in range(nu):
                    lu = lam[lamoff[C_term[u]]]
                    wu[u] = lu * lu / (lu * lu * C_n[u] + 1.0)
                Tp[:] = 0.0
                for u in range(nu):
                    w = wu[u]
                    for e in range(len(Tp)):
                        Tp[e] += w * C[u, e]
                e = 0
                for a in range(qt):
                    for b in range(a + 1 if tail_scalar else qt):  # packed lower triangle, or whole
                        T[a, b] -= Tp[e]
                        e += 1
                # c = Z_t'[X y] − Σ_j w_j a_j z_j': (B1'Zw)' as a sum of B1's rows (runs along a
                # row, which the compiler vectorises; a dot product down B1's columns it would not)
                BZt[:, :] = 0.0
                for j in range(Ns):
                    for h in range(m):
                        zjh = Zw[j, h]
                        for a in range(qt):
                            BZt[h, a] += B1[j, a] * zjh
            else:
                for j in range(Ns):
                    for a in range(qt):
                        Bw[j, a] = B1[j, a] * W[j]
                T -= B1.T @ Bw
                BZt[:, :] = Zw.T @ B1
            # written row by row: an update of a slice of R by an array (R[qs:] -= ...) compiles
            # numba's shape-error messages, ~4 s on a first call
            for r in range(qs, q):
                for h in range(p):
                    R[r, h] = XZx[r, h] - BZt[h, r - qs]
                R[r, p] = zy[k, r] - BZt[p, r - qs]

    return eliminate


#: tail_scalar -> the compiled points kernel, made on first use
_POINT_KERNELS: dict = {}


def points_kernel(tail_scalar: bool):
    """The criterion at the points of a chunk of groups after their sparse elimination
    (:func:`eliminate_general` or a :func:`diagonal_eliminator`: M, the strip R and log|L_ss|² of
    each group): each point's tail factor L_tt L_tt' = Λ_t'MΛ_t + I, R_t = L_tt⁻¹Λ_t'c and the
    Cholesky factor of the [X y] Schur complement G − R_t'R_t. Compiled for a scalar tail (λ_t
    one number a node: Λ_t'MΛ_t by the nodes' scales, written in) or for any tail, with its dot
    products reassociated (vectorised: the points 15-20% faster; a point's sums are the same
    whatever the call it is in, their order set by the sizes alone)."""
    key = bool(tail_scalar)
    kernel = _POINT_KERNELS.get(key)
    if kernel is None:
        kernel = _POINT_KERNELS[key] = _points_kernel(key)
    return kernel


def _points_kernel(tail_scalar: bool):
    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def group_points(
        g_lo, g_hi, i, g_resp, logdets, Ts, Rs, XXx, xy, rr, p_group, p_lam, lamoff, nsize, nterm, nodeoff,
        tailoff, Ns, N, qs, reml, n, ldW, Tw, ct, sl, S, G, out_val, out_S,
    ):  # fmt: skip
        """Points sorted by group, the first of group g_lo at ``i``; ``out_S[i]``: the lower
        Cholesky factor of the [X y] Schur complement at point i (R_X, c_β and r on its last
        row). Returns the first point after the chunk."""
        q, m = Rs.shape[1], Rs.shape[2]
        p = m - 1
        qt = q - qs
        nmp = n - p if reml else n
        npts = len(p_group)
        for g in range(g_lo, g_hi):
            k, logdet_s = g_resp[g], logdets[g - g_lo]
            if not logdet_s < np.inf:  # the sparse part not positive definite
                while i < npts and p_group[i] == g:
                    out_val[i] = np.inf
                    i += 1
                continue
            T, R = Ts[g - g_lo], Rs[g - g_lo]
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
                    if tail_scalar:  # Tw = Λ_t'MΛ_t (lower triangle), λ_t a scale a node
                        for a in range(qt):
                            sl[a] = lt[lamoff[nterm[Ns + a]]]
                        for a in range(qt):
                            sa = sl[a]
                            for b in range(a + 1):
                                Tw[a, b] = sa * T[a, b] * sl[b]
                    else:
                        _scale_tail(T, Tw, lt, lamoff, nsize, nterm, tailoff, Ns, N)
                    for a in range(qt):
                        Tw[a, a] += 1.0
                    ok = _cholesky_lower(Tw, qt)
                    if ok:
                        for a in range(qt):
                            logdet_t += 2.0 * np.log(Tw[a, a])
                        # R_t = L_tt⁻¹ Λ_t' c
                        if tail_scalar:
                            for a in range(qt):
                                for h in range(m):
                                    ct[a, h] = sl[a] * R[qs + a, h]
                        else:
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

    return group_points


# ----------------------------------------------------------------------------- the data pass
@njit(cache=True, nogil=True)
def ols_sums(Y, off, X, Xty, sy, buf):
    """Xty[j, k] += Σ_r X[r, j] y_rk and sy[k] += Σ_r y_rk, with y = Y − off, row by row: every
    sum runs over the rows in order, whatever the number of responses K (Y: n × K, any strides).
    A row's responses are taken together (the loops over k, innermost, vectorise); ``buf``: K
    scratch."""
    n, K = Y.shape
    p = X.shape[1]
    for r in range(n):
        o = off[r]
        for k in range(K):
            y = Y[r, k] - o
            buf[k] = y
            sy[k] += y
        for j in range(p):
            x = X[r, j]
            for k in range(K):
                Xty[j, k] += x * buf[k]


@njit(cache=True, nogil=True)
def residual_sums(Y, off, Xs, B, w, zidx, zval, zy, xy, rr, yss, buf):
    """With r = y − X_s b (y = Y − off, b = B[:, k]) and prior weights w, row by row (each sum in
    row order, whatever K): Z'Wr (zy, q × K; row r of Z has its non-zeros zval[r] in the columns
    zidx[r]), X_s'Wr (xy, p × K), r'Wr (rr) and y'Wy (yss). A row's responses are taken
    together, as in :func:`ols_sums` (``buf``: 2 × K scratch): the same sums in the same order."""
    n, K = Y.shape
    p = Xs.shape[1]
    s = zidx.shape[1]
    e, we = buf[0], buf[1]
    for r in range(n):
        o = off[r]
        wr = w[r]
        for k in range(K):
            y = Y[r, k] - o
            e[k] = y
            yss[k] += y * y * wr
        for j in range(p):
            x = Xs[r, j]
            for k in range(K):
                e[k] -= x * B[j, k]
        for k in range(K):
            we[k] = wr * e[k]
            rr[k] += e[k] * we[k]
        for j in range(p):
            x = Xs[r, j]
            for k in range(K):
                xy[j, k] += x * we[k]
        for a in range(s):
            row, v = zidx[r, a], zval[r, a]
            for k in range(K):
                zy[row, k] += v * we[k]
