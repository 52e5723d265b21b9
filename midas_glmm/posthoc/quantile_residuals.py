"""Simulation-based scaled (quantile) residuals, the idea of R's DHARMa (Hartig 2022).

For each row, n responses are simulated from the fitted model with new random effects (lme4's
``simulate()`` default). The residual is where the observed response falls among them:
r_i = P̂(Y_i* < y_i) + U_i·P̂(Y_i* = y_i), U_i ~ Uniform(0, 1) (randomised for discrete
responses, so that ties do not pile up). For a correctly specified model the residuals are
uniform on (0, 1) whatever the family, so one QQ plot against the uniform and one plot against
the predictions read the same way for every model.

Tests (each a simulation-based two-sided p-value unless said):

* uniformity — Kolmogorov–Smirnov against Uniform(0, 1);
* dispersion — the variance of y − ŷ against that of each simulated response (ŷ the mean of the
  simulations per row): the ratio observed / mean simulated, > 1 for overdispersion;
* zero-inflation — the number of zeros observed against that in the simulations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..checks import check_count, make_rng
from .plots import quantile_residuals
from .simulate import simulate

__all__ = ["QuantileResiduals", "simulate_residuals"]


def _two_sided(observed: float, simulated: np.ndarray) -> float:
    """Two-sided p-value of ``observed`` against its simulated distribution."""
    return float(min(1.0, 2 * min(np.mean(simulated >= observed), np.mean(simulated <= observed))))


@dataclass
class QuantileResiduals:
    """Scaled residuals of a fit and the simulations they come from.

    Attributes
    ----------
    residuals : pandas.Series
        In (0, 1); uniform for a correctly specified model.
    simulated : ndarray (nobs × n)
        The simulated responses.
    observed, predicted : ndarray
        The responses and the mean of their simulations.
    """

    residuals: pd.Series
    simulated: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray

    def test_uniformity(self) -> pd.Series:
        """Kolmogorov–Smirnov test of the residuals against Uniform(0, 1)."""
        from scipy import stats  # loaded when asked

        r = stats.kstest(self.residuals.to_numpy(), "uniform")
        return pd.Series({"statistic": float(r.statistic), "pvalue": float(r.pvalue)}, name="uniformity")

    def test_dispersion(self) -> pd.Series:
        """Observed against simulated variance of the responses about their predictions."""
        observed = float(np.var(self.observed - self.predicted))
        simulated = np.var(self.simulated - self.predicted[:, None], axis=0)
        return pd.Series(
            {"ratio": observed / float(np.mean(simulated)), "pvalue": _two_sided(observed, simulated)},
            name="dispersion",
        )

    def test_zero_inflation(self) -> pd.Series:
        """Observed against simulated number of zeros."""
        observed = float(np.sum(self.observed == 0))
        simulated = np.sum(self.simulated == 0, axis=0).astype(float)
        mean = float(np.mean(simulated))
        ratio = observed / mean if mean > 0 else (np.inf if observed > 0 else 1.0)
        return pd.Series({"ratio": ratio, "pvalue": _two_sided(observed, simulated)}, name="zero_inflation")

    def summary(self) -> pd.DataFrame:
        """The three tests, one row each (statistic or ratio, p-value)."""
        u, d, z = self.test_uniformity(), self.test_dispersion(), self.test_zero_inflation()
        return pd.DataFrame(
            {"value": [u["statistic"], d["ratio"], z["ratio"]], "pvalue": [u["pvalue"], d["pvalue"], z["pvalue"]]},
            index=["uniformity (KS statistic)", "dispersion (ratio)", "zero-inflation (ratio)"],
        )

    def plot(self, path=None):
        """QQ plot against the uniform and residuals against the (rank-transformed) predictions."""
        return quantile_residuals(self, path=path)


def simulate_residuals(res, n: int = 250, seed=None) -> QuantileResiduals:
    """:class:`QuantileResiduals` of a fit from ``n`` simulations (:func:`.simulate.simulate`; an
    ordinal model's levels by their positions)."""
    n = check_count(n, "n")
    rng = make_rng(seed)
    sims = simulate(res, n=n, seed=rng, random_effects="marginal")  # on the response's coded scale
    y = np.asarray(res.design.y, dtype=float)
    below = np.mean(sims < y[:, None], axis=1)
    ties = np.mean(sims == y[:, None], axis=1)
    r = below + rng.uniform(size=len(y)) * ties
    index = res.design.row_index
    return QuantileResiduals(pd.Series(r, index=index, name="scaled_resid"), sims, y, sims.mean(axis=1))
