"""The analytic gradient of the profiled LMM criterion with respect to θ.

With A = Λ'GΛ + I (G = Z'WZ), S = A⁻¹, the modes û, β̂ and the residual e = y − Xβ̂ − ZΛû:

* ∂ log|A| / ∂Λ = 2 GΛS — only the diagonal blocks of GΛS per level are needed, and they read
  S only where G is non-zero, inside the factor's pattern: the selected inverse suffices;
* ∂ r² / ∂Λ = −2 (Z'e) û' (r² is minimised over û and β̂, so only its explicit Λ enters);
* REML: with P = S Λ'Z'X, H = Z'X − GΛP and C = R_X R_X', ∂ log|C| / ∂Λ = −2 H C⁻¹ P'.

Λ is linear in θ, so ∂/∂θ_k = ⟨∂/∂Λ, ∂Λ/∂θ_k⟩ summed over the levels of θ_k's term. One
gradient costs one factorisation, one selected inversion and one product with G: a little more
than two evaluations of the criterion, for all of θ at once.
"""

from __future__ import annotations

import numpy as np

from ..linalg import lazy
from .factor import DENSE_LAM_Q, Factor, lam_flat
from .glmmrows import flat_effects

__all__ = ["profiled_gradient", "laplace_gradient", "mode_derivatives"]

kernels = lazy.load("kernels")  # compiled: loaded on first use


def _logdet_blocks(L: Factor, Z: np.ndarray, Zt: np.ndarray, S_data=None) -> tuple[np.ndarray, np.ndarray]:
    """(D, offsets): the diagonal blocks D_l = (GΛS)_ll of every node, flat, from the factor's
    data blocks G and the selected inverse (Z, Zt; ``S_data``: it at the data blocks' places,
    when the caller has it)."""
    P, blocks = L.plan, L.blocks
    doff = np.concatenate([[0], np.cumsum(P.nsize**2)]).astype(np.int64)
    if P.Ns == 0:  # the all-dense plan of a small model: G, Λ and S as q × q arrays
        lr, lc = P.lam_entries()
        if P.q <= DENSE_LAM_Q:  # two BLAS products with Λ as a q × q array
            M = _dense_G(L) @ L.dense_lam() @ Zt
            return np.ascontiguousarray(M[lr, lc]), doff
        GL = L.lam_t(_dense_G(L)).T  # GΛ = (Λ'G)' for a symmetric G
        return np.einsum("ek,ke->e", GL[lr], Zt[:, lc]), doff  # (GΛS)[lr, lc] alone: O(q² p)
    if P.diagonal:  # one scalar term: D_l = G_ll λ S_ll
        return blocks.A[: P.nsparse] * L.lams[0][0, 0] * Z, doff
    if P.blockdiag:  # one vector term: D_l = G_l λ S_l per level
        D = np.empty(P.nsparse)
        lam = np.ascontiguousarray(L.lams[0], dtype=float)
        kernels.level_products(blocks.A[: P.nsparse], lam, Z, int(P.p_term[0]), D)
        return D, doff
    if P.stages is not None:  # random intercepts: D_i = Σ_j G_ij λ_j S_ji over the stored entries
        S = L.selected_inverse_data((Z, Zt)) if S_data is None else S_data
        return P.stages.logdet_blocks(blocks.A, S, np.array([lam[0, 0] for lam in L.lams])), doff
    lam, lamoff = lam_flat(L.lams)
    D = np.zeros(int(doff[-1]))
    args = (P.colptr, P.rowidx, P.blkoff, P.nsize, P.nterm, lam, lamoff, P.Ns, P.nsparse, P.brow, P.bcol, P.boff)
    kernels.logdet_gradient_blocks(blocks.A, Z, Zt, *args, P.tailoff, doff, D)
    return D, doff


def _dense_G(L: Factor) -> np.ndarray:
    """G = Z'WZ in full (q × q) from the all-dense plan's lower blocks (once per set of blocks)."""
    P, A = L.plan, L.blocks.A
    if P.dense_G is not None and P.dense_G[0] is A:
        return P.dense_G[1]
    T0 = L.dense_data(A)
    lr, lc = P.lam_entries()
    G = T0 + T0.T
    G[lr, lc] -= T0[lr, lc]  # the diagonal blocks once
    P.dense_G = (A, G)
    return G


def _per_term(plan, M: np.ndarray, width: int) -> list[np.ndarray]:
    """Rows of M (q × width, node order) grouped per term as (levels, p, width)."""
    out = []
    for t in range(plan.k):
        a, b = plan.term_off[t], plan.term_off[t + 1] if t + 1 < plan.k else plan.q
        out.append(M[a:b].reshape(-1, int(plan.p_term[t]), width))
    return out


def profiled_gradient(crit, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """(criterion, ∂criterion/∂θ) of an :class:`~midas_glmm.engine.lmm.LMMCriterion` at θ."""
    theta = np.asarray(theta, dtype=float)
    tmap, P, blocks = crit.tmap, crit.plan, crit.blocks
    L = Factor(P, blocks, tmap.lams(theta))
    value = crit.from_factor(L)
    p = L.p
    # log|A|: the diagonal blocks D_l of GΛS
    Z, Zt = L.selected_inverse()
    D, doff = _logdet_blocks(L, Z, Zt)
    # r² (and for REML log|C|): Z'e and H from one product of G with [ΛP b]
    beta = L.beta()
    u = L.solve_Zt(L.LX[:, -1] - L.LX[:, :-1] @ beta)
    Pm = L.solve_Zt(L.LX[:, :-1]) if (crit.REML and p) else np.zeros((P.q, 0))
    V = L.lam(np.column_stack([Pm, u]))
    if P.Ns == 0:
        GV = _dense_G(L) @ V
    elif P.diagonal:  # G diagonal
        GV = blocks.A[: P.nsparse, None] * V
    elif P.blockdiag:  # G block diagonal
        pt = int(P.p_term[0])
        GV = np.empty(V.shape)  # C-ordered: its flat view is written
        kernels.level_products(blocks.A[: P.nsparse], np.eye(pt), np.ascontiguousarray(V).ravel(), pt, GV.reshape(-1))
    elif P.stages is not None:
        GV = P.stages.symmetric_product(blocks.A, V)
    else:
        GV = np.zeros_like(V)
        kernels.symmetric_product(
            blocks.A, P.colptr, P.rowidx, P.blkoff, P.nsize, P.nodeoff, P.Ns, P.nsparse, P.brow, P.bcol, P.boff, V, GV
        )
    XZ = blocks.XZ
    Ze = XZ[:, -1] - XZ[:, :-1] @ beta - GV[:, -1]
    r2 = L.pwrss
    m = crit.n - crit.p if crit.REML else crit.n
    grads = []  # ∂criterion/∂λ_t summed over levels, per term
    Dt = [
        D[doff[P.node_base[t]] : doff[P.node_base[t + 1]]].reshape(-1, int(P.p_term[t]), int(P.p_term[t]))
        for t in range(P.k)
    ]
    Ze_t, u_t = _per_term(P, Ze[:, None], 1), _per_term(P, u[:, None], 1)
    if crit.REML and p:
        H = XZ[:, :-1] - GV[:, :-1]
        Cinv = L.vcov_beta_unscaled()
        H_t, P_t = _per_term(P, H, p), _per_term(P, Pm, p)
    for t in range(P.k):
        g = 2.0 * Dt[t].sum(axis=0) - (2.0 * m / r2) * np.einsum("la,lb->ab", Ze_t[t][:, :, 0], u_t[t][:, :, 0])
        if crit.REML and p:
            g -= 2.0 * np.einsum("lam,mn,lbn->ab", H_t[t], Cinv, P_t[t])
        grads.append(g)
    return value, sum(np.einsum("kab,ab->k", J, g) for J, g in zip(tmap.jacobian_at(theta), grads))


def laplace_gradient(
    prob, theta: np.ndarray, beta: np.ndarray, phi: float = 1.0, channels=()
) -> tuple[float, np.ndarray]:
    """(−2ℓ, its gradient in (θ, β) and the extra ``channels``) of the Laplace approximation of
    a GLMM held in memory whose log-determinant takes the observed information
    (:meth:`GLMMProblem.has_gradient`); β on the problem's (standardised) scale; ``channels``
    as in :meth:`RowBlock.laplace_gradient_sums` (log φ, the zero-inflation's γ).

    With the modes û(θ, β) (so the penalised deviance's derivative in u vanishes), A = Λ'Z'WZΛ + I,
    W = −ℓ'' at the modes and S = A⁻¹, the derivative in any parameter φ is
    −2ℓ'·∂η/∂φ + ∂log|A|/∂φ|_W + Σᵢ hᵢ w'ᵢ dηᵢ/dφ, with hᵢ = ζᵢ'Sζᵢ the level-space leverage of
    row i and dη/dφ including the modes' response dû/dφ = S(Λ_φ'Z'ℓ' − Λ'Z'W ∂η/∂φ). With
    v = h∘w', q = SΛ'Z'v and r = v − WZΛq this is X'(r − 2ℓ') for β, and for λ_t
    Σ_l [(Z'(r − 2ℓ'))_l û_l' + (Z'ℓ')_l q_l' + 2(GΛS)_ll]; θ by the Jacobian of λ. One PIRLS
    run, one selected inversion and two passes over the rows."""
    theta = np.asarray(theta, dtype=float)
    st = prob.pirls(theta, beta, phi)
    value = prob.laplace(st)
    L = st.factor
    P, lams = L.plan, L.lams
    Z, Zt = L.selected_inverse()
    S_data = L.selected_inverse_data((Z, Zt))
    block = prob.rows.block
    Zl, Zr, g_beta_raw, qv, extra = block.laplace_gradient_sums(prob.S @ st.beta, lams, st.u, L, S_data, phi, channels)
    D, doff = _logdet_blocks(L, Z, Zt, S_data)
    u = np.concatenate(st.u)
    Ru = _per_term(P, np.column_stack([Zr - 2.0 * Zl, u, Zl, qv]), 4)
    grads = []
    for t in range(P.k):
        pt = int(P.p_term[t])
        Dt = D[doff[P.node_base[t]] : doff[P.node_base[t + 1]]].reshape(-1, pt, pt)
        M = Ru[t]
        grads.append(
            np.einsum("la,lb->ab", M[:, :, 0], M[:, :, 1])
            + np.einsum("la,lb->ab", M[:, :, 2], M[:, :, 3])
            + 2.0 * Dt.sum(axis=0)
        )
    g_theta = sum(np.einsum("kab,ab->k", J, g) for J, g in zip(prob.tmap.jacobian_at(theta), grads))
    return value, np.concatenate([g_theta, prob.S.T @ g_beta_raw, *extra])


def mode_derivatives(prob, st, theta: np.ndarray, beta: np.ndarray, phi: float = 1.0) -> np.ndarray:
    """dû/d(θ, β) at the modes of a PIRLS state ``st`` (q × (len θ + p), node order): the
    implicit derivative of the modes' equation Λ'Z'ℓ'(η) − u = 0, η = offset + Xβ + ZΛu,

        (Λ'Z'WZΛ + I) dû = (∂Λ)'Z'ℓ' − Λ'Z'W ∂η,   ∂η = Z(∂Λ)û in θ, X S in β,

    with W = −ℓ'' (the Laplace factor's information). One pass over the rows (their sums Z'[…]:
    :meth:`RowBlock.mode_slope_sums`) and one level-sized solve with m = len θ + p columns."""
    L = st.factor
    nt = len(theta)
    J = prob.tmap.jacobian_at(theta)
    dbs = [flat_effects([Jt[j] for Jt in J], st.u) for j in range(nt)]
    sums = prob.rows("mode_slope_sums", prob.S @ beta, L.lams, st.u, dbs, prob.S, phi)
    cuts = np.cumsum([u.size for u in st.u])[:-1]
    Zl = np.split(sums[:, 0], cuts)
    F = -L.lam_t(sums[:, 1:])
    for j in range(nt):
        F[:, j] += flat_effects([Jt[j].T for Jt in J], Zl)
    return L.solve(F)
