"""The binomial family: successes k of n trials, y = k/n, with the prior weight n (lme4's coding
of 0/1 outcomes, proportions with weights, ``cbind(successes, failures)`` and factors)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import special

from ..errors import DataError, FitError, NonIntegerSuccessesWarning, ResponseLevelsWarning
from ..linalg import codes
from .base import ResponseTerms, UnitMean, observed_levels, shown_levels
from .links import EPS

__all__ = ["Binomial", "bernoulli_variance", "bernoulli_variance_deriv"]


def bernoulli_variance(mu):
    """μ(1 − μ), μ kept inside [ε, 1 − ε]."""
    p = np.clip(mu, EPS, 1.0 - EPS)
    return p * (1.0 - p)


def bernoulli_variance_deriv(mu):
    """1 − 2μ, μ kept inside [ε, 1 − ε]."""
    return 1.0 - 2.0 * np.clip(mu, EPS, 1.0 - EPS)


#: latent-scale residual variance of the binomial links (the seed's π²/3 for the logit)
_LATENT = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}


class Binomial(UnitMean):
    """k ~ Binomial(n, μ): variance μ(1 − μ), φ = 1; lme4's expected information."""

    name = "binomial"
    label = "binomial"
    default_link = "logit"
    canonical_link = "logit"
    links = ("logit", "probit", "cloglog", "loglog", "cauchit", "log", "identity")
    statsmodels_name = "Binomial"
    agq = True
    canonical_mu_eta_is_variance = True
    #: θ̂ over the working moments' θ, the random effects' SDs of eleven logit models (Bernoulli
    #: and 5-20 trials, crossed, slopes; the benchmarks' and the tests'): 1.13-1.38, PQL's known
    #: attenuation for binomial data (Breslow & Lin 1995)
    working_moments_scale = 1.25
    takes_trials = True
    mean_name = "prob"
    checks_separation = True

    @property
    def kernel_link(self) -> int | None:
        """The compiled PIRLS pass for the canonical logit link (:mod:`~midas_glmm.linalg.rowkernels`)."""
        return codes.LOGIT if self.canonical else None

    def linkinv(self, eta):
        if self.canonical:
            return np.clip(special.expit(eta), 1e-15, 1 - 1e-15)
        return super().linkinv(eta)

    def variance(self, mu, phi=1.0):
        return bernoulli_variance(mu)

    def variance_deriv(self, mu, phi=1.0):
        return bernoulli_variance_deriv(mu)

    def unit_deviance(self, y, mu, phi=1.0):
        # 2[y log(y/μ) + (1 − y) log((1 − y)/(1 − μ))], y the proportion of successes
        a = special.xlogy(y, np.clip(y / (mu + 1e-20), EPS, np.inf))
        b = special.xlogy(1.0 - y, np.clip((1.0 - y) / (1.0 - mu + 1e-20), EPS, np.inf))
        return 2.0 * (a + b)

    def start_mean(self, y):
        return (y + 0.5) / 2.0

    def loglik_constant(self, y, prior, trials):
        # successes k = y·n as given: non-integer k (lme4 warns) keep one objective
        n = prior if trials is None else trials
        k = y * n
        pw = np.ones_like(y) if trials is None else prior / np.where(trials > 0, trials, 1)
        if np.all(n == 1.0) and np.all((k == 0.0) | (k == 1.0)):  # 0/1 outcomes: log C(1, k) = 0
            const = np.zeros_like(y, dtype=float)
        else:
            const = pw * (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1))
        return const, {"a": pw * k, "b": pw * (n - k)}

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        # μ is kept inside (0, 1) by linkinv, so the logs are finite
        return terms.const + terms.parts["a"] * np.log(mu) + terms.parts["b"] * np.log1p(-mu)

    def simulate(self, mu, rng, prior, trials, phi):
        n = prior if trials is None else trials
        return rng.binomial(np.round(n).astype(int), mu) / np.where(n > 0, n, 1)

    def latent_variance(self, phi: float = 1.0) -> float:
        return _LATENT.get(self.link_name, np.pi**2 / 3)

    def r2_variance(self, sigma: float, null_mean) -> float:
        if self.link_name not in _LATENT:
            raise FitError(f"r2() has no distribution-specific variance for the binomial {self.link_name} link")
        return float(_LATENT[self.link_name])

    def laplace_cautions(self, group, sizes, totals, events, trials, single):
        notes = []
        hint = "; compare with nAGQ > 1" if single else ""
        med = float(np.median(sizes))
        rate = events / trials
        if med < 10:
            notes.append(
                f"groups of '{group}' are small (median {med:g} trials per group): the Laplace "
                "approximation may be inaccurate" + hint
            )
        if min(rate, 1 - rate) < 0.05:
            notes.append(
                f"events are rare ({min(rate, 1 - rate):.1%} of trials): the Laplace approximation may be inaccurate"
                + hint
            )
        return notes

    def check_support(self, y, name):
        if np.any((y < 0) | (y > 1)):
            bad = y[(y < 0) | (y > 1)][0]
            raise DataError(
                f"binomial response '{name}' has value {bad:g} outside [0, 1]; use 0/1 outcomes, "
                "proportions with weights= trials, or cbind(successes, failures)"
            )

    def code_levels(self, values: pd.Series, name: str, levels=None) -> np.ndarray:
        """A factor response (a pandas Categorical, text) as 0/1, as glm's binomial family codes
        it: the first level is failure (0) and every other level success (1). The levels are the
        categories of a Categorical in their order, or the sorted distinct values of text, less
        those not present (lme4 drops unused levels); ``levels`` gives them when known
        beforehand (all partitions of Dask data). With more than two levels a
        :class:`ResponseLevelsWarning` says how they were coded."""
        levels = observed_levels(values) if levels is None else list(levels)
        shown = shown_levels(levels)
        if len(levels) < 2:
            raise DataError(
                f"binomial response '{name}' has the single level {shown}: there is nothing to contrast it with"
            )
        if len(levels) > 2:
            warnings.warn(
                f"binomial response '{name}' has {len(levels)} levels ({shown}); as in lme4, {levels[0]!r} is "
                "failure and every other level success",
                ResponseLevelsWarning,
                stacklevel=6,
            )
        return (values != levels[0]).to_numpy(dtype=float)

    def warn_noninteger_successes(self, y, prior, trials, name):
        """Warn, as glm and lme4 do, when the successes y·n are not whole numbers.

        The fit then maximises the binomial likelihood extended to real counts (Γ functions for
        the coefficients) — the same objective in PIRLS and in the Laplace likelihood."""
        if y is None:
            return
        n = np.broadcast_to(prior if trials is None else trials, np.shape(y))
        k = y * n
        bad = np.abs(k - np.round(k)) > 1e-7 * np.maximum(1.0, np.abs(k))
        if np.any(bad):
            i = int(np.argmax(bad))
            warnings.warn(
                f"non-integer #successes in the binomial response '{name}' (e.g. {k[i]:g} of {n[i]:g} trials): "
                "the binomial likelihood is extended to real counts, as glm and lme4 do. For proportions, give "
                "the trials as weights= or write cbind(successes, failures); a continuous proportion needs "
                "another family",
                NonIntegerSuccessesWarning,
                stacklevel=4,
            )
