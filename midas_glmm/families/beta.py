"""glmmTMB's beta family for proportions 0 < y < 1: mean μ, precision φ, variance μ(1 − μ)/(1 + φ)."""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import DataError
from .base import ResponseTerms, UnitMean
from .special import trigamma

__all__ = ["Beta"]


class Beta(UnitMean):
    """y ~ Beta(μφ, (1 − μ)φ): variance μ(1 − μ)/(1 + φ), φ the precision (glmmTMB's sigma())."""

    name = "beta"
    label = "beta"
    default_link = "logit"
    links = ("logit", "probit", "cloglog", "loglog", "cauchit", "log", "identity")
    has_dispersion = True
    dispersion_model = True
    laplace_observed = True
    exact = True
    has_unit_deviance = False
    zero_in_support = False
    dispersion_label = "precision phi"

    def start_family(self):
        """The binomial GLM with the beta's link gives the start."""
        from .binomial import Binomial

        return Binomial(self.link)

    def variance(self, mu, phi=1.0):
        return mu * (1.0 - mu) / (1.0 + phi)

    def variance_deriv(self, mu, phi=1.0):
        return (1.0 - 2.0 * mu) / (1.0 + phi)

    def pearson_residuals(self, y, mu, w, phi):
        """√w (y − μ)/√(μ(1 − μ)): glmmTMB's, whose beta variance function is μ(1 − μ), the
        precision left out as a GLM's Pearson residuals leave out its scale."""
        return np.sqrt(w / (mu * (1.0 - mu))) * (y - mu)

    def mean_derivatives(self, y, mu, prior, phi, d):
        # a = μφ, b = (1−μ)φ; ℓ_μμ does not involve y, so the expected information is exact
        a, b = mu * phi, (1.0 - mu) * phi
        l1 = phi * (special.digamma(b) - special.digamma(a) + np.log(y) - np.log1p(-y))
        l2 = -(phi**2) * (trigamma(a) + trigamma(b))
        return l1, l2, -prior * d * d * l2

    def loglik_constant(self, y, prior, trials):
        logy, log1my = np.log(y), np.log1p(-y)
        return -prior * (logy + log1my), {"logy": logy, "log1my": log1my}

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        # log Γ(φ) − log Γ(μφ) − log Γ((1−μ)φ) + μφ log y + (1−μ)φ log(1−y) − log y − log(1−y)
        a, b = mu * phi, (1.0 - mu) * phi
        core = (
            special.gammaln(phi)
            - special.gammaln(a)
            - special.gammaln(b)
            + a * terms.parts["logy"]
            + b * terms.parts["log1my"]
        )
        return terms.prior * core + terms.const

    def simulate(self, mu, rng, prior, trials, phi):
        return np.clip(rng.beta(mu * phi, (1.0 - mu) * phi), 1e-12, 1 - 1e-12)

    def dispersion_start(self, y, mu, w, mean_deviance):
        """φ by moments of the GLM's residuals, Var = μ(1 − μ)/(1 + φ)."""
        r2 = w * (y - mu) ** 2
        return float(np.clip(np.sum(w * mu * (1 - mu)) / max(float(np.sum(r2)), 1e-300) - 1.0, 0.1, 1e4))

    def check_support(self, y, name):
        if np.any((y <= 0) | (y >= 1)):
            bad = y[(y <= 0) | (y >= 1)][0]
            raise DataError(
                f"beta response '{name}' has value {bad:g}; the beta family needs 0 < y < 1 strictly. Exact 0s "
                "and 1s need another family (a zero/one-inflated beta, or binomial with trials for proportions "
                "of counts), or a transformation such as (y (n - 1) + 0.5) / n"
            )
