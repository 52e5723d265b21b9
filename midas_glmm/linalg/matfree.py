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


@njit(cache=True, parallel=True, fastmath=True)
def _crossprod(codes, Z, zoff, qoff, w, lam_in, lam_out, coef_in, coef_out, V, nthreads):
    n, T = codes.shape
    q, m = V.shape
    out = np.zeros((nthreads, q, m))
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc = out[th]
        t_row = np.empty(m)
        zeta = np.empty(8)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            for c in range(m):
                t_row[c] = 0.0
            for t in range(T):
                if coef_in[t] == 0.0:
                    continue
                p = zoff[t + 1] - zoff[t]
                base = qoff[t] + codes[i, t] * p
                for a in range(p):  # ζ = λ_t' z_i (column a of λ times z)
                    s = 0.0
                    for b in range(a, p):
                        s += lam_in[t, b, a] * Z[i, zoff[t] + b]
                    zeta[a] = s * coef_in[t]
                for a in range(p):
                    za = zeta[a]
                    if za != 0.0:
                        for c in range(m):
                            t_row[c] += za * V[base + a, c]
            wi = w[i]
            for t in range(T):
                if coef_out[t] == 0.0:
                    continue
                p = zoff[t + 1] - zoff[t]
                base = qoff[t] + codes[i, t] * p
                for a in range(p):
                    s = 0.0
                    for b in range(a, p):
                        s += lam_out[t, b, a] * Z[i, zoff[t] + b]
                    za = s * coef_out[t] * wi
                    if za != 0.0:
                        for c in range(m):
                            acc[base + a, c] += za * t_row[c]
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _schur_diagonal(codes, Z, zoff, qoff, w, lam, Aee_inv, out):
    n, T = codes.shape
    pe = zoff[1] - zoff[0]
    ze = np.empty(8)
    zr = np.empty(8)
    for i in range(n):
        je = codes[i, 0]
        for a in range(pe):
            s = 0.0
            for b in range(a, pe):
                s += lam[0, b, a] * Z[i, zoff[0] + b]
            ze[a] = s
        c = 0.0
        for a in range(pe):
            for b in range(pe):
                c += ze[a] * Aee_inv[je, a, b] * ze[b]
        c *= w[i] * w[i]
        for t in range(1, T):
            p = zoff[t + 1] - zoff[t]
            j = codes[i, t]
            for a in range(p):
                s = 0.0
                for b in range(a, p):
                    s += lam[t, b, a] * Z[i, zoff[t] + b]
                zr[a] = s
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
    out = np.zeros((nthreads, q, m))
    per = (nl + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc_out = out[th]
        seg = np.empty((maxseg, m))
        acc = np.empty((pe, m))
        a_e = np.empty((pe, m))
        zeta = np.empty(8)
        for lev in range(th * per, min(nl, (th + 1) * per)):
            lo, hi = starts[lev], starts[lev + 1]
            for a in range(pe):
                for c in range(m):
                    acc[a, c] = 0.0
            for i in range(lo, hi):
                row = seg[i - lo]
                for c in range(m):
                    row[c] = 0.0
                for t in range(1, T):
                    p = zoff[t + 1] - zoff[t]
                    base = qoff[t] + codes[i, t] * p
                    for a in range(p):
                        s = 0.0
                        for b in range(a, p):
                            s += lam[t, b, a] * Z[i, zoff[t] + b]
                        for c in range(m):
                            row[c] += s * V[base + a, c]
                for a in range(pe):
                    s = 0.0
                    for b in range(a, pe):
                        s += lam[0, b, a] * Z[i, zoff[0] + b]
                    zeta[a] = s
                    s *= w[i]
                    for c in range(m):
                        acc[a, c] += s * row[c]
            for a in range(pe):  # a_e = A_ee⁻¹ acc for this level
                for c in range(m):
                    s = 0.0
                    for b in range(pe):
                        s += Aee_inv[lev, a, b] * acc[b, c]
                    a_e[a, c] = s
            for i in range(lo, hi):
                row = seg[i - lo]
                for a in range(pe):
                    s = 0.0
                    for b in range(a, pe):
                        s += lam[0, b, a] * Z[i, zoff[0] + b]
                    for c in range(m):
                        row[c] -= s * a_e[a, c]
                wi = w[i]
                for t in range(1, T):
                    p = zoff[t + 1] - zoff[t]
                    base = qoff[t] + codes[i, t] * p
                    for a in range(p):
                        s = 0.0
                        for b in range(a, p):
                            s += lam[t, b, a] * Z[i, zoff[t] + b]
                        s *= wi
                        for c in range(m):
                            acc_out[base + a, c] += s * row[c]
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
    m = V.shape[1]
    for i in prange(n):
        for c in range(m):
            out[i, c] = 0.0
        for t in range(T):
            p = zoff[t + 1] - zoff[t]
            base = qoff[t] + codes[i, t] * p
            for a in range(p):
                s = 0.0
                for b in range(a, p):
                    s += lam[t, b, a] * Z[i, zoff[t] + b]
                for c in range(m):
                    out[i, c] += s * V[base + a, c]


def gather_rows(codes, Z, zoff, qoff, lam, V) -> np.ndarray:
    """ZΛV row by row: an (n, m) array (m small: the modes, a few directions)."""
    V = np.ascontiguousarray(V, dtype=float)
    out = np.empty((codes.shape[0], V.shape[1]))
    _gather_rows(codes, Z, zoff, qoff, lam, V, out)
    return out


@njit(cache=True, parallel=True, fastmath=True)
def _probe_leverage(codes, Z, zoff, qoff, lam, Aee_inv, Ks, Kz, rw, X, nthreads):
    n, T = codes.shape
    q, m = Ks.shape
    k = X.shape[1]
    outq = np.zeros((nthreads, q, m))
    outx = np.zeros((nthreads, k, m))
    pe = zoff[1] - zoff[0]
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        aq = outq[th]
        ax = outx[th]
        gs = np.empty(m)
        gz = np.empty(m)
        ze = np.empty(8)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            for c in range(m):
                gs[c] = 0.0
                gz[c] = 0.0
            for t in range(T):
                p = zoff[t + 1] - zoff[t]
                base = qoff[t] + codes[i, t] * p
                for a in range(p):
                    s = 0.0
                    for b in range(a, p):
                        s += lam[t, b, a] * Z[i, zoff[t] + b]
                    if t == 0:
                        ze[a] = s
                    for c in range(m):
                        gs[c] += s * Ks[base + a, c]
                        gz[c] += s * Kz[base + a, c]
            he = 0.0  # ζ_e'A_ee⁻¹ζ_e: the eliminated block's exact share of the leverage
            je = codes[i, 0]
            for a in range(pe):
                for b in range(pe):
                    he += ze[a] * Aee_inv[je, a, b] * ze[b]
            wi = rw[i]
            for c in range(m):
                gs[c] = wi * (he + gs[c] * gz[c])  # c_i for probe c
            for t in range(T):
                p = zoff[t + 1] - zoff[t]
                base = qoff[t] + codes[i, t] * p
                for a in range(p):
                    za = Z[i, zoff[t] + a]
                    for c in range(m):
                        aq[base + a, c] += za * gs[c]
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
    return _probe_leverage(
        codes, Z, zoff, qoff, lam, Aee_inv, np.ascontiguousarray(Ks), np.ascontiguousarray(Kz), rw, X, nthreads
    )


@njit(cache=True, parallel=True, fastmath=True)
def _x_gather(codes, Z, zoff, qoff, lam, V, rw, X, nthreads):
    n, T = codes.shape
    m = V.shape[1]
    k = X.shape[1]
    out = np.zeros((nthreads, k, m))
    chunk = (n + nthreads - 1) // nthreads
    for th in prange(nthreads):
        acc = out[th]
        g = np.empty(m)
        for i in range(th * chunk, min(n, (th + 1) * chunk)):
            for c in range(m):
                g[c] = 0.0
            for t in range(T):
                p = zoff[t + 1] - zoff[t]
                base = qoff[t] + codes[i, t] * p
                for a in range(p):
                    s = 0.0
                    for b in range(a, p):
                        s += lam[t, b, a] * Z[i, zoff[t] + b]
                    for c in range(m):
                        g[c] += s * V[base + a, c]
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
