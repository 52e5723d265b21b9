"""Prediction uncertainty: standard errors and intervals of predictions from a fitted model.

On the link scale η = x'β̂ + z'b̂ (+ offset) with

* population level (``random_effects=False``, lme4's ``re.form = NA``): Var = x'V(β̂)x, the
  standard error glmmTMB's ``predict(se.fit = TRUE, re.form = NA)`` reports;
* conditional (``random_effects=True``): Var = x'V(β̂)x + Σ_t z_t'C_t z_t, with C_t the
  conditional covariance of the row's level of term t (``ranef(condvar=True)``), or the term's
  covariance Σ_t for a level the fit did not see (its effect is then unknown, and predicted as
  zero). The covariance between β̂ and b̂ is left out, as in lme4-based prediction intervals
  (``merTools::predictInterval`` does the same).

Mean intervals are η ± z_(1−α/2)·se on the link scale, mapped through the inverse link
(response scale; ``mean_se`` there by the delta method). Gaussian models also get intervals for
a new observation: Var + σ̂², plus Σ_t z_t'Σ_t z_t at population level (a new observation falls
in some group, whose effect is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..checks import check_level, refuse_ordinal
from ..distributions import norm_ppf

__all__ = ["Prediction"]


@dataclass
class Prediction:
    """Link-scale predictions and variances of rows (NaN where a predictor is missing).

    Attributes
    ----------
    linpred, se_link : ndarray
        η and its standard error.
    var_new : ndarray
        The variance a new observation adds on the link scale (σ̂² and, at population level,
        the random effects' variance); Gaussian identity models only, else None.
    """

    linpred: np.ndarray
    se_link: np.ndarray
    var_new: np.ndarray | None
    family: object
    index: pd.Index

    @classmethod
    def of(cls, res, newdata, random_effects: bool) -> Prediction:
        refuse_ordinal(res, "get_prediction()", "predict(newdata, kind='prob') gives each category's probability")
        rows = res.design.replay(newdata, random_effects)
        complete, X, parts = rows.complete, rows.X, rows.terms
        V = res.vcov().to_numpy()
        eta = X @ res.params.to_numpy() + rows.offset
        var = np.einsum("ij,jk,ik->i", X, V, X)
        covs = res.term_covariances()
        condvar = res.estimates.condvar if random_effects else []
        for (_t, Z, pos), b, C, Sig in zip(parts, res.estimates.b, condvar, covs):
            seen = pos >= 0
            eta = eta + np.where(seen, np.einsum("ij,ij->i", Z, b[np.maximum(pos, 0)]), 0.0)
            cond = np.einsum("ia,iab,ib->i", Z, C[np.maximum(pos, 0)], Z)
            var = var + np.where(seen, cond, np.einsum("ia,ab,ib->i", Z, Sig, Z))
        var_new = None
        if res.family.is_lmm:
            # a new observation's residual variance: σ², or σᵢ² of its row under a dispersion model
            var_new = np.full(len(eta), res.sigma**2)
            if res.design.disp is not None:
                var_new = res.dispersion_of_rows(newdata)[complete if newdata is not None else slice(None)] ** 2
            if not random_effects:
                for t, Sig in zip(res.design.terms, covs):
                    Z = res.design.population_columns(t, newdata, complete)
                    var_new = var_new + np.einsum("ia,ab,ib->i", Z, Sig, Z)
        n = len(complete)
        full = np.full(n, np.nan)
        lin, se = full.copy(), full.copy()
        lin[complete], se[complete] = eta, np.sqrt(np.maximum(var, 0.0))
        new = None
        if var_new is not None:
            new = full.copy()
            new[complete] = var_new
        index = res.design.row_index if newdata is None else newdata.index
        return cls(lin, se, new, res.family, index)

    @property
    def predicted_mean(self) -> np.ndarray:
        """Predictions on the response scale."""
        return self.linpred if self.family.is_lmm else self.family.linkinv(self.linpred)

    @property
    def se_mean(self) -> np.ndarray:
        """Standard errors on the response scale (delta method: |dμ/dη|·se)."""
        if self.family.is_lmm:
            return self.se_link
        return np.abs(self.family.mu_eta(self.linpred, self.predicted_mean)) * self.se_link

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """mean, mean_se, mean_ci_lower, mean_ci_upper (and obs_ci_lower, obs_ci_upper for
        Gaussian models) at level 1 − ``alpha``, one row per predicted row."""
        alpha = check_level(alpha, "alpha", "0.05 for 95% intervals")
        z = norm_ppf(1 - alpha / 2)
        lo, hi = self.linpred - z * self.se_link, self.linpred + z * self.se_link
        if not self.family.is_lmm:
            lo, hi = self.family.linkinv(lo), self.family.linkinv(hi)
            lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)  # a decreasing inverse link swaps them
        out = pd.DataFrame(
            {"mean": self.predicted_mean, "mean_se": self.se_mean, "mean_ci_lower": lo, "mean_ci_upper": hi},
            index=self.index,
        )
        if self.var_new is not None:
            sd = np.sqrt(self.se_link**2 + self.var_new)
            out["obs_ci_lower"] = self.linpred - z * sd
            out["obs_ci_upper"] = self.linpred + z * sd
        return out
