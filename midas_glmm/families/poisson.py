"""The Poisson family: counts with variance μ, φ = 1."""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import DataError, FitError
from ..linalg import codes
from .base import PositiveMean, ResponseTerms
from .links import EPS

__all__ = ["Poisson", "check_counts"]


def check_counts(y: np.ndarray, name: str, label: str) -> None:
    """Raise unless every value of ``y`` is a whole number ≥ 0."""
    if np.any(y < 0):
        raise DataError(f"{label} response '{name}' has negative values (e.g. {y[y < 0][0]:g}); counts must be >= 0")
    if np.any(np.abs(y - np.round(y)) > 1e-8):
        raise DataError(
            f"{label} response '{name}' has non-integer values (e.g. {y[np.abs(y - np.round(y)) > 1e-8][0]:g})"
        )


class Poisson(PositiveMean):
    """y ~ Poisson(μ): variance μ, φ = 1; lme4's expected information."""

    name = "poisson"
    label = "Poisson"
    default_link = "log"
    canonical_link = "log"
    links = ("log", "identity", "sqrt")
    statsmodels_name = "Poisson"
    agq = True
    canonical_mu_eta_is_variance = True
    zero_inflatable = True
    mean_name = "rate"

    @property
    def kernel_link(self) -> int | None:
        """The compiled PIRLS pass for the canonical log link (:mod:`~midas_glmm.linalg.rowkernels`)."""
        return codes.LOG if self.canonical else None

    def linkinv(self, eta):
        if self.canonical:
            return np.maximum(np.exp(eta), 1e-300)
        return super().linkinv(eta)

    def variance(self, mu, phi=1.0):
        return np.asarray(mu, dtype=float)

    def variance_deriv(self, mu, phi=1.0):
        return np.ones_like(np.asarray(mu, dtype=float))

    def unit_deviance(self, y, mu, phi=1.0):
        return 2.0 * (special.xlogy(y, np.clip(y / mu, EPS, np.inf)) - (y - mu))

    def loglik_constant(self, y, prior, trials):
        return -prior * special.gammaln(y + 1), {"a": prior * y, "b": prior}

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        return terms.const + terms.parts["a"] * np.log(mu) - terms.parts["b"] * mu

    def simulate(self, mu, rng, prior, trials, phi):
        return rng.poisson(mu).astype(float)

    def latent_variance(self, phi: float = 1.0) -> float:
        return 1.0

    def r2_variance(self, sigma: float, null_mean) -> float:
        if self.link_name == "sqrt":
            return 0.25
        if self.link_name != "log":
            raise FitError(f"r2() has no distribution-specific variance for the Poisson {self.link_name} link")
        return float(np.log1p(1.0 / null_mean()))  # the lognormal approximation: log(1 + 1/λ)

    def laplace_cautions(self, group, sizes, totals, events, trials, single):
        if np.median(totals) < 5:
            return [
                f"counts per group of '{group}' are small (median {np.median(totals):g}): the "
                "Laplace approximation may be inaccurate" + ("; compare with nAGQ > 1" if single else "")
            ]
        return []

    def check_support(self, y, name):
        check_counts(y, name, self.label)
