"""The Gaussian family: N(μ, φ/w), φ = σ². With the identity link the model is an LMM (the
profiled REML/ML engine); with another link it is fitted by Laplace, as glmmTMB's."""

from __future__ import annotations

import numpy as np

from ..errors import FitError
from .base import Family, ResponseTerms

__all__ = ["Gaussian"]


class Gaussian(Family):
    """N(μ, φ/w): variance 1, φ = σ² the residual variance."""

    name = "gaussian"
    label = "Gaussian"
    default_link = "identity"
    canonical_link = "identity"
    links = ("identity", "log", "inverse")
    statsmodels_name = "Gaussian"
    has_dispersion = True
    dispersion_model = True
    residual_scale = True
    # glmmTMB's exact Hessian for a Gaussian model with a link (the identity link goes to the LMM engine)
    laplace_observed = True

    @property
    def is_lmm(self) -> bool:
        """Gaussian with identity link: handled by the LMM engine."""
        return self.link_name == "identity"

    def variance(self, mu, phi=1.0):
        return np.ones_like(np.asarray(mu, dtype=float))

    def variance_deriv(self, mu, phi=1.0):
        return np.zeros_like(np.asarray(mu, dtype=float))

    def unit_deviance(self, y, mu, phi=1.0):
        return (y - mu) ** 2

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        prior = terms.prior
        return -0.5 * (np.log(2 * np.pi * phi / prior) + prior * (terms.y - mu) ** 2 / phi)

    def deviance_residuals(self, y, mu, w, phi):
        return np.sqrt(w) * (y - mu)

    def simulate(self, mu, rng, prior, trials, phi):
        return mu + rng.standard_normal(len(mu)) * np.sqrt(phi) / np.sqrt(prior)

    def latent_variance(self, phi: float = 1.0) -> float:
        return phi

    def r2_variance(self, sigma: float, null_mean) -> float:
        if self.link_name != "identity":
            raise FitError(f"r2() needs the identity link for a Gaussian model, not {self.link_name}")
        return float(sigma**2)
