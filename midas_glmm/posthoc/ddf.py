"""Denominator degrees of freedom of the fixed effects' tests, and the one place ``ddf`` is read.

* ``"normal"`` (also ``"asymptotic"``, emmeans' name): Wald z, df = ∞ — the seed's default;
* ``"satterthwaite"`` (lmerTest): per hypothesis, df = 2(ℓ'Vℓ)²/(g'Ag), g the gradient of ℓ'V(φ)ℓ
  in the variance parameters φ = (θ, σ) and A = 2H⁻¹ their asymptotic covariance from the
  Hessian H of the (REML or ML) deviance;
* ``"kenward-roger"`` (pbkrtest): the adjusted covariance Φ_A of β̂ and KR's moment-matched df.

Both approximations are for linear mixed models; their pieces are computed once per fit and
kept on it.
"""

from __future__ import annotations

import numpy as np

from ..checks import refuse_dispersion_model, refuse_iterative
from ..design.daskdata import check_available
from ..engine.lmm import lmm_criterion
from ..engine.lmmdisp import DispersionLMM
from ..engine.optimize import fd_hessian
from ..errors import FitError, did_you_mean

__all__ = [
    "WALD",
    "SATTERTHWAITE",
    "KENWARD_ROGER",
    "parse_ddf",
    "test_method",
    "require_lmm",
    "satterthwaite_parts",
    "satterthwaite_df",
    "kenward_roger_parts",
    "kenward_roger",
    "kr_hypothesis_df",
    "KR_MAX_ROWS",
]

WALD, SATTERTHWAITE, KENWARD_ROGER = "normal", "satterthwaite", "kenward-roger"

#: every spelling of ``ddf`` taken, and what it means
_DDF = {
    "normal": WALD,
    "asymptotic": WALD,
    "wald": WALD,
    "satterthwaite": SATTERTHWAITE,
    "kenward-roger": KENWARD_ROGER,
    "kr": KENWARD_ROGER,
}

KR_MAX_ROWS = 5000


def parse_ddf(ddf, allowed: tuple[str, ...] = (WALD, SATTERTHWAITE, KENWARD_ROGER), where: str = "here") -> str:
    """``ddf`` as one of :data:`WALD` (``"normal"``; ``"asymptotic"`` is the same),
    :data:`SATTERTHWAITE` or :data:`KENWARD_ROGER` (``"kr"``), case and ``_``/``-`` aside; a
    FitError for anything else or a method not in ``allowed`` (``where``: the call, for the message)."""
    key = str(ddf).strip().lower().replace("_", "-")
    method = _DDF.get(key)
    choices = ", ".join(f"'{m}'" for m in allowed)
    if method is None:
        hint = did_you_mean(key, _DDF)
        raise FitError(f"unknown ddf {ddf!r}{hint}; choose {choices} ('asymptotic' is 'normal': Wald z)")
    if method not in allowed:
        raise FitError(f"ddf={ddf!r} is not available {where}; choose {choices}")
    return method


def test_method(res, ddf, default: str = SATTERTHWAITE) -> str:
    """The df method of a test of ``res``: ``ddf`` parsed, ``default`` when None. A GLMM's tests
    are Wald tests (car's ``Anova``, emmeans' asymptotic df): its default is :data:`WALD`, and
    Satterthwaite or Kenward–Roger asked for by name is a FitError; so is the default of a fit by
    the iterative solver (its df would need the exact factor; at its sizes they are infinite)."""
    if ddf is None:  # an iterative fit's df would need the exact factor: Wald, as for its size they are
        iterative = getattr(res.estimates, "solver", None) is not None
        return default if res.family.is_lmm and not iterative else WALD
    method = parse_ddf(ddf)
    if method != WALD:
        name = "Satterthwaite's approximation" if method == SATTERTHWAITE else "the Kenward-Roger approximation"
        require_lmm(res, name)
    return method


def require_lmm(res, what: str) -> None:
    """A FitError unless ``res`` is a linear mixed model."""
    if not res.family.is_lmm:
        raise FitError(
            f"{what} is defined for linear mixed models; for a GLMM use ddf='normal' (Wald z) or a parametric bootstrap"
        )


def _cache(res) -> dict:
    """The fit's store of what its df computations share."""
    return res.__dict__.setdefault("_ddf_cache", {})


def _varpar_functions(res):
    """Unprofiled criterion D(θ, σ) and the covariance V(θ, σ) of β̂, as functions of (θ, σ);
    with a dispersion formula of (θ, σ, η), its coordinates η among the variance parameters (σ
    left out where the dispersion formula holds the scale itself)."""
    if res.design.disp is not None and not res.design.disp.no_residual:
        return _dispersion_varpar_functions(res)
    refuse_iterative(res, "Satterthwaite and Kenward-Roger degrees of freedom", "use ddf='normal' (Wald z)")
    crit, S = lmm_criterion(res.design, res.is_reml)

    def V(par):
        L = crit.factor(par[:-1])
        return par[-1] ** 2 * S @ L.vcov_beta_unscaled() @ S.T

    def D(par):
        return crit.unprofiled(par[:-1], par[-1])

    return np.concatenate([res.theta, [res.sigma]]), D, V


def _dispersion_varpar_functions(res):
    dm = DispersionLMM(res.model.design, res.is_reml)
    k = len(res.theta)
    eta = dm.B.T @ res.disp_params.to_numpy()  # γ = Bη + log σ²·c, B orthonormal and B'c = 0
    S = dm.S

    def split(par):
        sigma = par[k] if dm.profiled else 1.0
        return par[:k], sigma, par[k + int(dm.profiled) :]

    def V(par):
        theta, sigma, e = split(par)
        return sigma**2 * S @ dm.criterion(e).factor(theta).vcov_beta_unscaled() @ S.T

    def D(par):
        theta, sigma, e = split(par)
        return dm.criterion(e).unprofiled(theta, sigma)

    start = np.concatenate([res.theta, [res.sigma] if dm.profiled else [], eta])
    return start, D, V


def satterthwaite_parts(res) -> tuple[np.ndarray, list[np.ndarray]]:
    """(A, [∂V/∂φ_k]): A = 2 H⁻¹ the asymptotic covariance of the variance parameters φ = (θ, σ)
    from the Hessian H of the (REML or ML) deviance (central differences, extrapolated), and the
    Jacobian of the covariance V(φ) of β̂ by central differences — what every Satterthwaite df
    needs; computed once per fit."""
    cache = _cache(res)
    if "satt" not in cache:
        require_lmm(res, "Satterthwaite's approximation")
        par, D, V = _varpar_functions(res)
        # one Richardson step on central differences (lmerTest's numDeriv::hessian extrapolates
        # too): at lme4's own estimates this gives lmerTest's df to 1e-7
        H = (4.0 * fd_hessian(D, par, h=5e-4) - fd_hessian(D, par, h=1e-3)) / 3.0
        A = 2.0 * np.linalg.pinv(H)
        steps = 1e-5 * np.maximum(1.0, np.abs(par))
        jac = []
        for i in range(len(par)):
            e = np.zeros_like(par)
            e[i] = steps[i]
            jac.append((V(par + e) - V(par - e)) / (2 * steps[i]))
        cache["satt"] = (A, jac)
    return cache["satt"]


def satterthwaite_df(res) -> np.ndarray:
    """Satterthwaite degrees of freedom per fixed effect (lmerTest's method).

    df_j = 2 V_jj² / (∇V_jj' A ∇V_jj), with V(θ, σ) the covariance of β̂ and A = 2 H⁻¹ the
    asymptotic covariance of (θ̂, σ̂) from the Hessian H of the (REML or ML) deviance."""
    A, jac = satterthwaite_parts(res)
    grads = np.array([np.diag(J) for J in jac])
    v = np.diag(res.vcov().to_numpy())
    return 2 * v**2 / np.einsum("ij,ik,kj->j", grads, A, grads)


def dense_Z(term, n: int) -> np.ndarray:
    """The n × q random-effects matrix of one term, dense (Kenward–Roger's small problems only)."""
    Z = np.zeros((n, term.q))
    for a in range(term.p):
        Z[np.arange(n), term.codes * term.p + a] = term.Zcols[:, a]
    return Z


def kenward_roger_parts(res) -> dict:
    """Kenward–Roger (1997): the pieces every hypothesis's df and adjusted covariance need.

    Σ = Σ_r φ_r G_r (variances and covariances of each term, and the residual variance);
    Φ = (X'Σ⁻¹X)⁻¹, P_r = X'Σ⁻¹G_rΣ⁻¹X, Q_rs = X'Σ⁻¹G_rΣ⁻¹G_sΣ⁻¹X, W = 2[tr(ΠG_rΠG_s)]⁻¹,
    Φ_A = Φ + 2Φ[Σ W_rs (Q_rs − P_rΦP_s)]Φ; a hypothesis L's df follow KR's moment matching
    (:func:`kr_hypothesis_df`). Uses dense n × n matrices, so it is limited to n ≤ 5000 (use Satterthwaite
    beyond).

    Returns
    -------
    dict with Phi, PhiA (adjusted covariance), P (list), W
    """
    cache = _cache(res)
    if "kr" in cache:
        return cache["kr"]
    require_lmm(res, "the Kenward-Roger approximation")
    check_available(res.design, "Kenward-Roger")
    d = res.design
    n = d.nobs
    if n > KR_MAX_ROWS:
        raise FitError(
            f"Kenward-Roger needs dense {n} x {n} matrices; it is available up to {KR_MAX_ROWS} rows. "
            "Use ddf='satterthwaite'"
        )
    refuse_dispersion_model(
        res, "Kenward-Roger", "its residual variances are not linear in their parameters; use ddf='satterthwaite'"
    )
    nonlinear = [t.label for t in d.terms if not t.structure.linear]
    if nonlinear:
        raise FitError(
            f"Kenward-Roger takes a covariance linear in its parameters (as pbkrtest's); {', '.join(nonlinear)} "
            "is not: use ddf='satterthwaite'"
        )
    X = d.X
    Gs, phis = [], []
    for t, Sig in zip(d.terms, res.term_covariances()):
        Z = dense_Z(t, n)
        for a in range(t.p):
            for b in range(a + 1) if not t.structured else (a,):  # a diag term: its variances alone
                E = np.zeros((t.p, t.p))
                E[a, b] = E[b, a] = 1.0
                Zk = Z @ np.kron(np.eye(t.nlevels), E)
                Gs.append((Zk, Z))
                phis.append(Sig[a, b])
    w = d.weights if d.has_prior_weights else np.ones(n)
    Sigma = sum(phi * (A @ B.T) for phi, (A, B) in zip(phis, Gs)) + res.sigma**2 * np.diag(1 / w)
    Sinv = np.linalg.inv(Sigma)
    Sinv = (Sinv + Sinv.T) / 2
    SiG = [Sinv @ A @ B.T for A, B in Gs] + [Sinv / w[None, :]]
    SiX = Sinv @ X
    Phi = np.linalg.inv(X.T @ SiX)
    U = [M @ SiX for M in SiG]
    P = [X.T @ u for u in U]
    k = len(SiG)
    Q = [[X.T @ SiG[r] @ U[s] for s in range(k)] for r in range(k)]
    IE = np.empty((k, k))
    for r in range(k):
        for s in range(k):
            IE[r, s] = 0.5 * (
                np.sum(SiG[r] * SiG[s].T) - 2 * np.trace(Phi @ Q[r][s]) + np.trace(Phi @ P[r] @ Phi @ P[s])
            )
    W = np.linalg.inv(IE)
    adj = sum(W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s]) for r in range(k) for s in range(k))
    PhiA = Phi + 2 * Phi @ adj @ Phi
    PhiA = (PhiA + PhiA.T) / 2
    cache["kr"] = {"Phi": Phi, "PhiA": PhiA, "P": P, "W": W}
    return cache["kr"]


def kenward_roger(res) -> tuple[np.ndarray, np.ndarray]:
    """Kenward–Roger df per fixed effect and the adjusted covariance of β̂ (see
    :func:`kenward_roger_parts`)."""
    parts = kenward_roger_parts(res)
    p = parts["Phi"].shape[0]
    df = np.array([kr_hypothesis_df(parts, np.eye(p)[[j]], 1) for j in range(p)])
    return df, parts["PhiA"]


def kr_df(A1: float, A2: float, ell: int) -> float:
    """Kenward & Roger's denominator df from A1, A2 for a hypothesis of rank ℓ."""
    B = (A1 + 6 * A2) / (2 * ell)
    g = ((ell + 1) * A1 - (ell + 4) * A2) / ((ell + 2) * A2)
    den = 3 * ell + 2 * (1 - g)
    c1, c2, c3 = g / den, (ell - g) / den, (ell + 2 - g) / den
    E = 1 / (1 - A2 / ell)
    V = 2 / ell * (1 + c1 * B) / ((1 - c2 * B) ** 2 * (1 - c3 * B))
    rho = V / (2 * E**2)
    return 4 + (ell + 2) / (ell * rho - 1)


def kr_hypothesis_df(parts, L, q) -> float:
    """Kenward–Roger denominator df of the rank-q hypothesis L β = c."""
    Phi, P, W = parts["Phi"], parts["P"], parts["W"]
    Theta = L.T @ np.linalg.pinv(L @ Phi @ L.T) @ L
    M = [Theta @ Phi @ Pr @ Phi for Pr in P]
    k = len(P)
    A1 = sum(W[r, s] * np.trace(M[r]) * np.trace(M[s]) for r in range(k) for s in range(k))
    A2 = sum(W[r, s] * np.trace(M[r] @ M[s]) for r in range(k) for s in range(k))
    return float(kr_df(A1, A2, q))
