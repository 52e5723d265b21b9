"""Nakagawa's R² for mixed models (Nakagawa & Schielzeth 2013; Johnson 2014; Nakagawa, Johnson
& Schielzeth 2017), with the conventions of R's ``performance::r2_nakagawa`` (insight 0.19).

    marginal R²    = σ²_f / (σ²_f + σ²_r + σ²_ε)
    conditional R² = (σ²_f + σ²_r) / (σ²_f + σ²_r + σ²_ε)

σ²_f is the sample variance of the fixed part Xβ̂; σ²_r = Σ_t (1/n) Σ_i z_ti' Σ_t z_ti over the
random terms that are not observation-level (the intercept's variance, plus the slopes' share at
the observed covariates; slope columns that are not also fixed effects are left out, as there);
σ²_ε is the distribution-specific variance plus the observation-level terms' variance (GLMMs).

One difference from R: for a Poisson log model the intercept-only null model here keeps the
model's offset, while insight's ``update()`` drops an offset written inside the formula (it
keeps one given as ``offset =``); models with an offset in the formula can differ there.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from ..checks import refuse_dispersion_model
from ..engine.pirls import fit_glmm
from ..errors import FitError

__all__ = ["nakagawa"]


def _random_variance(res, terms) -> float:
    """Σ_t mean_i z_ti' Σ_t z_ti over ``terms`` (Johnson 2014)."""
    d = res.design
    fixed = set(d.fixed_names)
    total = 0.0
    for t, Sig in terms:
        keep = [a for a, c in enumerate(t.columns) if c == "(Intercept)" or c in fixed]
        if not keep:
            continue
        Z = t.Zcols[:, keep]
        S = Sig[np.ix_(keep, keep)]
        total += float(np.einsum("ia,ab,ib->", Z, S, Z)) / d.nobs
    return total


def _null_intercept(res) -> float:
    """β̂₀ of the intercept-only model with the same random effects, family, weights and offset."""
    d = res.design
    n = len(d.y)
    ones = np.ones((n, 1))
    null = replace(d, X=ones, fixed_names=["(Intercept)"], gram=np.array([[float(n)]]), fixed_keep=np.array([0]))
    with warnings.catch_warnings():  # the null model's own cautions are not the user's model's
        warnings.simplefilter("ignore")
        est = fit_glmm(null, res.family, nAGQ=1)
    return float(est.beta[0])


def _distribution_variance(res) -> float:
    """σ²_ε of the family (:meth:`Family.r2_variance`); a Poisson log model's needs λ = exp(β̂₀)
    of the intercept-only model, refitted only when asked for."""
    return res.family.r2_variance(res.sigma, lambda: np.exp(_null_intercept(res)))


def nakagawa(res) -> pd.Series:
    """Marginal and conditional R² of a fitted model (see the module docstring)."""
    refuse_dispersion_model(res, "r2()", "Nakagawa's R² needs one residual variance, and this model's differs by row")
    d = res.design
    if d.source is not None:
        raise FitError("r2() needs the rows in memory; it is not available for models fitted on Dask data")
    if d.zi is not None:
        raise FitError(
            "r2() is not defined for zero-inflated models here (Nakagawa's distribution-specific variance "
            "has no zero-inflated form in performance::r2_nakagawa either)"
        )
    fixed = d.X @ res.params.to_numpy()
    var_fixed = float(np.var(fixed, ddof=1)) if len(fixed) > 1 else 0.0
    covs = res.term_covariances()
    pairs = list(zip(d.terms, covs))
    obs = [(t, S) for t, S in pairs if t.nlevels == d.nobs]
    other = [(t, S) for t, S in pairs if t.nlevels != d.nobs]
    var_random = _random_variance(res, other)
    var_resid = _distribution_variance(res) + (0.0 if res.family.is_lmm else _random_variance(res, obs))
    total = var_fixed + var_random + var_resid
    return pd.Series({"marginal": var_fixed / total, "conditional": (var_fixed + var_random) / total}, name="R2")
