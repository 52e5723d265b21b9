"""Matrix-free products with the random-effects design, for the iterative solver (numba, cached).

The iterative path (:mod:`~midas_glmm.engine.iterative`) never forms Z'WZ: every product with
Λ'Z'WZΛ is one pass over the rows that gathers the random effects of each row's levels and
scatters the weighted result back. The terms are packed:

* ``codes`` (n, T) int32 — each row's level in each term;
* ``Z`` (n, P) — the terms' per-row columns side by side, term t in ``zoff[t]:zoff[t+1]``;
* ``lam`` (T, pmax, pmax) — each term's λ_t (the identity gives Z'WZ instead of Λ'Z'WZΛ);
* ``qoff`` (T+1,) — term t's effects in a q-vector start at ``qoff[t]``, level by level.

Vectors of random effects are (q, m) arrays: m columns (probe vectors, right-hand sides) updated
together, so a pass reads each row once for all of them. Rows are split into chunks, one per
thread; each thread scatters into its own copy of the output, summed at the end.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = [
    "crossprod_pass",
    "gather_rows",
    "level_grams",
    "probe_leverage",
    "scatter_rows",
    "schur_apply",
    "schur_diagonal",
    "x_gather",
]


@njit(cache=True, nogil=True, inline="always")
def _zeta(lam, Z, i, zo, t, p, out):
    """out[:p] = λ_t'zᵢ, term t's columns of row i (at ``zo``) through its λ (lower triangular)."""
    for a in range(p):
        s = 0.0
        for b in range(a, p):
            s += lam[t, b, a] * Z[i, zo + b]
        out[a] = s


@njit(cache=True, nogil=True, inline="always")
def _gather_row(codes, Z, zoff, qoff, lam, coef, i, V, zeta, out):
    """out[c] = Σ_t coef_t (λ_t'zᵢ)·V[row i's level block of t, c] over the terms with coef_t ≠ 0."""
    m = V.shape[1]
    for c in range(m):
        out[c] = 0.0
    for t in range(codes.shape[1]):
        ct = coef[t]
        if ct == 0.0:
            continue
        p = zoff[t + 1] - zoff[t]
        base = qoff[t] + codes[i, t] * p
        _zeta(lam, Z, i, zoff[t], t, p, zeta)
        for a in range(p):
            za = zeta[a] * ct
            if za != 0.0:
                for c in range(m):
                    out[c] += za * V[base + a, c]


@njit(cache=True, nogil=True, inline="always")
def _scatter_row(codes, Z, zoff, qoff, lam, coef, i, wi, row, zeta, acc):
    """acc[row i's level block of t, c] += coef_t wᵢ (λ_t'zᵢ) row[c] over the terms with coef_t ≠ 0."""
    m = row.shape[0]
    for t in range(codes.shape[1]):
        ct = coef[t] * wi
        if ct == 0.0:
            continue
        p = zoff[t + 1] - zoff[t]
        base = qoff[t] + codes[i, t] * p
        _zeta(lam, Z, i, zoff[t], t, p, zeta)
        for a in range(p):
            za = zeta[a] * ct
            if za != 0.0:
                for c in range(m):
                    acc[base + a, c] += za * row[c]


@njit(cache=True, parallel=True, fastmath=True)
def _crossprod(codes, Z, zoff, qoff, w, lam_in, lam_out, coef_in, coef_out, V, nthreads):
    n = codes.shape[0]
    q, m = V.shape
    out = np.zeros((nthreads, q, m))
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc = out[th]
        t_row = np.empty(m)
        zeta = np.empty(8)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            _gather_row(codes, Z, zoff, qoff, lam_in, coef_in, i, V, zeta, t_row)
            _scatter_row(codes, Z, zoff, qoff, lam_out, coef_out, i, w[i], t_row, zeta, acc)
    res = out[0]
    for th in range(1, nthreads):
        res += out[th]
    return res


def crossprod_pass(codes, Z, zoff, qoff, w, lam_in, lam_out, coef_in, coef_out, V) -> np.ndarray:
    """``Σ_t∈out c_t Λ_t'Z_t' W Σ_s∈in c_s Z_s Λ_s V_s`` (Λ of ``lam_out`` and ``lam_in``), one pass.

    Terms with ``coef_in[t] = 0`` are not read from V, terms with ``coef_out[t] = 0`` not written;
    the output has V's shape (its rows of unwritten terms are zero)."""
    V = np.ascontiguousarray(V, dtype=float)
    nthreads = max(1, min(get_num_threads(), codes.shape[0] // 50_000 + 1))
    return _crossprod(codes, Z, zoff, qoff, w, lam_in, lam_out, coef_in, coef_out, V, nthreads)


@njit(cache=True, nogil=True)
def _level_grams(codes_t, Zt, w, nlev, out):
    n, p = Zt.shape
    for i in range(n):
        j = codes_t[i]
        for a in range(p):
            za = w[i] * Zt[i, a]
            for b in range(p):
                out[j, a, b] += za * Zt[i, b]


def level_grams(codes_t: np.ndarray, Zt: np.ndarray, w: np.ndarray, nlev: int) -> np.ndarray:
    """Z_t'WZ_t's diagonal blocks: Σ_rows of level j wᵢ zᵢzᵢ', an (ℓ, p, p) array."""
    out = np.zeros((nlev, Zt.shape[1], Zt.shape[1]))
    _level_grams(codes_t, np.ascontiguousarray(Zt, dtype=float), w, nlev, out)
    return out


@njit(cache=True, nogil=True)
def _scatter_rows(codes, Z, zoff, qoff, w, R, out):
    n, T = codes.shape
    m = R.shape[1]
    for i in range(n):
        wi = w[i]
        for t in range(T):
            p = zoff[t + 1] - zoff[t]
            base = qoff[t] + codes[i, t] * p
            for a in range(p):
                za = wi * Z[i, zoff[t] + a]
                for c in range(m):
                    out[base + a, c] += za * R[i, c]


def scatter_rows(codes, Z, zoff, qoff, w, R) -> np.ndarray:
    """Z'W R for an (n, m) array R (unscaled by Λ): a (q, m) array."""
    out = np.zeros((int(qoff[-1]), R.shape[1]))
    _scatter_rows(codes, Z, zoff, qoff, w, np.ascontiguousarray(R, dtype=float), out)
    return out


@njit(cache=True, nogil=True)
def _schur_diagonal(codes, Z, zoff, qoff, w, lam, Aee_inv, out):
    n, T = codes.shape
    pe = zoff[1] - zoff[0]
    ze = np.empty(8)
    zr = np.empty(8)
    for i in range(n):
        je = codes[i, 0]
        _zeta(lam, Z, i, zoff[0], np.int64(0), pe, ze)
        c = 0.0
        for a in range(pe):
            for b in range(pe):
                c += ze[a] * Aee_inv[je, a, b] * ze[b]
        c *= w[i] * w[i]
        for t in range(1, T):
            p = zoff[t + 1] - zoff[t]
            j = codes[i, t]
            _zeta(lam, Z, i, zoff[t], t, p, zr)
            for a in range(p):
                for b in range(p):
                    out[t, j, a, b] += c * zr[a] * zr[b]


def schur_diagonal(codes, Z, zoff, qoff, w, lam, Aee_inv, pmax, nl) -> np.ndarray:
    """Σᵢ wᵢ² (ζ_t ζ_t')ᵢ (ζ_e'A_ee⁻¹ζ_e)ᵢ per level of every term t ≥ 1 (ζ = λ'zᵢ): the part of
    A_Re A_ee⁻¹ A_eR on S's block diagonal carried by single rows, a (T, nl, pmax, pmax) array
    (nl: the most levels of a term)."""
    T = codes.shape[1]
    out = np.zeros((T, nl, pmax, pmax))
    _schur_diagonal(codes, Z, zoff, qoff, w, lam, Aee_inv, out)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def _schur_apply(starts, codes, Z, zoff, qoff, w, lam, Aee_inv, V, nthreads, maxseg):
    nl = len(starts) - 1
    T = codes.shape[1]
    q, m = V.shape
    pe = zoff[1] - zoff[0]
    rest = np.ones(T)  # the other terms: read from V and written back
    rest[0] = 0.0
    out = np.zeros((nthreads, q, m))
    per = (nl + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc_out = out[th]
        seg = np.empty((maxseg, m))
        acc = np.empty((pe, m))
        zeta = np.empty(8)
        for lev in range(th * per, min(nl, (th + 1) * per)):
            lo, hi = starts[lev], starts[lev + 1]
            acc[:, :] = 0.0
            for i in range(lo, hi):  # Λ_e'Z_e'W Z_RΛ_R V over this level's rows, rows kept
                row = seg[i - lo]
                _gather_row(codes, Z, zoff, qoff, lam, rest, i, V, zeta, row)
                _zeta(lam, Z, i, zoff[0], np.int64(0), pe, zeta)
                for a in range(pe):
                    s = zeta[a] * w[i]
                    for c in range(m):
                        acc[a, c] += s * row[c]
            a_e = Aee_inv[lev] @ acc  # A_ee⁻¹ for this level
            for i in range(lo, hi):  # Λ_R'Z_R'W(Z_RΛ_R V − Z_eΛ_e a_e)
                row = seg[i - lo]
                _zeta(lam, Z, i, zoff[0], np.int64(0), pe, zeta)
                for a in range(pe):
                    for c in range(m):
                        row[c] -= zeta[a] * a_e[a, c]
                _scatter_row(codes, Z, zoff, qoff, lam, rest, i, w[i], row, zeta, acc_out)
    res = out[0]
    for th in range(1, nthreads):
        res += out[th]
    return res


def schur_apply(starts, codes, Z, zoff, qoff, w, lam, Aee_inv, V, maxseg) -> np.ndarray:
    """Λ_R'Z_R'W(Z_RΛ_R V − Z_eΛ_e A_ee⁻¹Λ_e'Z_e'W Z_RΛ_R V) in one pass over rows sorted by the
    eliminated term's level (``starts``: each level's first row): each level's rows are gathered,
    its block solved and the rows scattered while they are in cache. V is (q, m) in the full
    layout (its eliminated-term rows unused); so is the result."""
    V = np.ascontiguousarray(V, dtype=float)
    nthreads = max(1, min(get_num_threads(), codes.shape[0] // 50_000 + 1))
    return _schur_apply(starts, codes, Z, zoff, qoff, w, lam, Aee_inv, V, nthreads, maxseg)


@njit(cache=True, parallel=True)
def _gather_rows(codes, Z, zoff, qoff, lam, V, out):
    n, T = codes.shape
    ones = np.ones(T)
    for i in prange(n):
        zeta = np.empty(8)
        _gather_row(codes, Z, zoff, qoff, lam, ones, i, V, zeta, out[i])


def gather_rows(codes, Z, zoff, qoff, lam, V) -> np.ndarray:
    """ZΛV row by row: an (n, m) array (m small: the modes, a few directions)."""
    V = np.ascontiguousarray(V, dtype=float)
    out = np.empty((codes.shape[0], V.shape[1]))
    _gather_rows(codes, Z, zoff, qoff, lam, V, out)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def _probe_leverage(codes, Z, zoff, qoff, lam, eye, Aee_inv, Ks, Kz, rw, X, nthreads):
    n, T = codes.shape
    q, m = Ks.shape
    k = X.shape[1]
    outq = np.zeros((nthreads, q, m))
    outx = np.zeros((nthreads, k, m))
    pe = zoff[1] - zoff[0]
    ones = np.ones(T)
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        aq = outq[th]
        ax = outx[th]
        gs = np.empty(m)
        gz = np.empty(m)
        ze = np.empty(8)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            _gather_row(codes, Z, zoff, qoff, lam, ones, i, Ks, ze, gs)
            _gather_row(codes, Z, zoff, qoff, lam, ones, i, Kz, ze, gz)
            _zeta(lam, Z, i, zoff[0], np.int64(0), pe, ze)
            he = 0.0  # ζ_e'A_ee⁻¹ζ_e: the eliminated block's exact share of the leverage
            je = codes[i, 0]
            for a in range(pe):
                for b in range(pe):
                    he += ze[a] * Aee_inv[je, a, b] * ze[b]
            wi = rw[i]
            for c in range(m):
                gs[c] = wi * (he + gs[c] * gz[c])  # c_i for probe c
            _scatter_row(codes, Z, zoff, qoff, eye, ones, i, np.float64(1.0), gs, ze, aq)  # Z'c: unscaled
            for l in range(k):
                xl = X[i, l]
                for c in range(m):
                    ax[l, c] += xl * gs[c]
    rq, rx = outq[0], outx[0]
    for th in range(1, nthreads):
        rq += outq[th]
        rx += outx[th]
    return rq, rx


def probe_leverage(codes, Z, zoff, qoff, lam, Aee_inv, Ks, Kz, rw, X):
    """Per probe j, the row weights cᵢ = rwᵢ hᵢ⁽ʲ⁾ with hᵢ⁽ʲ⁾ = ζ_e'A_ee⁻¹ζ_e + (ZΛKs_j)ᵢ(ZΛKz_j)ᵢ
    (a row's leverage diag(ZΛA⁻¹Λ'Z')ᵢ, exact for the eliminated block and by the probe for the
    rest), returned as (Z'c, X'c): (q, m) and (k, m), in one pass without row-sized arrays."""
    nthreads = max(1, min(get_num_threads(), codes.shape[0] // 50_000 + 1))
    eye = np.broadcast_to(np.eye(lam.shape[1]), lam.shape).copy()
    return _probe_leverage(
        codes, Z, zoff, qoff, lam, eye, Aee_inv, np.ascontiguousarray(Ks), np.ascontiguousarray(Kz), rw, X, nthreads
    )


@njit(cache=True, parallel=True, fastmath=True)
def _x_gather(codes, Z, zoff, qoff, lam, V, rw, X, nthreads):
    n, T = codes.shape
    m = V.shape[1]
    k = X.shape[1]
    ones = np.ones(T)
    out = np.zeros((nthreads, k, m))
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc = out[th]
        g = np.empty(m)
        zeta = np.empty(8)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            _gather_row(codes, Z, zoff, qoff, lam, ones, i, V, zeta, g)
            for l in range(k):
                xl = X[i, l] * rw[i]
                for c in range(m):
                    acc[l, c] += xl * g[c]
    res = out[0]
    for th in range(1, nthreads):
        res += out[th]
    return res


def x_gather(codes, Z, zoff, qoff, lam, V, rw, X) -> np.ndarray:
    """X'diag(rw) ZΛV: a (k, m) array, one pass."""
    nthreads = max(1, min(get_num_threads(), codes.shape[0] // 50_000 + 1))
    return _x_gather(codes, Z, zoff, qoff, lam, np.ascontiguousarray(V, dtype=float), rw, X, nthreads)
