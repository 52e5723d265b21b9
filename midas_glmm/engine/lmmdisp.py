"""Gaussian models with a dispersion formula: residual variances log σᵢ² = (X_d γ)ᵢ, or none.

Row i's residual variance σᵢ² = σ²/wᵢ with weights wᵢ = exp(−(X_d B η)ᵢ): an LMM with prior
weights, so the criterion for given η is the weighted LMM's (:class:`~.lmm.LMMCriterion`,
σ² profiled out when the constant is in the span of X_d, as with an intercept or a factor's
levels; B spans the directions of γ that leave the common scale alone). θ and η are optimised
together; γ̂ = Bη̂ + log σ̂²·c on glmmTMB's log σ² scale (X_d c = 1).

What is computed once and what per η: when the rows of X_d take a few distinct values (a factor,
nlme's varIdent) the blocks of [Z X y]'W[Z X y] are kept per value and combined with the weights
of η (no pass over the rows per evaluation); otherwise each η makes one weighted pass.

``dispformula = "~ 0"`` (no residual, glmmTMB's way to write nlme's ``correlation =``) is
fitted exactly, not with glmmTMB's tiny fixed residual: a term whose every row has its own random
effect carries the residual (:class:`~midas_glmm.design.covariance.CarriesResidual`), and the
model is an LMM again (:func:`fit_lmm_without_residual`).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..design.blocks import CrossProducts
from ..design.covariance import CarriesResidual
from ..design.fixed import standardize
from ..errors import FitError
from ..linalg.threads import fit_threads
from .estimates import Estimates
from .lmm import LME4_STOP, LMMCriterion, fit_lmm, optimize_lmm, rough_ols
from .optimize import SINGULAR_TOL, check_convergence, fd_derivatives, minimize_bounded, newton_step

__all__ = ["DispersionLMM", "fit_lmm_dispersion", "fit_lmm_without_residual", "residual_carrier", "MAX_PATTERNS"]

#: at most this many distinct rows of X_d: blocks kept per value (no pass over the rows per η)
MAX_PATTERNS = 64


class DispersionLMM:
    """The REML or ML criterion of a Gaussian model with a dispersion formula, as a function of
    (θ, η); see the module docstring."""

    def __init__(self, design, REML: bool, standardize_X: bool = True):
        if design.source is not None:
            raise FitError("dispersion models are fitted in memory only for now: compute() the Dask DataFrame first")
        self.design, self.REML = design, REML
        Xd = design.disp.X
        c = design.disp.constant_coordinates()
        self.c = c
        self.profiled = c is not None
        if self.profiled:  # B: an orthonormal basis of the directions of γ orthogonal to c
            B = np.linalg.svd(c[None, :])[2][1:].T
        else:
            B = np.eye(Xd.shape[1])
        self.B = B
        self.D = Xd @ B  # log σᵢ² = log σ² + (D η)ᵢ
        X, names, y = design.X, list(design.fixed_names), design.y - design.offset
        p = X.shape[1]
        self.shift, self.scale, self.S = (
            standardize(X, names, design.gram) if standardize_X else (np.zeros(p), np.ones(p), np.eye(p))
        )
        self.prior = design.weights if design.has_prior_weights else np.ones(len(y))
        self.b = rough_ols(X, y, design.gram, self.shift, self.scale)
        self._X, self._y = X, y
        self.patterns, self.inverse = np.unique(np.round(self.D, 12), axis=0, return_inverse=True)
        self.inverse = self.inverse.ravel()
        self.blocks = None
        if len(self.patterns) <= MAX_PATTERNS:
            self.blocks = [self._pass(self.prior * (self.inverse == k)) for k in range(len(self.patterns))]
        self.positive = self.prior > 0
        self.log_prior = float(np.sum(np.log(self.prior[self.positive])))
        self.base = LMMCriterion(design.terms, self._combined(np.zeros(self.D.shape[1])), REML, self.log_prior, self.b)
        self.tmap = self.base.tmap

    def _pass(self, w: np.ndarray) -> CrossProducts:
        return CrossProducts.from_rows(
            self.design.terms, self._X, self._y, w, self.shift, self.scale, beta_removed=self.b
        )

    def weights(self, eta: np.ndarray) -> np.ndarray:
        """wᵢ = priorᵢ·exp(−(Dη)ᵢ): σᵢ² = σ²/wᵢ."""
        return self.prior * np.exp(-(self.D @ eta))

    def _combined(self, eta: np.ndarray) -> CrossProducts:
        if self.blocks is None:
            return self._pass(self.weights(eta))
        factors = np.exp(-(self.patterns @ eta))
        total = None
        for f, cp in zip(factors, self.blocks):
            part = cp.scaled(f)
            total = part if total is None else total + part
        total.n = self.blocks[0].n  # each pattern's pass read every row (the others at weight 0)
        return total

    def criterion(self, eta: np.ndarray) -> LMMCriterion:
        """The weighted LMM criterion of θ at dispersion coordinates η."""
        eta = np.asarray(eta, dtype=float)
        ldW = self.log_prior - float(np.sum((self.D @ eta)[self.positive]))
        return self.base.reweighted(self._combined(eta), ldW)

    def objective(self, par: np.ndarray) -> float:
        """−2ℓ (or the REML criterion) at (θ, η); σ² profiled out when it can be, else 1."""
        k = len(self.tmap)
        crit = self.criterion(par[k:])
        try:
            return crit(par[:k]) if self.profiled else crit.unprofiled(par[:k], 1.0)
        except np.linalg.LinAlgError:
            return np.inf

    def unprofiled(self, theta: np.ndarray, gamma: np.ndarray) -> float:
        """The criterion at (θ, γ) on glmmTMB's scale, σ² not profiled: log σᵢ² = (X_d γ)ᵢ."""
        if self.profiled:
            eta = self.B.T @ gamma
            s = float(self.c @ gamma / (self.c @ self.c))  # log σ²
        else:
            eta, s = gamma, 0.0
        return self.criterion(eta).unprofiled(theta, float(np.exp(0.5 * s)))

    def gamma(self, eta: np.ndarray, sigma: float) -> np.ndarray:
        """γ on glmmTMB's scale (log σᵢ² = (X_d γ)ᵢ) from η and the profiled σ."""
        return self.B @ eta + (2.0 * np.log(sigma) * self.c if self.profiled else 0.0)


def fit_lmm_dispersion(design, REML: bool, optimizer: str | None = None, standardize_X: bool = True) -> Estimates:
    """Fit a Gaussian model with a dispersion formula (see the module docstring): θ from the
    model with one residual variance, then (θ, η) jointly by BOBYQA, the convergence check and a
    Newton step as for an LMM; the dispersion coefficients' covariance from the Hessian of the
    criterion in (θ, γ) with β profiled out (glmmTMB's, which inverts the Hessian with β in it)."""
    dm = DispersionLMM(design, REML, standardize_X)
    tm = dm.tmap
    with fit_threads(dm.base.plan.qt):
        with warnings.catch_warnings():  # a start: the fit's own cautions come at its end
            warnings.simplefilter("ignore")
            start = optimize_lmm(design, dm.base, dm.S, REML, optimizer)
        eta0 = np.zeros(dm.D.shape[1])
        if not dm.profiled:  # the one residual variance as a start of γ: least squares on X_d
            eta0 = np.linalg.lstsq(dm.D, np.full(len(dm.D), 2.0 * np.log(start.sigma)), rcond=None)[0]
        x0 = np.concatenate([start.theta, eta0])
        lower = np.concatenate([tm.lower, np.full(len(eta0), -np.inf)])
        opt = minimize_bounded(dm.objective, x0, lower, optimizer or "bobyqa", step=0.1, tolerances=LME4_STOP)
        g, H = fd_derivatives(dm.objective, opt.x, f0=opt.fun)
        msgs = check_convergence(dm.objective, opt, lower, hessian=H, gradient=g)
        opt = newton_step(dm.objective, opt, lower, g, H)
        return _estimates(dm, design, opt, msgs)


def _estimates(dm: DispersionLMM, design, opt, msgs: list[str]) -> Estimates:
    k = len(dm.tmap)
    theta, eta = opt.x[:k], opt.x[k:]
    crit = dm.criterion(eta)
    sol = crit.solution(theta)
    sigma = sol.sigma if dm.profiled else 1.0
    s2 = sigma**2
    logdet_S = 2.0 * np.log(abs(np.linalg.det(dm.S))) if dm.REML else 0.0
    criterion = (sol.criterion if dm.profiled else crit.unprofiled(theta, 1.0)) - logdet_S
    gamma = dm.gamma(eta, sigma)
    # the covariance of γ̂: the Hessian of the criterion in (θ, γ), σ not profiled (−2ℓ: cov = 2H⁻¹)
    par = np.concatenate([theta, gamma])
    H = fd_derivatives(lambda v: dm.unprofiled(v[:k], v[k:]), par, h=1e-4)[1]
    cov = 2.0 * np.linalg.pinv(H)
    factor = sol.factor
    return Estimates(
        theta=sol.theta,
        beta=dm.S @ sol.beta,
        vcov_beta=dm.S @ (s2 * factor.vcov_beta_unscaled()) @ dm.S.T,
        sigma=sigma,
        b=sol.b,
        condvar_fn=lambda: [s2 * blk for blk in factor.condvar_blocks()],
        llf=-0.5 * criterion,
        criterion=criterion,
        method="REML" if dm.REML else "ML",
        nAGQ=1,
        opt=replace(opt, x=opt.x.copy()),
        lower=dm.tmap.lower,
        singular=dm.tmap.singular(sol.theta, SINGULAR_TOL),
        convergence=msgs,
        dispersion=s2,
        n_params=len(sol.beta) + k + len(gamma),
        disp_params=gamma,
        disp_vcov=cov[k:, k:],
        row_weights=dm.weights(eta),
    )


def residual_carrier(design) -> int:
    """The position of the term that carries the residual of a model without one: the last term
    (in the formula) each of whose rows has its own random effect (one column of 1 per row, no
    two rows on one level and column), e.g. ``ar1(0 + time | subject)`` with one row per subject
    and time."""
    order = [t.label for t in design.terms]
    written = [str(s) for s in design.parsed.random]
    ranked = sorted(range(len(order)), key=lambda i: written.index(order[i]) if order[i] in written else -1)
    for i in reversed(ranked):
        t = design.terms[i]
        Z = np.asarray(t.Zcols)
        unit = (np.count_nonzero(Z, axis=1) == 1) & np.all((Z == 0.0) | (Z == 1.0), axis=1)
        if not unit.all():
            continue
        cells = t.codes * t.p + Z.argmax(axis=1)
        if len(np.unique(cells)) == len(cells):
            return i
    raise FitError(
        "dispformula='~ 0' leaves no residual, so a random-effects term must give every row its own random "
        "effect and carry it: one column per row and one row per level and column, such as ar1(0 + time | g) "
        f"with one row per g and time. None of {', '.join(order)} does; keep the residual (drop dispformula)"
    )


def fit_lmm_without_residual(design, REML: bool, optimizer: str | None = None, standardize_X: bool = True):
    """A Gaussian model with ``dispformula = "~ 0"``: the carrier term
    (:func:`residual_carrier`) takes the residual (its structure wrapped in
    :class:`~midas_glmm.design.covariance.CarriesResidual`) and the model is fitted as an LMM
    whose profiled σ_e² is the carrier's share; its random effects take back the residuals of
    their rows (the model fits every row exactly: no residual is left)."""
    if design.has_prior_weights:
        raise FitError("dispformula='~ 0' leaves no residual for prior weights to scale; drop weights=")
    at = residual_carrier(design)
    terms = list(design.terms)
    carrier = terms[at]
    terms[at] = replace(carrier, cov=CarriesResidual(carrier.structure))
    folded = replace(design, terms=terms)
    est = fit_lmm(folded, REML=REML, optimizer=optimizer, standardize_X=standardize_X)
    # the carrier's random effects at their rows: the engine's plus the residual it carried
    eta = design.X @ est.beta + design.offset
    for t, b in zip(terms, est.b):
        eta = eta + np.einsum("ij,ij->i", np.asarray(t.Zcols), b[t.codes])
    b = [v.copy() for v in est.b]
    col = np.asarray(carrier.Zcols).argmax(axis=1)
    np.add.at(b[at], (carrier.codes, col), design.y - eta)

    def no_condvar():
        raise FitError(
            "conditional variances of the random effects are not available with dispformula='~ 0' yet (the "
            "carrier term holds the residual); ranef() without condvar gives the random effects"
        )

    return replace(est, b=b, condvar_fn=no_condvar, dispersion=0.0, terms=terms, disp_params=None)
