"""The Gamma family: variance φμ², shape w/φ (glmmTMB's ``Gamma``, its sigma() the coefficient
of variation √φ)."""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import DataError
from .base import PositiveMean, ResponseTerms
from .links import EPS

__all__ = ["Gamma"]


class Gamma(PositiveMean):
    """y ~ Gamma(shape w/φ, mean μ): variance φμ²/w; glmmTMB's observed information."""

    name = "gamma"
    label = "Gamma"
    default_link = "inverse"
    canonical_link = "inverse"
    links = ("inverse", "log", "identity")
    statsmodels_name = "Gamma"
    has_dispersion = True
    residual_scale = True
    laplace_observed = True
    zero_in_support = False
    observed_positive_links = ("log",)

    def variance(self, mu, phi=1.0):
        return mu * mu

    def variance_deriv(self, mu, phi=1.0):
        return 2.0 * mu

    def unit_deviance(self, y, mu, phi=1.0):
        ratio = np.clip(y / mu, EPS, np.inf)
        return 2.0 * ((y - mu) / mu - np.log(ratio))

    def loglik_constant(self, y, prior, trials):
        logy = np.log(y)
        return -logy, {"logy": logy}

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        # ν log ν − log Γ(ν) + ν(log y − log μ − y/μ) − log y, ν = w/φ the shape; the first two
        # terms do not involve μ: with one φ for every row, kept for the next PIRLS steps
        if np.ndim(phi) == 0:
            shape, part = terms.kept(("shape", float(phi)), lambda: _shape_terms(terms.prior / phi))
        else:
            shape, part = _shape_terms(terms.prior / phi)
        return part + shape * (terms.parts["logy"] - np.log(mu) - terms.y / mu) + terms.const

    def log_phi_rows(self, y, mu, eta, prior, phi, derivs=None):
        """(∂ℓ, ∂ℓ', ∂w)/∂ log φ per row, analytic: with the shape ν = w/φ, ∂ℓ/∂ log φ =
        −ν(log ν + 1 + log(y/μ) − y/μ − ψ(ν)); ℓ' and w are proportional to 1/φ, so their
        derivatives are −ℓ' and −w (the caller's ``derivs``, else computed here)."""
        shape = prior / phi
        dll = -shape * (np.log(shape) + 1.0 + np.log(y / mu) - y / mu - special.digamma(shape))
        if derivs is None:
            score, obs, _ = self.eta_derivatives(y, mu, eta, phi, expected=False)
            derivs = (prior * score, prior * obs)
        return dll, -derivs[0], -derivs[1]

    def simulate(self, mu, rng, prior, trials, phi):
        shape = prior / phi
        return rng.gamma(shape, mu / shape)

    def latent_variance(self, phi: float = 1.0) -> float:
        return phi

    def check_support(self, y, name):
        if np.any(y <= 0):
            raise DataError(
                f"Gamma response '{name}' has non-positive values (e.g. {y[y <= 0][0]:g}); Gamma needs y > 0"
            )


def _shape_terms(shape):
    """(ν, ν log ν − log Γ(ν)): the shape ν = w/φ and the part of a Gamma log-density it alone sets."""
    return shape, shape * np.log(shape) - special.gammaln(shape)
