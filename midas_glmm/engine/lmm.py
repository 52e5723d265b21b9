"""The linear mixed model: profiled REML/ML criterion of θ and the estimates at θ.

Following Bates, Mächler, Bolker & Walker (2015, JSS 67(1)), with b = Λ(θ)u, u ~ N(0, σ²I):

* ML deviance     −2ℓ(θ)   = log|L_θ|² + n (1 + log(2π r²_θ / n))
* REML criterion  −2ℓ_R(θ) = log|L_θ|² + log|R_X|² + (n−p)(1 + log(2π r²_θ / (n−p)))

where L_θ is the Cholesky factor of Λ'Z'WZΛ + I, R_X that of the Schur complement for β and
r²_θ the penalised residual sum of squares (minus Σ log wᵢ with prior weights). β̂ and σ̂² are
closed-form given θ. Nothing here touches the rows: everything comes from the
:class:`~midas_glmm.design.blocks.CrossProducts` computed once.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..design.blocks import CrossProducts
from ..design.fixed import column_sums, standardize
from ..design.reterms import ReTerm, ThetaMap, small_crossed
from ..errors import ConvergenceWarning, FitError
from ..linalg.threads import fit_threads
from .controls import current_control
from .estimates import Estimates
from .factor import CLOSED_FORM_MIN_THETA, DenseSystem, Factor, LevelSystem, StagedSystem
from .gradient import profiled_gradient
from .optimize import (
    SINGULAR_TOL,
    OptResult,
    check_convergence,
    fd_derivatives,
    gradient_derivatives,
    gradient_size,
    minimize_bounded,
    newton_step,
    restart_if_unconverged,
)
from .sparsity import FactorPlan, PlanBlocks, small_model

__all__ = ["LMMCriterion", "LMMSolution", "lmm_criterion", "fit_lmm", "optimize_lmm", "lmm_estimates"]


@dataclass
class LMMSolution:
    """Estimates at one θ: β̂, σ̂, spherical and scaled random effects, and the factor."""

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    u: list[np.ndarray]
    b: list[np.ndarray]
    factor: Factor
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
    dense : bool or None
        Factor as one dense block (None: when :func:`~.sparsity.small_model` with fewer than
        :data:`GRADIENT_MIN_THETA` θ or at most :data:`DENSE_MANY_THETA_Q` random effects, and
        for crossed terms up to
        :data:`~midas_glmm.linalg.orderings.SMALL_Q_CROSSED` random effects, λ linear in θ or
        not).

    An evaluation takes a shortcut past the factor object where one exists: the all-dense
    plan's :class:`~.factor.DenseSystem` (one LAPACK Cholesky), a one-term plan's
    :class:`~.factor.LevelSystem` (one or two columns per level, vectorised over the levels), a
    staged plan of one dense stage's :class:`~.factor.StagedSystem` (crossed intercepts); other
    plans, and a shortcut that meets a block that is not positive definite, take the
    :class:`~.factor.Factor`.
    """

    def __init__(
        self,
        terms: list[ReTerm],
        cp: CrossProducts,
        REML: bool,
        log_weights_sum: float = 0.0,
        beta_removed: np.ndarray | None = None,
        response_ss: float | None = None,
        dense: bool | None = None,
    ):
        self.tmap = ThetaMap(terms)
        self.cp = cp
        self.REML = REML
        self.n = cp.n
        self.p = cp.XytXy.shape[0] - 1
        self.ldW = log_weights_sum
        # y − X b was passed over the rows in place of y (b ≈ OLS, so that the penalised residual
        # sum of squares is not a small difference of large numbers); β̂ = β̂(y − Xb) + b.
        self.beta_removed = np.zeros(self.p) if beta_removed is None else beta_removed
        self.response_ss = float(cp.XytXy[-1, -1]) if response_ss is None else response_ss
        if dense is None:  # small, and fitted by BOBYQA (uses_gradient: not on the dense plan)
            cheaper_dense = len(self.tmap) < GRADIENT_MIN_THETA or sum(t.q for t in terms) <= DENSE_MANY_THETA_Q
            # four θ or more: nested terms of more than DENSE_MANY_THETA_Q random effects keep the
            # sparse factor (no fill) and its analytic gradient (1.2x faster there); crossed terms,
            # whose sparse factor has a dense tail and takes BOBYQA too, are cheaper dense, of any
            # number of θ (the maximal model of 30 subjects × 20 items, 100 random effects: 1.6x),
            # up to SMALL_Q_CROSSED (reterms.small_crossed); a structure whose λ is not linear in θ
            # (cs, ar1, toep) alike, on its analytic gradient (crossed cs of 115 random effects:
            # 0.89x, and its first fit compiles nothing)
            dense = (small_model(terms) and cheaper_dense) or small_crossed(terms)
        self.plan = FactorPlan(terms, cp, dense=dense, closed_pairs=True)  # structure: once per model
        self.blocks = self.plan.load(cp)
        # the optimizer's shortcut on the all-dense plan with λ linear in θ (built on first use)
        self._takes_system = not self.plan.Ns and self.tmap.linear and len(self.tmap) > 0
        # ... and on a one-term plan of one or two columns per level (LevelSystem)
        one_term = self.plan.Ns > 0 and (self.plan.diagonal or self.plan.blockdiag)
        self._takes_levels = one_term and int(self.plan.p_term[0]) <= 2
        # ... and on a staged plan of one dense stage and its tail (crossed intercepts: StagedSystem)
        stages = self.plan.stages
        self._takes_stages = stages is not None and len(stages.stages) == 1 and stages.stages[0].dense is not None
        self._system: DenseSystem | LevelSystem | StagedSystem | None = None

    def for_response(self, cp: CrossProducts, beta_removed: np.ndarray, response_ss: float) -> LMMCriterion:
        """The same criterion for another response on the same rows: ``cp`` differs from this
        one's only in the response's row and column of ``[X y]``; the plan (structure) and the
        Z'WZ blocks are shared, nothing is analysed again."""
        other = copy.copy(self)
        other.cp = cp
        other.beta_removed = beta_removed
        other.response_ss = float(response_ss)
        XZ = np.concatenate([xz.T for xz in cp.XytZ], axis=0)
        other.blocks = PlanBlocks(self.blocks.A, np.ascontiguousarray(XZ), cp.XytXy, cp.n)
        return other

    def reweighted(self, cp: CrossProducts, log_weights_sum: float) -> LMMCriterion:
        """The same criterion with other weights on the same rows (a dispersion model's
        σᵢ² ∝ 1/wᵢ): ``cp`` the blocks under those weights, their Σ log w; the plan is shared."""
        other = copy.copy(self)
        other.cp = cp
        other.ldW = float(log_weights_sum)
        other.response_ss = float(cp.XytXy[-1, -1])
        other.blocks = self.plan.load(cp)
        return other

    def factor(self, theta: np.ndarray) -> Factor:
        """L(θ) from the stored cross-products; on the all-dense plan from the system the
        evaluations factor (:class:`DenseSystem`), so that the estimates' criterion is the one the
        optimizer saw at θ."""
        theta = np.asarray(theta, dtype=float)
        system = self._dense_system().system(theta) if self._takes_system else None
        return Factor(self.plan, self.blocks, self.tmap.lams(theta), system)

    def from_factor(self, L: Factor) -> float:
        """The criterion given the factor at θ."""
        return self._criterion(L.logdet_Z, L.logdet_X if self.REML else 0.0, L.pwrss)

    def unprofiled(self, theta: np.ndarray, sigma: float) -> float:
        """The criterion at (θ, σ) without profiling σ out:
        ML log|L|² + n log(2πσ²) + r²/σ²; REML adds log|R_X|² and uses n − p."""
        theta = np.asarray(theta, dtype=float)
        parts = self._parts(theta)
        if parts is None:
            L = self.factor(theta)
            parts = (L.logdet_Z, L.logdet_X, L.pwrss)
        logdet_Z, logdet_X, r2 = parts
        m = self.n - self.p if self.REML else self.n
        extra = logdet_X if self.REML else 0.0
        return logdet_Z + extra + m * np.log(2 * np.pi * sigma**2) + r2 / sigma**2 - self.ldW

    def __call__(self, theta: np.ndarray) -> float:
        theta = np.asarray(theta, dtype=float)
        parts = self._parts(theta)
        if parts is not None:
            return self._criterion(*parts)
        try:
            return self.from_factor(self.factor(theta))
        except np.linalg.LinAlgError:
            return np.inf

    def _parts(self, theta: np.ndarray):
        """(log|L_Z|², log|R_X|², r²) at θ from the plan's own system (all-dense, one term's levels,
        staged), or None where the plan has none (the general Factor then)."""
        if self._takes_system:
            return self._dense_system().logdets(theta)
        if self._takes_levels:
            return self._level_system().logdets(self.tmap.lams(theta)[0])
        if self._takes_stages:
            return self._staged_system().logdets(self.tmap.lams(theta))
        return None

    def _dense_system(self) -> DenseSystem:
        """The all-dense plan's :class:`DenseSystem` for these blocks (built on first use)."""
        system = self._system
        if system is None or system.blocks is not self.blocks:  # for_response/reweighted: new blocks
            system = self._system = DenseSystem(self.plan, self.blocks, self.tmap.jacobian)
        return system

    def _level_system(self) -> LevelSystem:
        """The one-term plan's :class:`LevelSystem` for these blocks (built on first use)."""
        system = self._system
        if system is None or system.blocks is not self.blocks:
            system = self._system = LevelSystem(self.plan, self.blocks)
        return system

    def _staged_system(self) -> StagedSystem:
        """The staged plan's :class:`StagedSystem` for these blocks (built on first use)."""
        system = self._system
        if system is None or system.blocks is not self.blocks:
            system = self._system = StagedSystem(self.plan, self.blocks)
        return system

    def _criterion(self, logdet_Z: float, logdet_X: float, r2: float) -> float:
        """The criterion from log|L_Z|², log|R_X|² and r² (:meth:`from_factor`'s formula)."""
        if r2 <= 0:
            return np.inf
        if self.REML:  # math's log of one float: numpy's costs a few times more per evaluation
            nmp = self.n - self.p
            return logdet_Z + logdet_X + nmp * (1 + math.log(2 * math.pi * r2 / nmp)) - self.ldW
        return logdet_Z + self.n * (1 + math.log(2 * math.pi * r2 / self.n)) - self.ldW

    def dense_derivatives(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(gradient, Hessian) of the criterion in θ in closed form on the all-dense plan
        (:meth:`~.factor.DenseSystem.logdet_derivatives`), or None where there is no such plan or K
        is not positive definite. With K_y = K and K_X = K without y's row and column, log det K_X =
        log|L_Z|² + log|R_X|² and log det K_y − log det K_X = log r², so REML's criterion is
        (1 − b) log det K_X + b log det K_y + const with b = n − p, and ML's log det K_Z +
        n (log det K_y − log det K_X) + const, K_Z the random effects' block."""
        if not self._takes_system:
            return None
        system = self._dense_system()
        N = system.A.shape[0]
        sizes = (N, N - 1) if self.REML else (N, N - 1, system.q)
        found = system.logdet_derivatives(theta, sizes)
        if found is None:
            return None
        (g_y, H_y), (g_x, H_x) = found[:2]
        if self.REML:
            b = self.n - self.p
            return b * g_y + (1 - b) * g_x, b * H_y + (1 - b) * H_x
        g_z, H_z = found[2]
        return g_z + self.n * (g_y - g_x), H_z + self.n * (H_y - H_x)

    def solution(self, theta: np.ndarray) -> LMMSolution:
        """β̂(θ), σ̂(θ) and the random effects at θ."""
        L = self.factor(theta)
        beta_r = L.beta()
        u = L.u(beta_r)
        beta = beta_r + self.beta_removed
        denom = self.n - self.p if self.REML else self.n
        sigma = float(np.sqrt(L.pwrss / denom))
        return LMMSolution(np.asarray(theta, float), beta, sigma, u, L.b(u), L, self.from_factor(L))


def lmm_criterion(
    design, REML: bool, standardize_X: bool = True, fix: tuple[int, float] | None = None, dense: bool | None = None
):
    """The data pass for an LMM: (criterion, S), with β = S β_s for the standardised design.

    ``fix=(j, v)`` holds β_j at v (its column moves into the offset), for profiling β_j; ``dense``
    as :class:`LMMCriterion`'s."""
    if design.source is not None:  # Dask: the blocks were reduced on the workers
        if fix is not None:
            raise FitError(
                "profiling a fixed effect needs another pass over the rows; it is not available for Dask data yet"
            )
        cp, ldW = design.source.cross_products(design.has_prior_weights)
        crit = LMMCriterion(design.terms, cp, REML, ldW, beta_removed=design.source.beta_removed, dense=dense)
        return crit, design.source.S
    X, names, y, gram = design.X, list(design.fixed_names), design.y - design.offset, design.gram
    if fix is not None:
        j, v = fix
        y = y - v * X[:, j]
        X = np.delete(X, j, axis=1)
        del names[j]
        gram = None if gram is None else np.delete(np.delete(gram, j, axis=0), j, axis=1)
    p = X.shape[1]
    shift, scale, S = standardize(X, names, gram) if standardize_X else (np.zeros(p), np.ones(p), np.eye(p))
    w = design.weights if design.has_prior_weights else None
    b = rough_ols(X, y, gram, shift, scale)
    cp = CrossProducts.from_rows(design.terms, X, y, w, shift, scale, beta_removed=b)
    ldW = float(np.sum(np.log(w[w > 0]))) if w is not None else 0.0
    yss = float(y @ y) if w is None else float(y @ (w * y))
    return LMMCriterion(design.terms, cp, REML, ldW, beta_removed=b, response_ss=yss, dense=dense), S


def rough_ols(X, y, gram, shift, scale) -> np.ndarray:
    """OLS coefficients of y on X_s = (X − shift)/scale from X'X, X'y, X'1 and Σy (one pass over
    X besides X'X); y may be n × K (fit_many's batches: p × K coefficients, a column of zeros
    where one is not finite). Removing X_s b from y keeps the numbers the factorisation subtracts
    of the size of the residuals; b need not be exact (any b gives the same fit), only close."""
    G = X.T @ X if gram is None else gram
    return ols_from_sums(G, column_sums(X), X.shape[0], X.T @ y, column_sums(y), shift, scale)


def ols_from_sums(G, s, n, Xty, sy, shift, scale) -> np.ndarray:
    """:func:`rough_ols` from the sums: X'X, X'1, n, X'y and Σy (y may be n × K)."""
    Gs = (G - np.outer(shift, s) - np.outer(s, shift) + n * np.outer(shift, shift)) / np.outer(scale, scale)
    lead = (slice(None),) + (None,) * np.ndim(sy)  # shift and scale along the coefficients
    Xsty = (Xty - shift[lead] * sy) / scale[lead]
    if not len(Xsty):  # no fixed effects (a profile that holds the only one)
        return Xsty
    try:  # column by column: a response's b does not depend on the batch it is in
        b = np.linalg.solve(Gs, Xsty) if Xsty.ndim == 1 else np.column_stack([np.linalg.solve(Gs, v) for v in Xsty.T])
    except np.linalg.LinAlgError:
        return np.zeros(np.shape(Xsty))
    bad = ~np.all(np.isfinite(b.reshape(len(b), -1)), axis=0)
    return np.where(bad, 0.0, b.reshape(len(b), -1)).reshape(np.shape(b))


#: BOBYQA's first trust-region radius from the moment start, and its stopping rules: lme4's
#: (a gain or a step below 1e-8) and a strict one (the trust region down to 1e-8).
START_STEP = 0.1
LME4_STOP = {"ftol_rel": 0.0, "ftol_abs": 1e-8, "xtol_rel": 0.0, "xtol_abs": 1e-8}
STRICT_STOP = {"ftol_rel": 0.0, "ftol_abs": 0.0, "xtol_rel": 1e-8, "xtol_abs": 1e-8}


def ols_fit(cp: CrossProducts) -> tuple[np.ndarray, float]:
    """β̂ and the residual sum of squares of the regression of y on X alone, from X'X, X'y, y'y."""
    beta, rss = _ols_of(cp)
    return beta[:, 0], float(rss[0])


def _kept(cp: CrossProducts, key: tuple, make):
    """``make()``, computed once per CrossProducts and kept on it under ``key``: its blocks do
    not change (another response's, or the same rows under other weights, are a new object)."""
    kept = cp.__dict__.setdefault("_kept", {})
    if key not in kept:
        kept[key] = make()
    return kept[key]


def _ols_of(cp: CrossProducts) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ols_rss` of cp's one response (β̂ as p × 1, the RSS as (1,)), kept on ``cp``: the
    check of the response, the moment start and the estimates all ask."""
    A = cp.XytXy
    k = A.shape[0] - 1
    return _kept(cp, ("ols",), lambda: ols_rss(A[:k, :k], A[None, :k, k], A[None, k, k]))


def moment_start(cp: CrossProducts, tmap: ThetaMap, floor: float = 0.1, residual: float | None = None) -> np.ndarray:
    """A starting θ from one-way ANOVA moments, computed from the cross-products alone.

    With r = y − Xβ̂_OLS, for each term and column a with per-level sums r_l = Σ z_a r and
    n_l = Σ z_a²: SSB = Σ_l r_l²/n_l, MSW = (RSS − SSB)/(n − p − ℓ), and
    σ̂²_a = (SSB − (ℓ−1) MSW) / (Σn_l − Σn_l²/Σn_l). The residual variance is the total less
    the components, kept between ½ and 1 × the smallest MSW (each MSW holds the residual plus
    the other terms); a random intercept nested in another gives up the outer one's σ̂². λ starts
    diagonal at max(σ̂_a/σ̂, ``floor``): a start only, which the optimizer then refines; close
    starts save most of BOBYQA's evaluations on large crossed fits. ``residual``: σ² known (a
    GLMM's working response, 1), λ then σ̂_a/σ.
    """
    k = cp.XytXy.shape[0] - 1
    zy = np.concatenate([XZ[k] for XZ in cp.XytZ])[None, :]
    xy, rr = cp.XytXy[None, :k, k], cp.XytXy[None, k, k]
    return moment_starts(cp, tmap, zy, xy, rr, floor, ols=_ols_of(cp), residual=residual)[0]


def moment_starts(
    cp: CrossProducts,
    tmap: ThetaMap,
    zy: np.ndarray,
    xy: np.ndarray,
    rr: np.ndarray,
    floor=0.1,
    ols=None,
    residual: float | None = None,
):
    """:func:`moment_start` for K responses on the design of ``cp`` at once, each given by its
    own blocks: Z'y (K × q, the terms' columns in order), X'y (K × p) and y'y (K,); ``ols``:
    their :func:`ols_rss` on cp's X'X where the caller has it; ``residual``: σ² known."""
    A = cp.XytXy
    k = A.shape[0] - 1
    n = cp.n
    K = len(rr)
    beta, rss = ols_rss(A[:k, :k], xy, rr) if ols is None else ols
    comps, msw, totals = [], [], []
    covs = {}  # term → (K, p, p) covariance of a vector term's coefficients (level_regressions)
    anova = []  # a random intercept's (between sum of squares, its df, n*)
    residuals = []  # each term's Z_l'r per level (K × ℓ × p), r the OLS residuals
    col = 0
    for t, XZ in zip(tmap.terms, cp.XytZ):
        width = t.nlevels * t.p
        XZx = XZ[:k].reshape(k, t.nlevels, t.p)
        residuals.append(
            zy[:, col : col + width].reshape(K, t.nlevels, t.p) - _sum_products(beta[:, :, None, None], XZx[:, None])
        )
        col += width
    siblings = _sibling_moments(cp, tmap, residuals, rss, n)
    regressions = len({tmap.terms[i].group for i in siblings})  # the levels' regressions done
    for i, (t, ZtZ, r) in enumerate(zip(tmap.terms, cp.ZtZ, residuals)):
        if i in siblings:  # one column of a vector term written as scalar terms: its part of their regressions
            s2, within = siblings[i]
            comps.append(s2)
            totals.append(ZtZ[:, 0, 0].sum()[None] / n)
            if within is not None:
                msw.append(within)
            continue
        # a vector term by its levels' regressions; a random intercept too when it is the only term
        # and balanced (the balanced ANOVA's estimate, REML's: balanced_span)
        by_levels = not t.structured and (t.p > 1 or (len(tmap.terms) == 1 and same_blocks(ZtZ)))
        # the coefficients' spread about the fixed effects' fit: ℓ − q degrees of freedom when X is
        # the term's columns times q level covariates (level_span), else ℓ − 1
        q = (level_span(cp, 0) or 1) if by_levels and len(tmap.terms) == 1 else 1
        inverses = _level_inverses(cp, i) if by_levels and t.p == 2 else None
        vec = level_regressions(ZtZ, r, rss, n, q, inverses) if by_levels else None
        if vec is not None:
            covs[i], within = vec
            regressions += 1
            comps.append(np.maximum(np.diagonal(covs[i], axis1=1, axis2=2), 0.0))
            totals.append(np.array([ZtZ[:, a, a].sum() for a in range(t.p)]) / n)
            msw.append(within)
            continue
        s2, share = np.zeros((K, t.p)), np.zeros(t.p)
        for a in range(t.p):
            nl = ZtZ[:, a, a]
            ok = nl > 0
            tot = nl[ok].sum()
            if tot <= 0:
                continue
            ssb = np.sum(np.ascontiguousarray(r[:, ok, a]) ** 2 / nl[ok], axis=1)  # each row's own sum
            mw = np.maximum(rss - ssb, 0.0) / max(n - k - int(ok.sum()), 1)
            nstar = tot - np.sum(nl[ok] ** 2) / tot
            s2[:, a] = np.maximum(ssb - (ok.sum() - 1) * mw, 0.0) / nstar if nstar > 0 else 0.0
            msw.append(mw)
            share[a] = tot / n
            anova.append((ssb, int(ok.sum()) - 1, nstar))
        comps.append(s2)
        totals.append(share)
    # A factor nested in another (each of its levels inside one level of the other) carries the
    # outer factor's variance in its between-level moments: take it out, outermost first.
    for i in reversed(range(len(comps))):
        for j in range(i + 1, len(comps)):
            if tmap.terms[i].is_intercept and tmap.terms[j].is_intercept:
                M = cp.ZjtZi[(j, i)]  # each of term i's levels meets at most one of term j's
                if np.all(np.bincount(M.indices, minlength=M.shape[1]) <= 1):
                    comps[i] = np.maximum(comps[i] - comps[j], 0.0)
    smallest = np.min(msw, axis=0) if msw else rss / max(n - k, 1)
    if regressions == 1 and len(msw) == 1 and (len(comps) == 1 or len(siblings) == len(comps)):
        # one term (or one factor's scalar terms) by its levels' regressions: σ² is the variance within them
        sigma2 = msw[0]
    else:
        explained = sum(_sum_products(s2.T, t_tot[:, None]) for s2, t_tot in zip(comps, totals))
        sigma2 = np.clip(rss / max(n - k, 1) - explained, 0.5 * smallest, smallest)
    dfe = n - k - sum(df for _, df, _ in anova)
    if len(anova) == len(comps) > 1 and dfe > 0 and balanced_crossed(cp, tmap):
        # crossed random intercepts, balanced: the between sums of squares are orthogonal, so the
        # residual mean square of the main-effects ANOVA is σ²'s (each MSW holds the other terms)
        # and σ_t² = (SSB_t / df_t − MSE) / (n / ℓ_t): the balanced ANOVA's estimates, REML's
        sigma2 = np.maximum(rss - sum(ssb for ssb, _, _ in anova), 0.0) / dfe
        comps = [np.maximum(ssb - df * sigma2, 0.0)[:, None] / nstar for ssb, df, nstar in anova]
    if residual is not None:  # σ² known: the components' own SDs (not the estimated σ̂'s multiples)
        sigma2 = np.full(K, float(residual))
    out = np.tile(tmap.start, (K, 1))
    good = np.isfinite(smallest) & (smallest > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (s2, t, sl) in enumerate(zip(comps, tmap.terms, tmap.slices())):
            lam_diag = np.maximum(np.sqrt(s2 / sigma2[:, None]), floor)  # K × p
            if i in covs:  # λ from the coefficients' covariance, its eigenvalues at least floor² σ²
                rows, cols = t.theta_index
                ok = good & np.all(np.isfinite(covs[i]), axis=(1, 2))
                if t.p == 1:
                    out[ok, sl] = np.sqrt(np.maximum(covs[i][ok, 0] / sigma2[ok, None], floor * floor))
                else:
                    vals, vecs = np.linalg.eigh(covs[i][ok] / sigma2[ok, None, None])
                    floored = (vecs * np.maximum(vals, floor * floor)[:, None, :]) @ vecs.transpose(0, 2, 1)
                    out[ok, sl] = np.linalg.cholesky(floored)[:, rows, cols]
            elif not t.structured:
                rows, cols = t.theta_index
                out[good, sl] = np.where(rows == cols, lam_diag[good][:, rows], 0.0)
            else:  # the structure's parameters of λ = diag(SDs), uncorrelated, SDs at least 1
                # (lme4's start): a correlated structure over one row per level and column is the
                # residual when uncorrelated, so the moments give it too little; from small SDs the
                # correlation runs to ±1, a worse optimum on the boundary (glmmTMB's toep data)
                floor_sd = 1.0 if not t.structure.linear else 0.0
                for i in np.flatnonzero(good):
                    out[i, sl] = t.structure.start(np.maximum(lam_diag[i], floor_sd))
    return out


def _sibling_moments(cp: CrossProducts, tmap: ThetaMap, residuals: list, rss: np.ndarray, n: int) -> dict:
    """The moments of scalar terms over one grouping factor (lme4's ``(x || g)``, ``(1 | g) +
    (0 + x | g)``: a vector term with its correlations left out) from their joint levels'
    regressions (:func:`level_regressions` on the columns together), each term's variance the
    diagonal of Σ: its own one-way ANOVA sees the other columns' variances in its between-level
    sums. Returns {term: (σ̂² (K × 1), the variance within the levels or None)}, the variance
    within given once per factor; empty where no two such terms share a factor or the
    regressions are not determined."""
    groups: dict = {}
    for i, t in enumerate(tmap.terms):
        if t.p == 1 and not t.structured:
            groups.setdefault(t.group, []).append(i)
    out: dict = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        terms = [tmap.terms[j] for j in members]
        first = terms[0]
        if len({tuple(t.columns) for t in terms}) < len(members):
            continue
        # each member's position of every level of the first member: the same where the terms'
        # levels are in the same order, else by label (a later term's levels may be reordered)
        where = [None if t.levels.equals(first.levels) else t.levels.get_indexer(first.levels) for t in terms]
        if any(w is not None and np.any(w < 0) for w in where):
            continue
        m, L = len(members), first.nlevels
        G = np.empty((L, m, m))
        for a, (i, wi) in enumerate(zip(members, where)):
            G[:, a, a] = cp.ZtZ[i][:, 0, 0] if wi is None else cp.ZtZ[i][wi, 0, 0]
            for c, (j, wj) in enumerate(zip(members[:a], where)):
                cross = cp.ZjtZi[(i, j)]  # Z_i'Z_j, term i's levels by term j's
                if wi is None and wj is None:
                    G[:, a, c] = G[:, c, a] = cross.diagonal()
                else:
                    rows, cols = (np.arange(L) if w is None else w for w in (wi, wj))
                    G[:, a, c] = G[:, c, a] = np.asarray(cross[rows, cols]).ravel()
        Zr = np.stack([residuals[i][:, slice(None) if w is None else w, 0] for i, w in zip(members, where)], axis=2)
        found = level_regressions(G, Zr, rss, n)
        if found is None:
            continue
        cov, within = found
        for a, i in enumerate(members):
            out[i] = (np.maximum(cov[:, a, a], 0.0)[:, None], within if a == 0 else None)
    return out


def balanced_crossed(cp: CrossProducts, tmap: ThetaMap) -> bool:
    """Whether the terms are random intercepts crossed in a balanced design: every level of a
    term the same number of rows, and every pair of terms' levels meeting in the same number of
    rows (each cell of their cross-tabulation full and equal), as Penicillin's plates and samples."""
    if len(tmap.terms) < 2 or any(t.p != 1 or t.structured for t in tmap.terms):
        return False
    if not all(same_blocks(Z) for Z in cp.ZtZ):
        return False
    for (j, i), M in cp.ZjtZi.items():
        cells = tmap.terms[j].nlevels * tmap.terms[i].nlevels
        if M.nnz != cells or not np.all(np.abs(M.data - M.data[0]) <= 1e-12 * abs(M.data[0])):
            return False
    return len(cp.ZjtZi) == len(tmap.terms) * (len(tmap.terms) - 1) // 2


def level_span(cp: CrossProducts, i: int) -> int | None:
    """q when every level's fixed-effects rows lie in the span of term ``i``'s columns, X_l =
    Z_l A_l, and the A_l span q dimensions with p q = the number of fixed effects (X is the
    term's columns times q level covariates: ``y ~ t * trt + (t|g)`` with trt constant within
    each g, q = 2; ``y ~ x + (x|g)``, q = 1); else None. From the blocks alone: A_l =
    (Z_l'Z_l)⁻¹Z_l'X_l, and X'X − Σ_l A_l'Z_l'X_l (positive semi-definite) is zero, its trace
    zero, exactly when every X_l lies in Z_l's span. Kept on ``cp`` (the start and the check
    both ask)."""
    return _kept(cp, ("level span", i), lambda: _level_span(cp, i))


def _level_span(cp: CrossProducts, i: int) -> int | None:
    ZtZ = cp.ZtZ[i]
    L, p, _ = ZtZ.shape
    k = cp.XytXy.shape[0] - 1
    if k == 0 or k % p:
        return None
    XZ = cp.XytZ[i][:k].reshape(k, L, p).transpose(1, 2, 0)  # Z_l'X_l, ℓ × p × k
    if p == 2:  # (Z_l'Z_l)⁻¹ in closed form (NaN where singular: the check below then fails)
        with np.errstate(invalid="ignore"):
            A = _level_inverses(cp, i) @ XZ
    else:
        try:
            A = np.linalg.solve(ZtZ, XZ)  # ℓ × p × k
        except np.linalg.LinAlgError:
            return None
    xx = np.diagonal(cp.XytXy)[:k]
    with np.errstate(invalid="ignore"):
        fits = np.abs(xx - np.einsum("lak,lak->k", A, XZ)) <= 1e-9 * np.maximum(xx, 1e-300)
    if not np.all(fits):
        return None
    sv = np.linalg.svd(A.reshape(L, p * k), compute_uv=False)
    q = int(np.sum(sv > 1e-9 * sv[0]))
    return q if p * q == k else None


def _level_inverses(cp: CrossProducts, i: int) -> np.ndarray:
    """(Z_l'Z_l)⁻¹ of term ``i``'s 2 × 2 blocks (:func:`pair_inverse`; not finite where a block is
    singular), kept on ``cp``: the span check and the levels' regressions both use them."""

    def inverses():
        with np.errstate(divide="ignore", invalid="ignore"):
            return pair_inverse(cp.ZtZ[i])

    return _kept(cp, ("level inverses", i), inverses)


def same_blocks(ZtZ: np.ndarray) -> bool:
    """Whether every level's block Z_l'Z_l is the same (a balanced design: each level the same
    rows of the term's columns), to rounding."""
    flat = ZtZ.reshape(len(ZtZ), -1)
    return bool(len(flat)) and bool(np.all(np.abs(flat - flat[0]) <= 1e-12 * np.max(np.abs(flat[0]), initial=1.0)))


#: a level's block Z_l'Z_l counts in :func:`level_regressions` when its smallest eigenvalue is at
#: least this part of its largest (its own regression is determined)
LEVEL_CONDITION = 1e-8


def level_regressions(
    ZtZ: np.ndarray, Zr: np.ndarray, rss: np.ndarray, n: int, between: int = 1, inverses: np.ndarray | None = None
):
    """The covariance of a vector term's coefficients by the levels' own regressions (the
    two-stage moment estimator): b_l = (Z_l'Z_l)⁻¹Z_l'r over the levels whose block is determined,
    s² = (r'r − Σ_l b_l'Z_l'r) / (n − ℓp) within them (the levels' own columns span the fixed
    effects' in the usual random-slope model), and Σ = cov(b_l) − s² mean((Z_l'Z_l)⁻¹), the
    spread of the b_l less their sampling variance. For K responses at once: ``ZtZ`` the levels'
    blocks (ℓ × p × p), ``Zr`` their Z_l'r (K × ℓ × p) with r the OLS residuals, ``rss`` r'r
    (K,) and ``n`` the rows; ``between`` the degrees of freedom the fixed effects take from the
    levels' coefficients (1, the mean; q when X is the term's columns times q level covariates,
    :func:`level_span`), the divisor of their spread ℓ − ``between``; ``inverses``: every
    level's (Z_l'Z_l)⁻¹ of 2 × 2 blocks where the caller has them. Returns (Σ (K × p × p),
    s² (K,)), or None when fewer than p + 1 + ``between`` levels are determined or no degree of
    freedom is left within them. On a balanced
    design (every level the same Z_l) Σ/s² is REML's optimum when it is inside (sleepstudy's);
    elsewhere it starts the search closer than each column's ANOVA, which sees a slope's
    variance in the intercept's."""
    L, p, _ = ZtZ.shape
    if p == 1:  # a random intercept: a level is determined when it has a row
        det = ZtZ[:, 0, 0] > 0
    else:
        ev = pair_eigenvalues(ZtZ) if p == 2 else np.linalg.eigvalsh(ZtZ)[:, [0, -1]]
        det = ev[:, 0] > LEVEL_CONDITION * np.maximum(ev[:, 1], 1e-300)
    Lg = int(det.sum())
    dfw = n - Lg * p
    if Lg < p + 1 + between or dfw < 1:
        return None
    # ℓ × p × p, shared by the responses
    if p == 2:
        Ginv = pair_inverse(ZtZ[det]) if inverses is None else inverses[det]
    else:
        Ginv = 1.0 / ZtZ[det] if p == 1 else np.linalg.inv(ZtZ[det])
    r = Zr[:, det]  # K × ℓ × p
    b = np.einsum("lac,klc->kla", Ginv, r)  # each (response, level) its own small product
    K = len(rss)
    fitted = np.sum(np.ascontiguousarray((b * r).reshape(K, -1)), axis=1)  # each row's own sum
    within = np.maximum(rss - fitted, 0.0) / dfw
    bt = np.ascontiguousarray(b.transpose(0, 2, 1))  # K × p × ℓ: sums along the levels, row by row
    dev = bt - np.sum(bt, axis=2, keepdims=True) / Lg
    cov = np.empty((K, p, p))
    for a in range(p):
        for c in range(a + 1):
            cov[:, a, c] = cov[:, c, a] = np.sum(dev[:, a] * dev[:, c], axis=1) / (Lg - between)
    return cov - within[:, None, None] * Ginv.mean(axis=0), within


def pair_eigenvalues(G: np.ndarray) -> np.ndarray:
    """(smallest, largest) eigenvalue of each symmetric 2 × 2 block of ``G`` (ℓ × 2 × 2), in
    closed form: the largest half the trace + the radius √(((a − c)/2)² + b²), the smallest
    det / largest (not half the trace − the radius, which cancels when it is small; either way its
    error is a rounding of the largest, as LAPACK's); LAPACK's call costs ~0.5 µs a block."""
    s = _extreme_scale(G)
    a, b, c = G[:, 0, 0] / s, G[:, 1, 0] / s, G[:, 1, 1] / s
    big = 0.5 * (a + c) + np.hypot(0.5 * (a - c), b)
    with np.errstate(divide="ignore", invalid="ignore"):
        small = np.where(big > 0, (a * c - b * b) / big, 0.0)
    return np.column_stack([small * s, big * s])


def _extreme_scale(G: np.ndarray) -> np.ndarray:
    """Per 2 × 2 block of ``G``, its largest |entry| where that lies outside [1e-100, 1e100] (the
    determinant, a product of two entries, would under- or overflow: entries of 1e-150), else 1
    (a division by 1 keeps the bits)."""
    s = np.abs(G.reshape(len(G), 4)).max(axis=1, initial=0.0)
    return np.where((s > 0) & ((s < 1e-100) | (s > 1e100)), s, 1.0)


def pair_inverse(G: np.ndarray) -> np.ndarray:
    """The inverse of each 2 × 2 block of ``G`` (ℓ × 2 × 2): [d −b; −c a] / (ad − bc), a block of
    extreme scale taken to a largest entry of 1 first (:func:`_extreme_scale`)."""
    s = _extreme_scale(G)
    H = G / s[:, None, None]
    det = (H[:, 0, 0] * H[:, 1, 1] - H[:, 0, 1] * H[:, 1, 0]) * s  # the inverse's own scale: 1/(det' s)
    out = np.empty_like(G)
    out[:, 0, 0] = H[:, 1, 1] / det
    out[:, 1, 1] = H[:, 0, 0] / det
    out[:, 0, 1] = -H[:, 0, 1] / det
    out[:, 1, 0] = -H[:, 1, 0] / det
    return out


def ols_rss(XX: np.ndarray, xy: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ols_fit` for K responses from X'X, their X'y (K × p) and y'y (K,): β̂ (p × K) and
    the residual sums of squares, response by response (a solve with K right-hand sides would
    round a response differently with the batch it is in)."""
    K, k = xy.shape
    if not k:
        return np.zeros((0, K)), np.maximum(rr, 0.0)
    beta = np.column_stack([np.linalg.lstsq(XX, v, rcond=None)[0] for v in xy])
    return beta, np.maximum(rr - _sum_products(beta, xy.T), 0.0)


def _sum_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ_j a[j] b[j] term by term in order (elementwise over the other axes): the same rounding
    for a response whatever the number of responses beside it (no BLAS kernel chosen by shape)."""
    out = np.zeros(np.broadcast_shapes(a.shape[1:], b.shape[1:]))
    for aj, bj in zip(a, b):
        out += aj * bj
    return out


def _scaled_condvar(factor: Factor, s2: float) -> list[np.ndarray]:
    """σ² Λ(Λ'Z'ZΛ + I)⁻¹Λ' per level: lme4's conditional variances of the random effects."""
    return [s2 * blk for blk in factor.condvar_blocks()]


def fit_lmm(design, REML: bool = True, optimizer: str | None = None, standardize_X: bool = True):
    """Fit a linear mixed model by profiled REML or ML.

    The rows are read once (the cross-products); the optimizer then works on θ alone.

    Returns
    -------
    Estimates
    """

    crit, S = lmm_criterion(design, REML, standardize_X)
    with fit_threads(crit.plan.qt):
        return optimize_lmm(design, crit, S, REML, optimizer)


#: with the default optimizer, θ of at least this length and no dense tail use L-BFGS-B with the
#: analytic gradient: a gradient costs ~3-4 criterion evaluations there; BOBYQA needs 75-150
#: evaluations for five θ (the nested benchmark shapes) where L-BFGS-B needs 12-28 gradients;
#: for three θ the two cost the same, and BOBYQA (lme4's optimizer) stays. With a dense tail
#: the selected inversion costs ~8 evaluations (InstEval: 0.32 s against 0.04 s): BOBYQA too.
GRADIENT_MIN_THETA = 4

#: ... but a small model (sparsity.small_model) of at most this many random effects takes the
#: all-dense plan and BOBYQA whatever its θ: nested slopes `(x | school/class)` of 30-60 random
#: effects 0.68-0.91x, one term of three columns `(x1 + x2 | g)` of 30-39 0.77-0.78x, and their
#: first fits compile nothing (12-13 s on the sparse kernels, ~2.4 s on the level kernels); at 70
#: and 96-100 the sparse plan's gradient was 1.12-1.32x faster (9 alternations in one process)
DENSE_MANY_THETA_Q = 60


def uses_gradient(crit: LMMCriterion, optimizer: str | None) -> bool:
    """Whether θ is optimised by L-BFGS-B with the analytic gradient (see :data:`GRADIENT_MIN_THETA`).

    A structure whose λ is not linear in θ (cs, ar1, toep) always is: at its start (no
    correlation) its SD can be unidentified (ar1 over one row per time and level is the residual
    there), a flat direction in which BOBYQA's quadratic model loses its way to ρ → ±1, while
    the gradient moves the correlation and the SD together (as glmmTMB's quasi-Newton does)."""
    if optimizer == "lbfgsb":
        return True
    if optimizer is None and not crit.tmap.linear:
        return True
    return optimizer is None and crit.plan.qt == 0 and len(crit.tmap) >= GRADIENT_MIN_THETA


def optimize_lmm(design, crit: LMMCriterion, S: np.ndarray, REML: bool, optimizer: str | None):
    """θ̂ from the moment start (BOBYQA, or L-BFGS-B with the analytic gradient), the
    convergence check and the estimates there."""
    tm = crit.tmap
    rss = ols_fit(crit.cp)[1]
    if rss <= 1e-26 * crit.response_ss:  # residual SD below 1e-13 × RMS(y): zero but for rounding
        raise FitError(
            f"the response '{design.response_name}' is an exact linear function of the fixed effects "
            f"(residual sum of squares {rss:.3g}); there is no variance left to estimate: check that the "
            "response is not also a predictor"
        )
    # Start from the ANOVA moments unless lme4's λ = I is better there; the moments are usually
    # close, so the first trust region is narrow.
    ctl = current_control()
    moments = False  # whether θ starts at the moments
    if ctl is not None and ctl.start is not None:  # the user's start (fit(start=)), checked by fit()
        x0, step = np.asarray(ctl.start, dtype=float), START_STEP
        f0 = crit(x0)
    else:
        x0, step = moment_start(crit.cp, tm), START_STEP
        f0, f_lme4 = crit(x0), crit(tm.start)
        moments = f_lme4 >= f0
        if not moments:
            x0, f0, step = tm.start, f_lme4, 0.75
    exact = None
    plain = ctl is None or (ctl.start is None and ctl.maxiter is None and not ctl.verbose)  # the user's controls
    if optimizer is None and plain and moments and balanced_span(crit):
        exact = _verified_start(crit, x0, f0)
    if exact is not None:
        opt, g, H = exact
    elif uses_gradient(crit, optimizer):
        fun_grad = partial(_safe_gradient, crit)
        opt = minimize_bounded(crit, x0, tm.lower, "lbfgsb", fun_grad=fun_grad)
        g, H = gradient_derivatives(fun_grad, opt.x, tm.lower)
    else:
        known = {x0.tobytes(): f0}  # the optimizer's first evaluation is the start's

        def criterion(theta: np.ndarray) -> float:
            theta = np.asarray(theta, dtype=float)
            return known.pop(theta.tobytes()) if theta.tobytes() in known else crit(theta)

        opt = minimize_bounded(criterion, x0, tm.lower, optimizer or "bobyqa", step=step, tolerances=LME4_STOP)
        # lme4's stopping rule can stop early; its convergence check catches that (then BOBYQA goes
        # on from there with a strict rule), and the check's derivatives give a Newton step that
        # takes θ to their precision (exact on the all-dense plan: criterion_derivatives).
        g, H = criterion_derivatives(crit, opt.x, opt.fun)[:2]
        opt, restarted = restart_if_unconverged(
            crit, opt, tm.lower, H, g, optimizer="bobyqa", step=0.05, tolerances=STRICT_STOP
        )
        if restarted:
            g, H = criterion_derivatives(crit, opt.x, opt.fun)[:2]
    if not tm.linear and tm.singular(opt.x, SINGULAR_TOL):
        opt = _other_start(crit, opt, x0, optimizer)
    twin = column_sign_twin(crit, opt)
    if twin is not None:  # a better optimum beyond a random-slope column's bound
        opt = twin
        g, H = criterion_derivatives(crit, opt.x, opt.fun)[:2]
    msgs = check_convergence(crit, opt, tm.lower, hessian=H, gradient=g)
    opt = newton_step(crit, opt, tm.lower, g, H)
    return lmm_estimates(design, crit, S, REML, opt, msgs)


def balanced_span(crit: LMMCriterion) -> bool:
    """Whether the moment start is REML's optimum when it is inside the parameter space: REML and
    a balanced design, either one unstructured term whose levels all have the same block Z_l'Z_l
    with X its columns times level covariates (:func:`level_span`: ``y ~ x + (x|g)``,
    ``y ~ t * trt + (t|g)`` with trt constant within g, ``y ~ 1 + (1|g)``), or random intercepts
    crossed in balance (:func:`balanced_crossed`) with X in every term's columns (the intercept).
    The moments (:func:`level_regressions`, or the main-effects ANOVA of crossed terms) are then
    the balanced ANOVA's estimates, which are REML's."""
    tm, cp = crit.tmap, crit.cp
    if not crit.REML or any(t.structured for t in tm.terms):
        return False
    if len(tm.terms) == 1:  # X the term's columns times level covariates (level_span)
        return crit.p == 0 or (same_blocks(cp.ZtZ[0]) and level_span(cp, 0) is not None)
    if not balanced_crossed(cp, tm):
        return False
    k = crit.p
    XX = np.diag(cp.XytXy)[:k]
    for t, ZtZ, XZ in zip(tm.terms, cp.ZtZ, cp.XytZ):
        if not k:
            break
        ZX = XZ[:k].reshape(k, t.nlevels, t.p).sum(axis=1)  # X'Z summed over the levels
        try:  # X's residual sums of squares on Z's columns, all of them ~0
            resid = XX - np.einsum("ka,ka->k", ZX, np.linalg.solve(ZtZ.sum(axis=0), ZX.T).T)
        except np.linalg.LinAlgError:
            return False
        if not np.all(np.abs(resid) <= 1e-9 * np.maximum(XX, 1e-300)):
            return False
    return True


def criterion_derivatives(crit: LMMCriterion, x: np.ndarray, f0: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(gradient, Hessian, evaluations spent) of the criterion at x (f0 = its value there) for the
    convergence check and the Newton step after it: in closed form where the all-dense plan has
    them (:data:`~.factor.CLOSED_FORM_MIN_THETA` θ or more), else by central differences
    (:func:`~.optimize.fd_derivatives`)."""
    if len(x) >= CLOSED_FORM_MIN_THETA:
        found = crit.dense_derivatives(x)
        if found is not None and np.all(np.isfinite(found[0])) and np.all(np.isfinite(found[1])):
            return found[0], found[1], 0
    g, H = fd_derivatives(crit, x, f0=f0)
    k = len(x)
    return g, H, 2 * k + k * (k - 1)


#: the largest scaled gradient (lme4's measure, :func:`~.optimize.gradient_size`) at which a
#: balanced design's moment start is taken as the optimum, before the Newton step
EXACT_START_TOL = 1e-5


def _verified_start(crit: LMMCriterion, x0: np.ndarray, f0: float):
    """(optimum, gradient, Hessian) at the moment start when the convergence check's derivatives
    confirm it is the optimum (:func:`balanced_span`: the start of a balanced design, inside the
    parameter space), else None. Costs the check's derivatives (:func:`criterion_derivatives`:
    exact on the all-dense plan from three θ, else 2k + k(k − 1) evaluations) instead of BOBYQA's
    tens of evaluations (sleepstudy: one evaluation and the exact derivatives against 62)."""
    g, H, spent = criterion_derivatives(crit, x0, f0)
    if gradient_size(crit, x0, crit.tmap.lower, H, g)[0] > EXACT_START_TOL:
        return None
    said = "the moment start, REML's optimum on a balanced design (checked by its derivatives)"
    return OptResult(np.array(x0, dtype=float), float(f0), 1 + spent, True, said, "moments"), g, H


def _other_start(crit, opt, x0, optimizer):
    """A structured fit that ended on its boundary, run again from lme4's start (or from the
    moments when it began there); the better end is kept. A correlation's range ends in a flat
    asymptote, where a local optimizer can stop far from the optimum inside."""
    tm = crit.tmap
    other = moment_start(crit.cp, tm) if np.array_equal(x0, tm.start) else tm.start
    try:
        if uses_gradient(crit, optimizer):
            cand = minimize_bounded(crit, other, tm.lower, "lbfgsb", fun_grad=partial(_safe_gradient, crit))
        else:
            cand = minimize_bounded(crit, other, tm.lower, optimizer or "bobyqa", step=0.75, tolerances=LME4_STOP)
    except (FitError, np.linalg.LinAlgError):
        return opt
    return cand if cand.fun < opt.fun - 1e-8 else opt


def _safe_gradient(crit, theta):
    """:func:`profiled_gradient`, (∞, 0) where the factorisation fails (a step the optimizer rejects)."""
    try:
        return profiled_gradient(crit, theta)
    except np.linalg.LinAlgError:
        return np.inf, np.zeros(len(crit.tmap))


def column_sign_twin(crit, opt):
    """A better optimum past a multi-column term's boundary, or None.

    A column of λ_t and the same column negated give the same ΛΛ', so when a diagonal element
    is on its bound (0) with entries below it, the point has a twin with those entries negated;
    from one of the two the criterion can fall by moving the diagonal off its bound, which a
    bounded optimizer started on the other side does not see (lme4 stops there too, on some
    data). For each column whose diagonal is on its bound (whatever is below it: with nothing
    below, the point may be a saddle across the bound) the optimizer is run again from the
    negated column with the diagonal moved off the bound, and the best end is kept if lower."""
    tm = crit.tmap
    best = None
    for t, sl in zip(tm.terms, tm.slices()):
        if t.p < 2 or t.structured:  # only lme4's term has a column sign to flip
            continue
        rows, cols = t.theta_index
        theta = np.asarray(opt.x, dtype=float)[sl]
        for c in range(t.p - 1):  # the last column has nothing below its diagonal
            diag = np.flatnonzero((rows == c) & (cols == c))[0]
            below = np.flatnonzero((cols == c) & (rows > c))
            if theta[diag] >= SINGULAR_TOL:
                continue
            x0 = np.array(opt.x, dtype=float)
            x0[sl.start + below] = -theta[below]
            x0[sl.start + diag] = max(0.1 * float(np.max(np.abs(theta[below]), initial=0.0)), 0.01)
            try:
                cand = minimize_bounded(crit, x0, tm.lower, "bobyqa", step=0.05, tolerances=LME4_STOP)
            except (FitError, np.linalg.LinAlgError):
                continue
            if cand.fun < (best.fun if best is not None else opt.fun) - 1e-8:
                best = cand
    return best


def lmm_estimates(design, crit: LMMCriterion, S: np.ndarray, REML: bool, opt, msgs: list[str]):
    """The estimates at the optimizer's θ (``opt.x``), on the user's scale of X: β̂ = S β̂_s,
    σ̂, the random effects, the covariance of β̂ and the criterion; ``msgs`` are the
    convergence messages so far."""
    tm = crit.tmap
    msgs = list(msgs)
    sol = crit.solution(opt.x)
    # log|R_X|² refers to the design used; report the criterion for the user's X (X_s = X S).
    criterion = sol.criterion - (2.0 * np.log(abs(np.linalg.det(S))) if REML else 0.0)
    s2 = sol.sigma**2
    if s2 <= 1e-10 * ols_fit(crit.cp)[1] / max(crit.n - crit.p, 1):
        zero = (
            f"the residual variance is (near) zero (sigma = {sol.sigma:.3g}): the response '{design.response_name}' "
            "is (nearly) constant within the levels of the grouping factors, or the fixed and random effects "
            "fit it exactly, so sigma and the variance components cannot be estimated. Check the response "
            "(is it a group-level variable?) and simplify the random effects"
        )
        if zero not in msgs:  # a fit_many response's full result rebuilt at θ̂ has it already
            msgs.append(zero)
        warnings.warn(zero, ConvergenceWarning, stacklevel=4)
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
        singular=tm.singular(sol.theta, SINGULAR_TOL),
        convergence=msgs,
        dispersion=s2,
        n_params=len(sol.beta) + len(tm) + 1,
    )
