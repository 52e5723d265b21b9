"""glmmTMB's negative binomial families, their dispersion estimated with the model:
``nbinom2`` (variance μ + μ²/θ, size θ) and ``nbinom1`` (variance μ(1 + φ), size μ/φ)."""

from __future__ import annotations

import numpy as np
from scipy import special

from .base import Family, PositiveMean, ResponseTerms
from .links import EPS
from .poisson import Poisson, check_counts
from .special import digamma_difference, lgamma_ratio, trigamma_difference

__all__ = ["NegativeBinomial2", "NegativeBinomial1"]


class NegativeBinomial(PositiveMean):
    """What both negative binomials share: counts, a shape dispersion, glmmTMB's observed
    information, zero-inflation, and Poisson as their limit."""

    label = "negative binomial"
    default_link = "log"
    links = ("log", "cloglog", "identity", "sqrt", "inverse")
    has_dispersion = True
    dispersion_model = True
    laplace_observed = True
    zero_inflatable = True

    def start_family(self):
        """The GLM of NB2 at size 1 (variance μ + μ²) with this link gives the start."""
        return _FixedSize(self.link)

    def nests(self, other: Family) -> bool:
        return isinstance(other, Poisson)

    def loglik_constant(self, y, prior, trials):
        return -prior * special.gammaln(y + 1), {}

    def check_support(self, y, name):
        check_counts(y, name, self.label)


class NegativeBinomial2(NegativeBinomial):
    """glmmTMB's ``nbinom2``: variance μ + μ²/θ, φ = θ the size (glmmTMB's sigma())."""

    name = "nbinom2"
    statsmodels_name = "NegativeBinomial"
    limit = "theta = infinity"
    dispersion_label = "size theta"
    observed_positive_links = ("log",)

    def variance(self, mu, phi=1.0):
        return mu + mu * mu / phi

    def variance_deriv(self, mu, phi=1.0):
        return 1.0 + 2.0 * mu / phi

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        # log Γ(y+θ) − log Γ(θ) − log y! + θ log θ + y log μ − (y+θ) log(θ+μ), with θ log θ − (y+θ) log(θ+μ)
        # written as −θ log1p(μ/θ) − y log(θ+μ): no cancellation of two large terms near the Poisson limit
        y, th = terms.y, phi
        if np.ndim(th) == 0:  # one size for every row: the same at every PIRLS step
            ratio = terms.kept(("lgamma_ratio", float(th)), lambda: lgamma_ratio(y, th))
        else:
            ratio = lgamma_ratio(y, th)
        l1 = np.log1p(mu / th)  # log((θ + μ)/θ), in both terms: log(μ/(θ + μ)) = log μ − log θ − l1
        core = ratio - th * l1
        return terms.prior * (core + y * (np.log(mu) - np.log(th) - l1)) + terms.const

    def log_phi_rows(self, y, mu, eta, prior, phi, derivs=None):
        """(∂ℓ, ∂ℓ', ∂w)/∂ log θ per row (prior-weighted), analytic: with t = θ + μ,
        ∂ℓ/∂θ = ψ(y + θ) − ψ(θ) − log1p(μ/θ) + (μ − y)/t, ℓ' = μ'ℓ_μ with ℓ_μ = (y − μ)/V and
        ∂ℓ_μ/∂θ = (y − μ)/t², w = −(μ''ℓ_μ + μ'²ℓ_μμ) with ∂ℓ_μμ/∂θ = (μ − θ − 2y)/t³."""
        th = phi
        t = th + mu
        d, d2 = self.mu_eta(eta, mu), self.mu_eta2(eta, mu)
        dll = prior * th * (digamma_difference(y, th) - np.log1p(mu / th) + (mu - y) / t)
        dlmu = prior * (y - mu) / (t * t)
        ddl = th * d * dlmu
        dw = -th * (d2 * dlmu + d * d * prior * (mu - th - 2.0 * y) / (t * t * t))
        return dll, ddl, dw

    def unit_deviance(self, y, mu, phi=1.0):
        # 2[y log(y/μ) − (y + θ) log((y + θ)/(μ + θ))]
        th = phi
        return 2.0 * (special.xlogy(y, np.clip(y / mu, EPS, np.inf)) - (y + th) * np.log((y + th) / (mu + th)))

    def simulate(self, mu, rng, prior, trials, phi):
        # size θ, mean μ: numpy's (n, p) = (θ, θ/(θ+μ))
        return rng.negative_binomial(phi, phi / (phi + mu)).astype(float)

    def dispersion_start(self, y, mu, w, mean_deviance):
        """θ by moments of the GLM's residuals, Var = μ + μ²/θ."""
        excess = float(np.sum(w * (y - mu) ** 2 - w * mu))
        return 1e4 if excess <= 0 else float(np.clip(np.sum(w * mu**2) / excess, 1e-2, 1e4))


class NegativeBinomial1(NegativeBinomial):
    """glmmTMB's ``nbinom1``: variance μ(1 + φ), size μ/φ."""

    name = "nbinom1"
    limit = "phi = 0"
    dispersion_label = "phi, variance mu (1 + phi)"
    exact = True
    has_unit_deviance = False

    def variance(self, mu, phi=1.0):
        return mu * (1.0 + phi)

    def variance_deriv(self, mu, phi=1.0):
        return np.full(np.shape(mu), 1.0 + phi)

    def mean_derivatives(self, y, mu, prior, phi, d):
        # size s = μ/φ, p = 1/(1+φ); the expected information is the quasi-likelihood's μ'²/V
        s = mu / phi
        l1 = (digamma_difference(y, s) - np.log1p(phi)) / phi
        l2 = trigamma_difference(y, s) / phi**2
        return l1, l2, prior * d * d / self.variance(mu, phi)

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        # size s = μ/φ: log Γ(y+s) − log Γ(s) − log y! − s log(1+φ) + y log(φ/(1+φ))
        y, sz = terms.y, mu / phi
        core = lgamma_ratio(y, sz) - (sz + y) * np.log1p(phi) + y * np.log(phi)
        return terms.prior * core + terms.const

    def simulate(self, mu, rng, prior, trials, phi):
        # size μ/φ, p = 1/(1+φ): mean μ, variance μ(1+φ)
        return rng.negative_binomial(mu / phi, 1.0 / (1.0 + phi)).astype(float)

    def dispersion_start(self, y, mu, w, mean_deviance):
        """φ by moments of the GLM's residuals, Var = μ(1 + φ)."""
        return float(np.clip(np.sum(w * (y - mu) ** 2 - w * mu) / np.sum(w * mu), 1e-3, 1e3))


class _FixedSize(NegativeBinomial2):
    """NB2 at size θ = 1 (statsmodels' NegativeBinomial(alpha=1)): the GLM that starts NB1."""

    name = "_nbinom_size1"
    statsmodels_name = None

    def start_family(self):
        return self

    def variance(self, mu, phi=1.0):
        return super().variance(mu, 1.0)

    def log_phi_rows(self, y, mu, eta, prior, phi, derivs=None):
        return None  # the size is fixed

    def unit_deviance(self, y, mu, phi=1.0):
        return super().unit_deviance(y, mu, 1.0)
