"""The per-θ numeric factorisation, in the layout of a :class:`~midas_glmm.engine.sparsity.FactorPlan`.

For one θ, :class:`Factor` computes the Cholesky factor

    [Λ'Z'WZΛ + I   Λ'Z'W[X y]]     [L_Z   0   ]   [L_Z   0   ]'
    [[X y]'WZΛ     [X y]'W[X y]] = [L_X'  L_XX] · [L_X'  L_XX]

from the cross-product blocks alone: the block-sparse part by compiled kernels (each node's
``p × p`` block, so a random intercept is a scalar per level), the dense tail by LAPACK. The
last row of L_XX holds the solution of the penalised least-squares problem and the square root
of the penalised residual sum of squares, so one factorisation gives every profiled quantity.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.linalg import blas, lapack

from ..linalg import lazy
from ..linalg.gram import from_lower
from ..linalg.stages import dense_block
from .sparsity import FactorPlan, PlanBlocks

__all__ = ["Factor", "DenseSystem", "LevelSystem", "StagedSystem", "dense_cholesky", "pair_cholesky"]

kernels = lazy.load("kernels")  # compiled: loaded on first use


#: the all-dense plan applies Λ as a dense q × q array (two BLAS products) up to this many random
#: effects, and level by level (O(q²p)) above: sleepstudy's factor 58 µs against 70 by the levels,
#: 100 random effects 2.1x faster by the levels
DENSE_LAM_Q = 40


def dense_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric matrix whose lower triangle is given (LAPACK dpotrf)."""
    if A.shape[0] == 0:
        return A.copy()
    # A C-ordered A is an F-ordered A' whose upper triangle is A's lower one: LAPACK factors it
    # in place as U'U with L = U'.
    A = np.ascontiguousarray(A)
    U, info = lapack.dpotrf(A.T, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    return U.T


def _panel_updates(L: np.ndarray, panels, T: np.ndarray) -> np.ndarray:
    """T −= B'B for the panels B of the sparse columns' tail rows (FactorPlan._panel_plan):
    BLAS dsyrk on the lower triangle of T (the triangle the tail's Cholesky reads). Returns T and
    B when there is a single panel (None otherwise)."""
    qt = T.shape[0]
    B = np.empty(max(n for n, _, _ in panels) * qt)
    for n, dest, src in panels:
        Bp = B[: n * qt]
        Bp[:] = 0.0
        Bp[dest] = L[src]
        # C-ordered T is F-ordered T': its upper triangle is T's lower one; Bp as (qt × n) F-order
        Tt = blas.dsyrk(-1.0, Bp.reshape(n, qt).T, beta=1.0, c=T.T, trans=0, lower=0, overwrite_c=1)
        T = Tt.T
    # one panel: kept for the forward solves (R_tail −= B'R_sparse); several: too large to keep
    return T, (B.reshape(panels[0][0], qt) if len(panels) == 1 else None)


def tail_solve(Ltail: np.ndarray, b: np.ndarray, transpose: bool = False) -> np.ndarray:
    """x with L_tail x = b (or L_tail' x = b): LAPACK dtrtrs on the F-ordered U = L_tail'."""
    x, info = lapack.dtrtrs(Ltail.T, b, lower=0, trans=0 if transpose else 1)
    if info != 0:
        raise np.linalg.LinAlgError("singular tail factor")
    return x


def lam_flat(lams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The λ_t of ``lams`` flattened into one array, and each one's offset in it."""
    sizes = [lam.size for lam in lams]
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.concatenate([np.ascontiguousarray(lam, float).ravel() for lam in lams]), off


#: the last list of λ flattened (a PIRLS run factors many systems at one θ, one list of λ)
_LAST_FLAT: tuple = (None, None)


def _flat_of(lams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lam_flat`, reused while the same list object comes back (the entry holds the list,
    so its identity cannot be taken by another)."""
    global _LAST_FLAT
    last = _LAST_FLAT
    if last[0] is lams:
        return last[1]
    flat = lam_flat(lams)
    _LAST_FLAT = (lams, flat)
    return flat


#: from this many θ the all-dense plan's criterion takes its gradient and Hessian in closed form
#: (:meth:`DenseSystem.logdet_derivatives`, :func:`~.lmm.criterion_derivatives`): central
#: differences cost 2k + k(k − 1) evaluations (12 for three θ, 42 for six), the closed form a few
#: of one evaluation's products; below three θ the differences' two or six evaluations cost as much
CLOSED_FORM_MIN_THETA = 3


@functools.cache
def _upper_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(k)``, formed once per k (read only)."""
    rows, cols = np.triu_indices(k)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


class DenseSystem:
    """The all-dense plan's profiled quantities at θ in a handful of array operations, for a
    criterion evaluated many times (the optimizer's): with D = blockdiag(Λ(θ), I_m) and
    A = [Z X y]'W[Z X y], K = D'AD + diag(1_q, 0_m) = LL', and L's diagonal holds
    log|L_Z|² (first q), log|R_X|² (next m − 1) and r = √r² (last). Λ = ⊕_t (I_ℓt ⊗ λ_t), so
    D'AD is each term's λ_t applied to its columns and rows, level by level; Λ must be linear
    in θ (its entries J θ for a constant J read off the terms once).

    Parameters
    ----------
    plan : FactorPlan
        An all-dense plan (``Ns == 0``: the random effects term by term, level by level).
    blocks : PlanBlocks
    jacobian : list of ndarray
        ∂λ_t/∂θ per term, (len θ, p_t, p_t) (:attr:`~midas_glmm.design.reterms.ThetaMap.jacobian`).

    With D = D₀ + Σ_k θ_k D_k (D₀ = blockdiag(0, I_m), D_k the λ's derivatives), K is a quadratic
    polynomial in θ: K = C + Σ_k θ_k L_k + Σ_{k≤l} θ_k θ_l Q_kl. Its coefficients are formed once
    (while they take at most :attr:`POLY_MAX` numbers), and K at θ is then one matrix-vector
    product with [1, θ, θ_k θ_l], not a scaling of A's columns and rows term by term.
    """

    #: most numbers in the coefficients of K's polynomial in θ ((q + m)² per coefficient) ...
    POLY_MAX = 250_000
    #: ... and with :data:`CLOSED_FORM_MIN_THETA` θ or more (8 MB), whose convergence check then takes
    #: its derivatives from the polynomial in closed form (:meth:`logdet_derivatives`): the maximal
    #: models of six θ up to 189 random effects + m (30 subjects × 20 items: a fit 0.83x, 40 × 30
    #: 0.81x). With fewer θ the polynomial's evaluations past 250,000 numbers gain nothing on the
    #: scaling (crossed intercepts of 150 × 100 levels: 1.00x), and past ~1e6 its product reads more
    #: memory than the scaling costs
    POLY_MAX_CLOSED_FORM = 1_000_000

    def __init__(self, plan: FactorPlan, blocks: PlanBlocks, jacobian: list[np.ndarray]):
        q, m = plan.q, blocks.XX.shape[0]
        self.q, self.blocks = q, blocks
        A = np.zeros((q + m, q + m))
        r, c = plan.tail_entries()
        A[c, r] = blocks.A  # the lower blocks mirrored (each diagonal block is stored whole)
        A[r, c] = blocks.A
        A[:q, q:] = blocks.XZ
        A[q:, :q] = blocks.XZ.T
        A[q:, q:] = from_lower(blocks.XX)  # [X y]'W[X y] from its lower triangle
        self.A = A
        self.J = np.ascontiguousarray(np.concatenate([Jt.reshape(len(Jt), -1) for Jt in jacobian], axis=1).T)
        # (first random effect, levels, p, offset of λ_t in J's rows) per term
        self.terms = []
        at = 0
        for t, term in enumerate(plan.terms):
            p = int(plan.p_term[t])
            self.terms.append((int(plan.term_off[t]), term.nlevels, p, at))
            at += p * p
        self.diag_q = np.arange(q) * (q + m + 1)
        nt = self.J.shape[1]
        self.pairs = _upper_pairs(nt)
        n = q + m
        limit = self.POLY_MAX_CLOSED_FORM if nt >= CLOSED_FORM_MIN_THETA else self.POLY_MAX
        self.poly = self._polynomial() if n * n * (1 + nt + len(self.pairs[0])) <= limit else None

    def _polynomial(self) -> np.ndarray:
        """K's coefficients as the rows of a (1 + k + k(k + 1)/2, (q + m)²) array, in the order
        of [1, θ, θ_k θ_l (k ≤ l)] (row-major: w @ coefficients is numpy's fastest product here).

        D_k = ∂D/∂θ_k is its term's ∂λ_t/∂θ_k repeated over the term's levels, zero elsewhere, so
        AD_k is A's columns of that term with J_k applied level by level, and D_k'(AD_l) the
        rows of that term of AD_l with J_k' applied: no product of whole n × n arrays."""
        A, q = self.A, self.q
        n, nt = A.shape[0], self.J.shape[1]
        out = np.zeros((1 + nt + len(self.pairs[0]), n, n))
        out[0, q:, q:] = A[q:, q:]
        out[0].flat[self.diag_q] += 1.0
        owner = []  # (slice, levels, p, J_k) of θ_k's term
        for k in range(nt):
            for start, levels, p, at in self.terms:
                Jk = self.J[at : at + p * p, k].reshape(p, p)
                if Jk.any():
                    owner.append((slice(start, start + levels * p), levels, p, Jk))
                    break
            else:  # a θ that moves nothing (not made by ThetaMap): a zero coefficient
                owner.append((slice(0, 0), 0, 1, np.zeros((1, 1))))
        AD = [(A[:, sl].reshape(n, levels, p) @ Jk).reshape(n, levels * p) for sl, levels, p, Jk in owner]
        for k, (sl, _, _, _) in enumerate(owner):  # D_k'A D₀ + D₀'A D_k: D₀ keeps the last m columns
            out[1 + k, q:, sl] = AD[k][q:]
            out[1 + k, sl, q:] = AD[k][q:].T
        for r, (k, l) in enumerate(zip(*self.pairs)):
            slk, levels, p, Jk = owner[k]
            sll = owner[l][0]
            block = (Jk.T @ AD[l][slk].reshape(levels, p, -1)).reshape(levels * p, -1)  # (D_k'AD_l)[sl_k, sl_l]
            Q = out[1 + nt + r]
            Q[slk, sll] += block
            if k != l:
                Q[sll, slk] += block.T
        return out.reshape(len(out), n * n)

    def system(self, theta: np.ndarray) -> np.ndarray:
        """K = D'AD + diag(1_q, 0) at θ."""
        n = self.A.shape[0]
        if self.poly is not None:
            k = len(theta)
            w = np.empty(len(self.poly))  # [1, θ, θ_k θ_l]
            w[0] = 1.0
            w[1 : k + 1] = theta
            np.multiply(theta[self.pairs[0]], theta[self.pairs[1]], out=w[k + 1 :])
            return (w @ self.poly).reshape(n, n)
        vals = self.J @ theta
        K = self.A.copy()
        for start, levels, p, at in self.terms:
            sl = slice(start, start + levels * p)
            if p == 1:
                K[:, sl] *= vals[at]
                K[sl, :] *= vals[at]
            else:
                lam = vals[at : at + p * p].reshape(p, p)
                K[:, sl] = (K[:, sl].reshape(n, levels, p) @ lam).reshape(n, levels * p)
                K[sl, :] = (lam.T @ K[sl, :].reshape(levels, p, n)).reshape(levels * p, n)
        K.flat[self.diag_q] += 1.0
        return K

    def logdet_derivatives(self, theta: np.ndarray, sizes) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """(gradient, Hessian) in θ of log det K_s for each s in ``sizes``, K_s the leading s × s
        block of K(θ): ∂_k = tr(K_s⁻¹ ∂_k K_s) and ∂_kl = tr(K_s⁻¹ ∂_kl K_s) − tr(K_s⁻¹ ∂_k K_s
        K_s⁻¹ ∂_l K_s). ∂K and ∂²K are read off K's polynomial in θ (linear and constant in θ),
        and every K_s⁻¹ comes from one Cholesky factor of K (a leading block's factor is the
        factor's leading block). None without the polynomial, or where K is not positive definite."""
        if self.poly is None:
            return None
        theta = np.asarray(theta, dtype=float)
        k, n = len(theta), self.A.shape[0]
        U, info = lapack.dpotrf(self.system(theta).T, lower=0, clean=1, overwrite_a=1)  # K = U'U
        if info != 0:
            return None
        rows, cols = self.pairs
        weights = np.zeros((k, len(self.poly)))  # ∂K_k = Σ_c weights[k, c] · coefficient c
        weights[np.arange(k), 1 + np.arange(k)] = 1.0
        pair = 1 + k + np.arange(len(rows))
        same = rows == cols
        weights[rows[same], pair[same]] = 2.0 * theta[rows[same]]
        weights[rows[~same], pair[~same]] = theta[cols[~same]]
        weights[cols[~same], pair[~same]] = theta[rows[~same]]
        dK = (weights @ self.poly).reshape(k, n, n)
        Q = self.poly[1 + k :].reshape(len(rows), n, n)  # ∂²K_kl: Q_kl, twice it where k = l
        out = []
        for s in sizes:
            inv, info = lapack.dpotri(U[:s, :s], lower=0)
            if info != 0:
                return None
            Minv = from_lower(inv.T)  # dpotri leaves the upper triangle
            dKs = dK[:, :s, :s]
            g = np.einsum("ij,kij->k", Minv, dKs)
            A = Minv @ dKs  # K_s⁻¹ ∂_k K_s
            H = -np.einsum("kij,lji->kl", A, A)
            second = np.einsum("ij,rij->r", Minv, Q[:, :s, :s]) * np.where(same, 2.0, 1.0)
            H[rows, cols] += second
            H[cols[~same], rows[~same]] += second[~same]
            out.append((g, 0.5 * (H + H.T)))  # the traces' sums in another order: symmetric to the bit
        return out

    def logdets(self, theta: np.ndarray) -> tuple[float, float, float] | None:
        """(log|L_Z|², log|R_X|², r²) at θ; None where K is not positive definite (the caller
        takes the general path, which tells a failed random-effects block from a failed
        [X y] block)."""
        K = self.system(theta)
        U, info = lapack.dpotrf(K.T, lower=0, clean=0, overwrite_a=1)  # K' = K: C order read as F
        if info != 0:
            return None
        d = U.diagonal()
        sums = np.log(d[:-1]).cumsum()  # one pass: log|L_Z| at q, + log|R_X| at the end
        ld_Z = float(sums[self.q - 1]) if self.q else 0.0
        return 2.0 * ld_Z, 2.0 * (float(sums[-1]) - ld_Z), float(d[-1]) ** 2


def lower_inverse(R: np.ndarray) -> np.ndarray:
    """R⁻¹ of a lower-triangular R by LAPACK's trtrs against I, the call scipy's
    ``solve_triangular(R, I, lower=True)`` makes (the same numbers) without its checks, which cost
    more than the solve on a few fixed effects (every fit's covariance of β̂)."""
    k = R.shape[0]
    if k == 0:
        return np.zeros((0, 0))
    if R.flags.f_contiguous:
        Rinv, info = lapack.dtrtrs(R, np.eye(k), lower=1)
    else:  # trtrs reads Fortran order: R' is upper triangular, solved transposed
        Rinv, info = lapack.dtrtrs(R.T, np.eye(k), lower=0, trans=1)
    if info > 0:
        raise np.linalg.LinAlgError(f"the factor of the fixed effects is singular at its diagonal {info - 1}")
    return Rinv


def pair_cholesky(P: np.ndarray, lam: np.ndarray):
    """The Cholesky factors of M_l = λ'A_lλ + I for 2 × 2 blocks A_l = [a b; b c], ``P`` the
    rows (a, b, c) over the levels (3 × levels), λ lower triangular, in closed form:
    (L00, L10, L11², bad) with L00 = √m00, L10 = m10 / L00 and L11² = m11 − L10² (the second
    pivot); ``bad`` is 0, or 1 + the first level whose block is not positive definite (NaN
    included: the factors are then not to be used). [m00 − 1, m10, m11 − 1] = Q(λ) P, one
    product for all levels."""
    l00, l10, l11 = lam[0, 0], lam[1, 0], lam[1, 1]
    Q = np.array([[l00 * l00, 2.0 * l00 * l10, l10 * l10], [0.0, l11 * l00, l11 * l10], [0.0, 0.0, l11 * l11]])
    M = Q @ P
    m00, L10, d11 = M  # rows of M, updated in place below
    m00 += 1.0
    if not m00.min() > 0.0:
        return m00, m00, m00, 1 + int(np.argmin(m00 > 0.0))
    L00 = np.sqrt(m00)
    L10 /= L00
    d11 += 1.0
    d11 -= L10 * L10
    bad = 0 if d11.min() > 0.0 else 1 + int(np.argmin(d11 > 0.0))
    return L00, L10, d11, bad


def _schur_logdet(S: np.ndarray) -> tuple[float, float] | None:
    """(log|R_X|², r²) of the [X y] Schur complement S (symmetric, m × m): R'R = S by LAPACK,
    log|R_X|² over its first m − 1 pivots, r² the last one squared; None if S is not positive
    definite."""
    U, info = lapack.dpotrf(S, lower=0, clean=0, overwrite_a=1)  # symmetric: either triangle
    if info != 0:
        return None
    d = U.diagonal()
    return (2.0 * float(np.log(d[:-1]).sum()) if len(d) > 1 else 0.0), float(d[-1]) ** 2


class LevelSystem:
    """The LMM criterion's log-determinants of a one-term model with one or two columns per
    level (``(1 | g)``, ``(x | g)``), vectorised over the levels, for the optimizer's evaluations.

    With M_l = λ'A_lλ + I (A_l the level's block of Z'WZ, c_l its rows of Z'W[X y]),
    log|L_Z|² = Σ_l log det M_l and the [X y] Schur complement is
    [X y]'W[X y] − Σ_l c_l'λ M_l⁻¹ λ'c_l = XX − W'W with W's level rows L_l⁻¹λ'c_l, L_l the
    2 × 2 (or 1 × 1) Cholesky factor of M_l in closed form. Each θ then costs a few operations
    on vectors of the levels' length and one m × m Cholesky (m = p + 1): no factor object, no
    compiled kernel, and none of the level-by-level loops over blocks of one or two entries.

    Parameters
    ----------
    plan : FactorPlan
        A one-term plan (``diagonal`` or ``blockdiag``) with at most two columns per level.
    blocks : PlanBlocks
    """

    def __init__(self, plan: FactorPlan, blocks: PlanBlocks):
        p, m = int(plan.p_term[0]), blocks.XX.shape[0]
        levels = plan.terms[0].nlevels
        self.blocks, self.p = blocks, p
        A = blocks.A[: plan.nsparse].reshape(levels, p * p)
        self.P = np.ascontiguousarray(A[:, [0, 2, 3]].T if p == 2 else A[:, 0])  # (a, b, c) rows
        # Z'W[X y] by column of the term, p × m × levels (long rows: numpy's fast case)
        self.C = np.ascontiguousarray(blocks.XZ.reshape(levels, p, m).transpose(1, 2, 0))
        self.XX = from_lower(blocks.XX)

    def logdets(self, lam: np.ndarray) -> tuple[float, float, float] | None:
        """(log|L_Z|², log|R_X|², r²) at λ (p × p, lower triangular); None where a block is not
        positive definite (the caller takes the factor's path, which reports it)."""
        if self.p == 1:
            s = lam[0, 0] ** 2
            M = s * self.P + 1.0
            if not M.min() > 0.0:
                return None
            logdet_Z = float(np.log(M).sum())
            W = self.C[0] * np.sqrt(s / M)  # λ c_l / L_l
            S = self.XX - W @ W.T
        else:
            L00, L10, d11, bad = pair_cholesky(self.P, lam)
            if bad:
                return None
            logdet_Z = float(np.log(L00 * L00 * d11).sum())  # Σ log det M_l
            p, m, levels = self.C.shape
            W = (lam.T @ self.C.reshape(p, -1)).reshape(p, m, levels)  # λ'c_l, then L_l⁻¹ on it:
            W0, W1 = W
            W0 /= L00
            W1 -= L10 * W0
            W1 /= np.sqrt(d11)
            S = self.XX - W0 @ W0.T - W1 @ W1.T
        found = _schur_logdet(S)
        return None if found is None else (logdet_Z, *found)


class StagedSystem:
    """The LMM criterion's log-determinants of crossed random intercepts whose staged plan is one
    dense stage and its tail (``(1 | subject) + (1 | item)`` with every subject meeting many items:
    :mod:`~midas_glmm.linalg.stages`), for the optimizer's evaluations.

    With the stage's data blocks D (diagonal, n levels), B (n × q_t, dense) and the tail's T₀, and
    Λ = diag(λ_s, Λ_t): L_s = √(λ_s² D + 1), B_s = λ_s B Λ_t / L_s (rows), the tail's Schur
    complement Λ_t T₀ Λ_t + I − B_s'B_s = L_t L_t', W_s = λ_s C_s / L_s and
    W_t = L_t⁻¹(Λ_t C_t − B_s'W_s) for C = Z'W[X y], and the [X y] Schur complement
    [X y]'W[X y] − W_s'W_s − W_t'W_t; log|L_Z|² = Σ log L_s² + 2 Σ log diag L_t. Each θ is a few
    products on the n × q_t block and two small Choleskys: no factor object, none of the stage's
    scatters and gathers (VerbAgg's 316 × 24: ~0.15 ms a factor before).

    Parameters
    ----------
    plan : FactorPlan
        A staged plan (:attr:`FactorPlan.stages`) of one stage, laid out dense.
    blocks : PlanBlocks
    """

    def __init__(self, plan: FactorPlan, blocks: PlanBlocks):
        st = plan.stages.stages[0]
        n = st.n
        A = blocks.A
        self.blocks = blocks
        self.D = A[st.diag]
        self.B = dense_block(st, A[st.off])
        T0 = plan.tail_data(A)
        self.T0 = from_lower(T0)
        self.C_s, self.C_t = blocks.XZ[:n], blocks.XZ[n:]
        self.XX = from_lower(blocks.XX)
        self.tail_term = plan.nterm[plan.Ns :]  # the term of each tail random effect
        self.grouped = self._grouped_sums()

    def _grouped_sums(self):
        """(the distinct d_u, their counts, Σ_{j∈u} b_j b_j', Σ_{j∈u} b_j c_j', Σ_{j∈u} c_j c_j' by
        u, flattened) over the stage's levels grouped by their D, or None when there are more than
        half as many distinct D as levels (weighted rows) or the sums would pass 32 MB. A level
        enters each θ's products only through w_j = λ_s²/(λ_s²D_j + 1), the same across a group:
        B_s'B_s = Λ_t (Σ_u w_u Σ_{j∈u} b_j b_j') Λ_t, and so B_s'W_s and W_s'W_s."""
        n, qt = self.B.shape
        m = self.C_s.shape[1]
        d, inv = np.unique(self.D, return_inverse=True)
        U = len(d)
        if U > n // 2 or U * (qt + m) * (qt + m) > 1 << 22:
            return None
        inv = inv.ravel()
        BB, BC, CC = np.empty((U, qt, qt)), np.empty((U, qt, m)), np.empty((U, m, m))
        for u in range(U):
            rows = slice(None) if U == 1 else inv == u
            Bu, Cu = self.B[rows], self.C_s[rows]
            BB[u], BC[u], CC[u] = Bu.T @ Bu, Bu.T @ Cu, Cu.T @ Cu
        counts = np.bincount(inv, minlength=U).astype(float)
        return d, counts, BB.reshape(U, -1), BC.reshape(U, -1), CC.reshape(U, -1)

    def logdets(self, lams: list[np.ndarray]) -> tuple[float, float, float] | None:
        """(log|L_Z|², log|R_X|², r²) at the terms' λ (1 × 1 each); None where a block is not
        positive definite (the caller takes the factor's path, which reports it)."""
        lam_s = float(lams[0][0, 0])
        lam_t = np.array([lam[0, 0] for lam in lams])[self.tail_term]
        parts = self._grouped_parts(lam_s, lam_t) if self.grouped is not None else self._level_parts(lam_s, lam_t)
        return None if parts is None else self._tail_logdets(*parts)

    def _level_parts(self, lam_s: float, lam_t: np.ndarray):
        """(Σ log L_s², the tail's Schur complement, Λ_t C_t − B_s'W_s, W_s'W_s) level by level,
        or None where a level's block is not positive definite."""
        Ls2 = lam_s * lam_s * self.D + 1.0
        if not Ls2.min() > 0.0:
            return None
        scale = lam_s / np.sqrt(Ls2)
        Bs = self.B * scale[:, None]
        Bs *= lam_t
        T = self.T0 * np.outer(lam_t, lam_t)
        T.ravel()[:: len(lam_t) + 1] += 1.0
        T -= Bs.T @ Bs
        Ws = self.C_s * scale[:, None]
        return float(np.log(Ls2).sum()), T, self.C_t * lam_t[:, None] - Bs.T @ Ws, Ws.T @ Ws

    def _grouped_parts(self, lam_s: float, lam_t: np.ndarray):
        """:meth:`_level_parts` from the grouped sums (:meth:`_grouped_sums`): with w_u =
        λ_s²/(λ_s²d_u + 1), the tail's Schur complement Λ_t(T₀ − Σ_u w_u B_u'B_u)Λ_t + I,
        Λ_t(C_t − Σ_u w_u B_u'C_u) and W_s'W_s = Σ_u w_u C_u'C_u: the work of a θ no longer grows
        with the levels (VerbAgg's 316 subjects, one group: ~0.13 → ~0.04 ms)."""
        d, counts, BB, BC, CC = self.grouped
        qt, m = len(lam_t), self.C_s.shape[1]
        s2 = lam_s * lam_s
        Ls2 = s2 * d + 1.0
        if not Ls2.min() > 0.0:
            return None
        w = s2 / Ls2
        T = (self.T0 - (w @ BB).reshape(qt, qt)) * np.outer(lam_t, lam_t)
        T.ravel()[:: qt + 1] += 1.0
        rhs = (self.C_t - (w @ BC).reshape(qt, m)) * lam_t[:, None]
        return float(counts @ np.log(Ls2)), T, rhs, (w @ CC).reshape(m, m)

    def _tail_logdets(self, logdet_s: float, T: np.ndarray, rhs: np.ndarray, WsWs: np.ndarray):
        """From the stage's parts: L_t L_t' = T, W_t = L_t⁻¹ rhs and the [X y] Schur complement
        XX − W_s'W_s − W_t'W_t; (log|L_Z|², log|R_X|², r²), or None where one is not positive definite."""
        Lt, info = lapack.dpotrf(T, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return None
        Wt, info = lapack.dtrtrs(Lt, rhs, lower=1)
        if info != 0:
            return None
        found = _schur_logdet(self.XX - WsWs - Wt.T @ Wt)
        if found is None:
            return None
        return logdet_s + 2.0 * float(np.log(Lt.diagonal()).sum()), *found


class Factor:
    """Cholesky factor of ``[Λ'AΛ + I, ...; ..., [X y]'W[X y]]`` at one θ.

    Parameters
    ----------
    plan : FactorPlan
    blocks : PlanBlocks
        Z'WZ, Z'W[X y] and [X y]'W[X y] in the plan's layout.
    lams : list of ndarray
        ``λ_t`` (``p_t × p_t``, lower triangular) for each term.

    Raises
    ------
    numpy.linalg.LinAlgError
        If the system is not positive definite (a degenerate working system).
    """

    def __init__(self, plan: FactorPlan, blocks: PlanBlocks, lams: list[np.ndarray], system: np.ndarray | None = None):
        self.plan, self.lams, self.blocks = plan, lams, blocks
        P = plan
        if P.Ns == 0:  # one dense block (a small model): LAPACK, no compiled kernels
            if system is None:
                system = self._dense_system(blocks)
            self._dense_factor(system, blocks)
            return
        if P.diagonal or P.blockdiag:  # one term: a block per level, no tail
            self.L = self._one_term_factor(blocks.A[: P.nsparse], lams[0])
            self._panel = None
            self.Ltail = np.zeros((0, 0))
            self._strip(blocks)
            return
        if P.stages is not None:  # random intercepts eliminated term by term in numpy
            self.L, T, bad, self._stage_vals = P.stages.factor(blocks.A, np.array([lam[0, 0] for lam in lams]))
            if bad:
                raise np.linalg.LinAlgError(f"the block of random effect node {bad - 1} is not positive definite")
            self._panel = None
            self.Ltail = dense_cholesky(T) if P.qt else T
            self._strip(blocks)
            return
        lam, lamoff = _flat_of(lams)
        self.L = np.empty(P.nsparse)
        kernels.scale_blocks(blocks.A, self.L, P.colptr, P.rowidx, P.blkoff, P.nsize, P.nterm, lam, lamoff, P.Ns)
        T = np.zeros((P.qt, P.qt))
        if P.qt:
            kernels.scatter_tail(
                blocks.A[P.nsparse :], P.brow, P.bcol, P.boff, P.nsize, P.nterm, lam, lamoff, P.tailoff, T
            )
            T.ravel()[:: P.qt + 1] += 1.0
        panels = P.panels
        bad = kernels.factor_sparse(
            self.L, P.colptr, P.rowidx, P.blkoff, P.nsize, P.Ns, P.tailoff, T, panels is not None
        )
        if bad:
            raise np.linalg.LinAlgError(f"the block of random effect node {bad - 1} is not positive definite")
        self._panel = None  # the one panel of tail rows of the scalar sparse columns (B, n × qt)
        if panels is not None:
            T, self._panel = _panel_updates(self.L, panels, T)
        self.Ltail = dense_cholesky(T) if P.qt else T
        self._strip(blocks)

    def _dense_system(self, blocks: PlanBlocks) -> np.ndarray:
        """The all-dense plan's (q + m) × (q + m) system K = [Λ'GΛ + I, Λ'Z'W[X y]; [X y]'WZΛ,
        [X y]'W[X y]] at this factor's λ (its lower triangle)."""
        P = self.plan
        q, m = P.q, blocks.XX.shape[0]
        T0 = self.dense_data(blocks.A)
        K = np.empty((q + m, q + m))
        if q <= DENSE_LAM_Q:  # Λ'T0Λ by two BLAS products with Λ as a q × q array
            Lam = self.dense_lam()
            K[:q, :q] = Lam.T @ T0 @ Lam  # only the lower triangle is read
            K[q:, :q] = blocks.XZ.T @ Lam
        else:  # block by block (Λ is block diagonal): each term's λ on its columns, then its rows
            K[:q, :q] = self.lam_t(self.lam_t(T0.T).T)
            K[q:, :q] = self.lam_t(blocks.XZ).T
        K.ravel()[: q * (q + m) : q + m + 1] += 1.0
        K[q:, q:] = blocks.XX
        return K

    def _dense_factor(self, K: np.ndarray, blocks: PlanBlocks) -> None:
        """The whole factor by one LAPACK Cholesky of the dense system K (:meth:`_dense_system`,
        or the criterion's :class:`DenseSystem` at the same θ; its lower triangle is read, and
        overwritten) (the all-dense plan: q is small)."""
        q, m = self.plan.q, blocks.XX.shape[0]
        self.L = np.empty(0)
        self._panel = None
        # a C-ordered K is an F-ordered K' whose upper triangle is K's lower one (dense_cholesky)
        U, info = lapack.dpotrf(K.T, lower=0, clean=1, overwrite_a=1)
        if 0 < info <= q:
            raise np.linalg.LinAlgError("the random-effects block of the working system is not positive definite")
        Lfull = U.T
        self.Ltail = Lfull[:q, :q]
        self.LX = np.ascontiguousarray(Lfull[q:, :q].T)
        self._p = m - 1
        if info == 0:
            self._LXX = Lfull[q:, q:]
        else:  # only the [X y] part is indefinite (as in _strip): its factor from the Schur complement
            S = blocks.XX - self.LX.T @ self.LX
            try:
                self._LXX = np.linalg.cholesky(S)
            except np.linalg.LinAlgError:
                self._LXX = None

    def _one_term_factor(self, A: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """L_l with L_l L_l' = λ'A_lλ + I for each level l of a one-term model (A_l its block of
        Z'WZ): √(λ²A_ll + 1) by numpy for a random intercept, the closed form for 2 × 2 blocks
        where the plan asks for it (:func:`pair_cholesky`, numpy; an LMM's), else the level kernels."""
        if self.plan.diagonal:
            L = A * lam[0, 0] ** 2 + 1.0
            bad = 0 if np.all(L > 0) else 1 + int(np.argmin(L > 0))  # also NaN
            if not bad:
                np.sqrt(L, out=L)
        elif self.plan.closed_pairs:
            A4 = A.reshape(-1, 4)
            L00, L10, d11, bad = pair_cholesky(A4[:, [0, 2, 3]].T, lam)
            if bad:
                raise np.linalg.LinAlgError(f"the block of random effect node {bad - 1} is not positive definite")
            L4 = np.empty_like(A4)
            L4[:, 0], L4[:, 1], L4[:, 2] = L00, 0.0, L10
            np.sqrt(d11, out=L4[:, 3])
            return L4.ravel()
        else:
            L = np.empty(len(A))
            bad = kernels.level_factor(A, np.ascontiguousarray(lam, dtype=float), L)
        if bad:
            raise np.linalg.LinAlgError(f"the block of random effect node {bad - 1} is not positive definite")
        return L

    def _one_term_solve(self, R: np.ndarray, transpose: bool) -> None:
        """R ← L⁻¹R (or L'⁻¹R) in place for a one-term model's block-diagonal L (R: q × m, C-ordered)."""
        if self.plan.diagonal:
            R /= self.L[:, None]
        elif self.plan.closed_pairs:  # the 2 × 2 blocks by numpy: first and second row of each level
            L4 = self.L.reshape(-1, 4)
            R3 = R.reshape(-1, 2, R.shape[1])
            first, second = (R3[:, 1], R3[:, 0]) if transpose else (R3[:, 0], R3[:, 1])
            first /= L4[:, 3 if transpose else 0, None]
            second -= L4[:, 2, None] * first
            second /= L4[:, 0 if transpose else 3, None]
        else:
            kernels.level_solve(self.L, int(self.plan.p_term[0]), R, transpose)

    def dense_data(self, A: np.ndarray) -> np.ndarray:
        """The data blocks ``A`` of the all-dense plan as a q × q array (the lower blocks, the
        diagonal blocks full), built once per set of blocks."""
        P = self.plan
        cached = P.dense_data
        if cached is None or cached[0] is not A:
            P.dense_data = cached = (A, P.tail_data(A))  # the all-dense plan: its tail is every node
        return cached[1]

    def dense_lam(self) -> np.ndarray:
        """Λ as a dense q × q array (the all-dense plan, at most :data:`DENSE_LAM_Q` random
        effects), kept for the next factor at the same θ (every step of a PIRLS run)."""
        P = self.plan
        cached = P.dense_lam
        if cached is not None and cached[0] is self.lams:
            return cached[1]
        lr, lc = P.lam_entries()
        Lam = np.zeros((P.q, P.q))
        Lam[lr, lc] = np.concatenate([np.tile(lam.ravel(), t.nlevels) for lam, t in zip(self.lams, P.terms)])
        P.dense_lam = (self.lams, Lam)
        return Lam

    def _strip(self, blocks: PlanBlocks) -> None:
        """The [X y] strip: L_X = L_Z⁻¹ Λ'Z'W[X y], and the factor of its Schur complement."""
        P = self.plan
        R = self.lam_t(blocks.XZ)
        self._forward(R)
        if P.qt:
            R[P.qs :] = tail_solve(self.Ltail, R[P.qs :])
        self.LX = R
        self._p = blocks.XX.shape[0] - 1
        # LAPACK's own call: numpy's cholesky costs ~10 µs more on these few columns (a PIRLS
        # step's). Not positive definite: only the [X y] part is indefinite (a Laplace
        # log-determinant with the observed information of NB1 / beta needs L_Z alone), raised
        # when the [X y] part is used.
        S = blocks.XX - R.T @ R
        if S.shape[0] == 1:  # the system in u alone (one column z − Xβ): its factor is one root, as
            self._LXX = None if S[0, 0] <= 0.0 else np.sqrt(S)  # LAPACK's (a NaN passes through)
            return
        LXX, info = lapack.dpotrf(S, lower=1, clean=1)
        self._LXX = LXX if info == 0 else None

    @property
    def LXX(self) -> np.ndarray:
        """Cholesky factor of the [X y] Schur complement (last row: the penalised LS solution)."""
        if self._LXX is None:
            raise np.linalg.LinAlgError("the [X y] block of the working system is not positive definite")
        return self._LXX

    def _forward(self, R: np.ndarray) -> None:
        """R ← L_sparse⁻¹ R in place (q × m), the tail rows updated but not solved; with a kept
        panel B the tail rows' update is the product R_tail −= B' R_sparse."""
        P = self.plan
        if P.Ns == 0:
            return
        if P.diagonal or P.blockdiag:
            self._one_term_solve(R, transpose=False)
            return
        if P.stages is not None:
            P.stages.forward(self.L, R, self._stage_vals)
            return
        dense = self._panel is not None
        kernels.forward_solve(self.L, P.colptr, P.rowidx, P.blkoff, P.nsize, P.nodeoff, P.Ns, R, dense)
        if dense:
            R[P.qs :] -= self._panel.T @ R[: P.qs]

    def lam_t(self, M: np.ndarray) -> np.ndarray:
        """Λ'M for M with q rows in node order (a new array)."""
        return self._lam_product(M, transpose=True)

    def lam(self, M: np.ndarray) -> np.ndarray:
        """ΛM for M with q rows in node order (a new array): b = Λu for the modes u."""
        return self._lam_product(M, transpose=False)

    def _lam_product(self, M: np.ndarray, transpose: bool) -> np.ndarray:
        M = np.asarray(M, dtype=float)
        flat = M.ndim == 1
        M = M.reshape(len(M), -1)
        out = np.empty_like(M)
        P = self.plan
        for t, lam in enumerate(self.lams):
            rows = slice(P.term_off[t], P.term_off[t + 1] if t + 1 < P.k else P.q)
            p = lam.shape[0]
            if p == 1:
                np.multiply(M[rows], lam[0, 0], out=out[rows])
            elif M.shape[1] == 1:  # one column (the modes, a PIRLS step's strip): the levels' rows x'
                # times λ (Λ'x) or λ' (Λx), one small product (2 x 2: 1.4 µs against 7 for the entries)
                out[rows] = (M[rows].reshape(-1, p) @ (lam if transpose else lam.T)).reshape(-1, 1)
            elif p == 2:  # each level's two rows by λ's entries (einsum's set-up costs more here)
                m0, m1 = M[rows][0::2], M[rows][1::2]
                o0, o1 = out[rows][0::2], out[rows][1::2]
                a, b = (lam[0, 0], lam[1, 0]) if transpose else (lam[0, 0], lam[0, 1])
                c, d = (lam[0, 1], lam[1, 1]) if transpose else (lam[1, 0], lam[1, 1])
                np.multiply(m0, a, out=o0)
                o0 += b * m1
                np.multiply(m0, c, out=o1)
                o1 += d * m1
            else:
                blk = M[rows].reshape(-1, p, M.shape[1])
                rule = "ba,lbm->lam" if transpose else "ab,lbm->lam"
                out[rows] = np.einsum(rule, lam, blk).reshape(-1, M.shape[1])
        return out.ravel() if flat else out

    # ------------------------------------------------------------------ quantities
    def diagonal(self) -> np.ndarray:
        """L_Z's diagonal, random effect by random effect (node order)."""
        return np.concatenate([self.L[self.plan.diagpos], np.diag(self.Ltail)])

    @property
    def logdet_Z(self) -> float:
        """log|L_Z|² = log det(Λ'Z'WZΛ + I)."""
        return float(2.0 * np.log(self.diagonal()).sum())

    @property
    def p(self) -> int:
        """Number of fixed-effect columns."""
        return self._p

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

    @property
    def L00(self) -> np.ndarray:
        """Diagonal blocks of L_Z for the first term's levels, ``(ℓ, p, p)``."""
        P = self.plan
        p = int(P.p_term[0])
        if P.Ns == 0:
            o = P.nodeoff[: P.node_base[1] if P.k > 1 else P.N]
            return self.Ltail[o[:, None, None] + np.arange(p)[:, None], o[:, None, None] + np.arange(p)]
        start = P.blkoff[P.colptr[: P.node_base[1] if P.k > 1 else P.N]]
        return self.L[start[:, None] + np.arange(p * p)].reshape(-1, p, p)

    def beta(self) -> np.ndarray:
        """β̂ from R_X' β = c_β."""
        if not self.p:
            return np.zeros(0)
        # LAPACK's triangular solve itself: scipy's wrapper checks cost ~20 µs a PIRLS step
        beta, info = lapack.dtrtrs(self.RX, self.LXX[-1, :-1], lower=1, trans=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"R_X is singular at its diagonal entry {info}")
        return beta

    def solve_Zt(self, rhs: np.ndarray) -> np.ndarray:
        """x with L_Z' x = rhs (rhs of length q, or q × m)."""
        P = self.plan
        x = np.array(rhs, dtype=float).reshape(P.q, -1)
        if P.qt:
            x[P.qs :] = tail_solve(self.Ltail, x[P.qs :], transpose=True)
        if P.Ns == 0:
            return x.reshape(np.shape(rhs))
        if P.diagonal or P.blockdiag:
            self._one_term_solve(x, transpose=True)
            return x.reshape(np.shape(rhs))
        if P.stages is not None:
            P.stages.backward(self.L, x, self._stage_vals)
            return x.reshape(np.shape(rhs))
        kernels.backward_solve(self.L, P.colptr, P.rowidx, P.blkoff, P.nsize, P.nodeoff, P.Ns, x)
        return x.reshape(np.shape(rhs))

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """x with (Λ'Z'WZΛ + I) x = rhs (length q, or q × m)."""
        P = self.plan
        x = np.array(rhs, dtype=float).reshape(P.q, -1)
        self._forward(x)
        if P.qt:
            x[P.qs :] = tail_solve(self.Ltail, x[P.qs :])
        return self.solve_Zt(x).reshape(np.shape(rhs))

    def selected_inverse_data(self, inverse: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(Λ'Z'WZΛ + I)⁻¹ at the stored positions of the data blocks (the layout of
        ``blocks.A``: the sparse part, then the tail's data blocks), from :meth:`selected_inverse`'s
        (Z, Zt) when the caller has them (``inverse``)."""
        P = self.plan
        Z, Zt = self.selected_inverse() if inverse is None else inverse
        if not P.qt:
            return Z
        r, c = P.tail_entries()
        return np.concatenate([Z, Zt[r, c]])

    def u_flat(self, beta: np.ndarray) -> np.ndarray:
        """Spherical modes û from L_Z' u = c_Z − L_X β, every term's in one vector."""
        return self.solve_Zt(self.LX[:, -1] - self.LX[:, :-1] @ beta)

    def u(self, beta: np.ndarray) -> list[np.ndarray]:
        """:meth:`u_flat` split by term (views)."""
        u = self.u_flat(beta)
        off = self.plan.term_off
        return [u[a:b] for a, b in zip(off, [*off[1:], len(u)])]

    def b(self, us: list[np.ndarray]) -> list[np.ndarray]:
        """Random effects on the data scale, b_t = Λ_t u_t (``ℓ_t × p_t`` arrays)."""
        return [u.reshape(-1, lam.shape[0]) @ lam.T for u, lam in zip(us, self.lams)]

    def vcov_beta_unscaled(self) -> np.ndarray:
        """(R_X R_X')⁻¹; times σ² it is the covariance of β̂."""
        Rinv = lower_inverse(self.RX)
        return Rinv.T @ Rinv

    def selected_inverse(self) -> tuple[np.ndarray, np.ndarray]:
        """(Z, Zt): the blocks of (Λ'Z'WZΛ + I)⁻¹ on the factor's sparse pattern (in the layout
        of ``L``) and the tail's block of it (full), by Takahashi's recurrences."""
        P = self.plan
        Zt = np.zeros((P.qt, P.qt))
        if P.qt:
            Zt = np.ascontiguousarray(lapack.dpotri(self.Ltail, lower=1)[0])  # (L L')⁻¹, lower triangle
            if P.Ns == 0 or P.stages is not None:  # no compiled kernel on these plans' paths
                Zt = np.tril(Zt) + np.tril(Zt, -1).T
            else:
                kernels.mirror_lower(Zt)
        if P.Ns == 0:  # the all-dense plan: the tail is the whole
            return np.zeros(0), Zt
        if P.stages is not None:
            return P.stages.selected_inverse(self.L, Zt, self._stage_vals), Zt
        if P.diagonal:  # (L L')⁻¹ = 1/L²
            return 1.0 / (self.L * self.L), Zt
        if P.closed_pairs:  # (L_l L_l')⁻¹ of L_l = [a 0; b c]: [1/a² + b²/(ac)², −b/(ac²); ., 1/c²]
            L4 = self.L.reshape(-1, 4)
            a, b, c = L4[:, 0], L4[:, 2], L4[:, 3]
            S4 = np.empty_like(L4)
            S4[:, 3] = 1.0 / (c * c)
            S4[:, 1] = S4[:, 2] = -b / a * S4[:, 3]
            S4[:, 0] = (1.0 + b * b * S4[:, 3]) / (a * a)
            return S4.ravel(), Zt
        if P.blockdiag:  # per level (L_l L_l')⁻¹
            S = np.empty(P.nsparse)
            kernels.level_inverse(self.L, int(P.p_term[0]), S)
            return S, Zt
        Z = np.zeros(P.nsparse)
        kernels.selected_inverse(self.L, P.colptr, P.rowidx, P.blkoff, P.nsize, P.Ns, P.tailoff, Zt, Z)
        return Z, Zt

    def condvar_blocks(self) -> list[np.ndarray]:
        """Diagonal blocks of Λ (Λ'Z'WZΛ + I)⁻¹ Λ' per level, ``(ℓ_t, p_t, p_t)`` per term.

        Times σ² these are lme4's conditional variances of the random effects (given β̂). Only
        the inverse's blocks on the factor's pattern are computed (Takahashi's recurrences), so
        the memory is that of the factor."""
        P = self.plan
        Z, Zt = self.selected_inverse()
        out = []
        for t, lam in enumerate(self.lams):
            p = lam.shape[0]
            nodes = np.arange(P.node_base[t], P.node_base[t + 1])
            if t < P.split:
                V = Z[P.blkoff[P.colptr[nodes]][:, None] + np.arange(p * p)].reshape(-1, p, p)
            else:
                o = P.tailoff[nodes]
                V = Zt[(o[:, None, None] + np.arange(p)[:, None]), (o[:, None, None] + np.arange(p))]
            out.append(np.einsum("ab,lbc,dc->lad", lam, V, lam))
        return out
