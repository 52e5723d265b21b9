"""The linear mixed model: profiled REML/ML criterion of θ and the estimates at θ.

Following Bates, Mächler, Bolker & Walker (2015, JSS 67(1)), with b = Λ(θ)u, u ~ N(0, σ²I):

* ML deviance     −2ℓ(θ)   = log|L_θ|² + n (1 + log(2π r²_θ / n))
* REML criterion  −2ℓ_R(θ) = log|L_θ|² + log|R_X|² + (n−p)(1 + log(2π r²_θ / (n−p)))

where L_θ is the Cholesky factor of Λ'Z'WZΛ + I, R_X that of the Schur complement for β and
r²_θ the penalised residual sum of squares (minus Σ log wᵢ with prior weights). β̂ and σ̂² are
closed-form given θ. Nothing here touches the rows: everything comes from the
:class:`~midas_glmm.blocks.CrossProducts` computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from .blocks import BlockedCholesky, CrossProducts
from .errors import FitError
from .reterms import ReTerm

__all__ = ["LMMCriterion", "LMMSolution", "ThetaMap"]


class ThetaMap:
    """Maps the θ vector to the per-term λ matrices, with bounds and start (lme4's order)."""

    def __init__(self, terms: list[ReTerm]):
        self.terms = terms
        sizes = [t.n_theta for t in terms]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.lower = np.concatenate([t.theta_lower for t in terms])
        self.start = np.concatenate([t.theta_start for t in terms])
        self.names = [n for t in terms for n in t.theta_names()]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def lams(self, theta: np.ndarray) -> list[np.ndarray]:
        """λ_i(θ) for every term."""
        return [t.lam(theta[a:b]) for t, a, b in zip(self.terms, self.offsets[:-1], self.offsets[1:])]


@dataclass
class LMMSolution:
    """Estimates at one θ: β̂, σ̂, spherical and scaled random effects, and the factor."""

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    u: list[np.ndarray]
    b: list[np.ndarray]
    factor: BlockedCholesky
    criterion: float


class LMMCriterion:
    """−2 × (profiled) log-likelihood or REML criterion as a function of θ.

    Parameters
    ----------
    terms : list of ReTerm
    cp : CrossProducts
        Blocks of ``[Z X y]'W[Z X y]`` (prior weights W).
    REML : bool
    log_weights_sum : float
        Σ log wᵢ of the prior weights (0 without weights).
    """

    def __init__(self, terms: list[ReTerm], cp: CrossProducts, REML: bool, log_weights_sum: float = 0.0):
        self.tmap = ThetaMap(terms)
        self.cp = cp
        self.REML = REML
        self.n = cp.n
        self.p = cp.XytXy.shape[0] - 1
        self.ldW = log_weights_sum

    def factor(self, theta: np.ndarray) -> BlockedCholesky:
        """L(θ) from the stored cross-products."""
        return BlockedCholesky(self.cp, self.tmap.lams(np.asarray(theta, dtype=float)))

    def from_factor(self, L: BlockedCholesky) -> float:
        """The criterion given the factor at θ."""
        r2 = L.pwrss
        if r2 <= 0:
            return np.inf
        if self.REML:
            nmp = self.n - self.p
            return L.logdet_Z + L.logdet_X + nmp * (1 + np.log(2 * np.pi * r2 / nmp)) - self.ldW
        return L.logdet_Z + self.n * (1 + np.log(2 * np.pi * r2 / self.n)) - self.ldW

    def unprofiled(self, theta: np.ndarray, sigma: float) -> float:
        """The criterion at (θ, σ) without profiling σ out:
        ML log|L|² + n log(2πσ²) + r²/σ²; REML adds log|R_X|² and uses n − p."""
        L = self.factor(theta)
        m = self.n - self.p if self.REML else self.n
        extra = L.logdet_X if self.REML else 0.0
        return L.logdet_Z + extra + m * np.log(2 * np.pi * sigma**2) + L.pwrss / sigma**2 - self.ldW

    def __call__(self, theta: np.ndarray) -> float:
        try:
            return self.from_factor(self.factor(theta))
        except np.linalg.LinAlgError:
            return np.inf

    def solution(self, theta: np.ndarray) -> LMMSolution:
        """β̂(θ), σ̂(θ) and the random effects at θ."""
        L = self.factor(theta)
        beta = L.beta()
        u = L.u(beta)
        denom = self.n - self.p if self.REML else self.n
        sigma = float(np.sqrt(L.pwrss / denom))
        return LMMSolution(np.asarray(theta, float), beta, sigma, u, L.b(u), L, self.from_factor(L))


def lmm_criterion(design, REML: bool, standardize_X: bool = True, fix: tuple[int, float] | None = None):
    """The data pass for an LMM: (criterion, S), with β = S β_s for the standardised design.

    ``fix=(j, v)`` holds β_j at v (its column moves into the offset), for profiling β_j."""
    from .design import standardize

    if design.source is not None:  # Dask: the blocks were reduced on the workers
        if fix is not None:
            raise FitError(
                "profiling a fixed effect needs another pass over the rows; it is not available for Dask data yet"
            )
        cp, ldW = design.source.cross_products(design.has_prior_weights)
        return LMMCriterion(design.terms, cp, REML, ldW), design.source.S
    X, names, y = design.X, list(design.fixed_names), design.y - design.offset
    if fix is not None:
        j, v = fix
        y = y - v * X[:, j]
        X = np.delete(X, j, axis=1)
        del names[j]
    p = X.shape[1]
    shift, scale, S = standardize(X, names) if standardize_X else (np.zeros(p), np.ones(p), np.eye(p))
    w = design.weights
    cp = CrossProducts.from_rows(design.terms, X, y, w if design.has_prior_weights else None, shift, scale)
    ldW = float(np.sum(np.log(w[w > 0]))) if design.has_prior_weights else 0.0
    return LMMCriterion(design.terms, cp, REML, ldW), S


def _scaled_condvar(factor: BlockedCholesky, s2: float) -> list[np.ndarray]:
    """σ² Λ(Λ'Z'ZΛ + I)⁻¹Λ' per level: lme4's conditional variances of the random effects."""
    return [s2 * blk for blk in factor.condvar_blocks()]


def fit_lmm(design, REML: bool = True, optimizer: str = "bobyqa", standardize_X: bool = True):
    """Fit a linear mixed model by profiled REML or ML.

    The rows are read once (the cross-products); the optimizer then works on θ alone.

    Returns
    -------
    Estimates
    """
    from .estimates import Estimates
    from .optimize import check_convergence, is_singular, minimize_bounded

    crit, S = lmm_criterion(design, REML, standardize_X)
    tm = crit.tmap
    # θ is scale-free and of order one: a wide first trust region and a stop on the step size
    opt = minimize_bounded(
        crit,
        tm.start,
        tm.lower,
        optimizer,
        step=0.75,
        tolerances={"ftol_rel": 0.0, "ftol_abs": 0.0, "xtol_rel": 1e-8, "xtol_abs": 1e-8},
    )
    msgs = check_convergence(crit, opt, tm.lower)
    sol = crit.solution(opt.x)
    # log|R_X|² refers to the design used; report the criterion for the user's X (X_s = X S).
    criterion = sol.criterion - (2.0 * np.log(abs(np.linalg.det(S))) if REML else 0.0)
    s2 = sol.sigma**2
    V = S @ (s2 * sol.factor.vcov_beta_unscaled()) @ S.T
    factor = sol.factor
    return Estimates(
        theta=sol.theta,
        beta=S @ sol.beta,
        vcov_beta=V,
        sigma=sol.sigma,
        b=sol.b,
        condvar_fn=partial(_scaled_condvar, factor, s2),
        llf=-0.5 * criterion,
        criterion=criterion,
        method="REML" if REML else "ML",
        nAGQ=1,
        opt=opt,
        lower=tm.lower,
        singular=is_singular(sol.theta, tm.lower),
        convergence=msgs,
        dispersion=s2,
        n_params=len(sol.beta) + len(tm) + 1,
    )
