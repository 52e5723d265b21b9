"""Response families: statsmodels' variance, link and deviance, plus what a GLMM needs on top.

:func:`resolve_family` turns ``"binomial"``, ``"poisson"``, ``"gamma"``, ``"gaussian"`` or a
statsmodels family instance (with any of its links) into a :class:`Family`. The Laplace engine
uses

* the conditional log-likelihood  log f(y | μ, φ) summed over rows with prior weights,
* the working weights for PIRLS, w·(dμ/dη)² / (φ·V(μ)), and their observed-information version
  (which adds −(y−μ)·∂/∂η[(dμ/dη)/V(μ)]·w/φ and equals the former for canonical links),
* the latent-scale residual variance used by the ICC (the seed's table).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import special

from .errors import DataError, FamilyError, FitError, NonIntegerSuccessesWarning, ResponseLevelsWarning

__all__ = ["Family", "ResponseTerms", "resolve_family", "family"]

_NAMES = {
    "gaussian": sm.families.Gaussian,
    "binomial": sm.families.Binomial,
    "poisson": sm.families.Poisson,
    "gamma": sm.families.Gamma,
    "nbinom2": lambda: sm.families.NegativeBinomial(link=sm.families.links.Log(), alpha=1.0),
    "nbinom1": lambda: _Named(sm.families.NegativeBinomial(link=sm.families.links.Log(), alpha=1.0), "nbinom1"),
    "beta": lambda: _Named(sm.families.Binomial(link=sm.families.links.Logit()), "beta"),
}


def trigamma(x: np.ndarray) -> np.ndarray:
    """ψ'(x) for x > 0 (NaN elsewhere), compiled (:func:`~midas_glmm.rowkernels.trigamma`):
    scipy's polygamma(1, x) goes through the Hurwitz zeta function and was most of an NB1 or
    beta PIRLS step."""
    from .rowkernels import trigamma as compiled

    x = np.asarray(x, dtype=float)
    flat = np.ascontiguousarray(x).ravel()
    out = np.empty_like(flat)
    compiled(flat, out)
    return out.reshape(x.shape)


#: above this size the log-gamma and digamma differences take their asymptotic forms
_LARGE = 30.0


def lgamma_ratio(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """log Γ(y + s) − log Γ(s), for s > 0 and y ≥ 0, without the cancellation of two numbers near
    s log s when s is large (NB2's θ, NB1's μ/φ near the Poisson limit): Stirling's
    series as (s − ½) log1p(y/s) + y log(s + y) − y + c(s + y) − c(s) (s ≥ 30), with
    c(x) = 1/(12x) − 1/(360x³) + 1/(1260x⁵) − 1/(1680x⁷) (error below 1e-12)."""
    return _by_size(y, s, lambda y, s: special.gammaln(y + s) - special.gammaln(s), _lgamma_asymptotic)


def digamma_difference(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ψ(y + s) − ψ(s), for s > 0 and y ≥ 0, accurate for large s: the asymptotic
    series log1p(y/s) − [d(s + y) − d(s)] for s ≥ 30, d(x) = 1/(2x) + 1/(12x²) − 1/(120x⁴) + 1/(252x⁶) − 1/(240x⁸)."""
    return _by_size(
        y,
        s,
        lambda y, s: special.digamma(y + s) - special.digamma(s),
        lambda y, s: np.log1p(y / s) - (_digamma_tail(s + y) - _digamma_tail(s)),
    )


def trigamma_difference(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ψ'(y + s) − ψ'(s), for s > 0 and y ≥ 0, accurate for large s (NB1's l_μμ as φ → 0, where
    the two terms agree to all their digits): for s ≥ 30, with t = s + y, the series' first two
    terms as exact differences, −y/(st) − y(s + t)/(2s²t²), plus the difference of the rest,
    1/(6x³) − 1/(30x⁵) + 1/(42x⁷) − 1/(30x⁹)."""
    return _by_size(y, s, lambda y, s: trigamma(y + s) - trigamma(s), _trigamma_asymptotic)


def _by_size(y, s, small, large):
    """``small(y, s)`` where s < 30 and ``large(y, s)`` elsewhere, each only on its own rows."""
    y, s = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(s, dtype=float))
    big = s >= _LARGE
    with np.errstate(all="ignore"):
        if not big.any():
            return small(y, s)
        if big.all():
            return large(y, s)
        out = np.empty(s.shape)
        out[big] = large(y[big], s[big])
        out[~big] = small(y[~big], s[~big])
    return out


def _lgamma_asymptotic(y, s):
    t = s + y
    return (s - 0.5) * np.log1p(y / s) + y * np.log(t) - y + _stirling_tail(t) - _stirling_tail(s)


def _trigamma_asymptotic(y, s):
    t = s + y
    return -y / (s * t) - y * (s + t) / (2.0 * s * s * t * t) + (_trigamma_tail(t) - _trigamma_tail(s))


def _trigamma_tail(x):
    r = 1.0 / (x * x)
    return (r / x) * (1.0 / 6.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r / 30.0)))


def _stirling_tail(x):
    r = 1.0 / (x * x)
    return (1.0 / x) * (1.0 / 12.0 - r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r / 1680.0)))


def _digamma_tail(x):
    r = 1.0 / (x * x)
    return 0.5 / x + r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r / 240.0)))


class _Named:
    """A statsmodels family standing in for one statsmodels does not have (its link, and its name
    for us): NB1 uses NegativeBinomial's log link, beta Binomial's logit link."""

    def __init__(self, base, name: str):
        self.base, self.name = base, name
        self.link = base.link

    def __getattr__(self, attr):
        if attr == "base" or attr.startswith("__"):  # not yet set (unpickling, copying): no recursion
            raise AttributeError(attr)
        return getattr(self.base, attr)


#: families whose log-likelihood's derivatives in μ are not those of an exponential dispersion
#: family: their PIRLS score and information come from :meth:`Family.derivatives`
EXACT = ("nbinom1", "beta")
#: families whose φ is a parameter of the distribution reported as glmmTMB's sigma(): NB2's size θ,
#: NB1's φ (variance μ(1+φ)), beta's precision φ (variance μ(1−μ)/(1+φ)); no residual SD
SHAPE_DISPERSION = ("nbinom2", "nbinom1", "beta")
_LINK_NAMES = {
    "Identity": "identity",
    "Logit": "logit",
    "Probit": "probit",
    "CLogLog": "cloglog",
    "Log": "log",
    "InversePower": "inverse",
    "Sqrt": "sqrt",
    "Cauchy": "cauchit",
    "LogLog": "loglog",
    "InverseSquared": "1/mu^2",
}
_CANONICAL = {
    "gaussian": "identity",
    "binomial": "logit",
    "poisson": "log",
    "gamma": "inverse",
    "nbinom2": None,
    "nbinom1": None,
    "beta": None,
}
#: statsmodels' class name → our family name (NB2's size θ is estimated, so its alpha is not used)
_CLASS_NAMES = {"negativebinomial": "nbinom2"}


class Family:
    """A response family with its link, wrapping a statsmodels family.

    Attributes
    ----------
    name : str
        ``"gaussian"``, ``"binomial"``, ``"poisson"`` or ``"gamma"``.
    link_name : str
        R's name of the link (``"logit"``, ``"log"``, ...).
    sm : statsmodels family instance
    has_dispersion : bool
        True when φ is estimated (Gaussian, Gamma); False when φ = 1.
    """

    def __init__(self, smfamily):
        self.sm = smfamily
        cls = smfamily.name if isinstance(smfamily, _Named) else type(smfamily).__name__.lower()
        if cls == "negativebinomial" and getattr(smfamily, "alpha", 1.0) != 1.0:
            raise FamilyError(
                f"a fixed negative binomial alpha ({smfamily.alpha:g}) is not supported: the dispersion is estimated. "
                "Use family='nbinom2' (variance mu + mu^2/theta) or 'nbinom1'"
            )
        cls = _CLASS_NAMES.get(cls, cls)
        if cls not in _NAMES:
            raise FamilyError(
                f"family {type(smfamily).__name__} is not supported; use binomial, poisson, gamma, nbinom2 or gaussian"
            )
        self.name = cls
        self.link = smfamily.link
        self.link_name = _LINK_NAMES.get(type(self.link).__name__, type(self.link).__name__.lower())
        # φ: the Gaussian and Gamma scale; NB2's size θ (variance μ + μ²/θ), glmmTMB's sigma()
        self.has_dispersion = cls in ("gaussian", "gamma") + SHAPE_DISPERSION
        # φ a residual scale (Gaussian, Gamma: σ = √φ, a Residual row in varcorr), or a shape
        # parameter of the distribution reported as it is (NB2's θ, NB1's φ, beta's precision)
        self.residual_scale = cls in ("gaussian", "gamma")
        self.exact = cls in EXACT
        self.canonical = _CANONICAL[cls] == self.link_name
        # Information matrix in the Laplace log-determinant, as the peer we follow for the family:
        # lme4 (expected/Fisher) for binomial and Poisson, glmmTMB (observed) for Gamma, NB2 and
        # Gaussian with a non-identity link (the identity link goes to the LMM engine).
        # The two coincide for canonical links.
        self.laplace_observed = cls in ("gamma", "gaussian") + SHAPE_DISPERSION
        # the observed information is positive in every row (NB2 and Gamma with the log link), so
        # Newton steps take it too and their last system is the Laplace one
        self.observed_positive = self.link_name == "log" and cls in ("nbinom2", "gamma")
        # the inverse link maps every η into the family's range (no step can leave its domain)
        self.whole_line_link = self.link_name in ("log", "logit", "probit", "cloglog", "loglog", "cauchit")

    def __repr__(self) -> str:
        return f"Family({self.name}, link={self.link_name})"

    @property
    def is_lmm(self) -> bool:
        """Gaussian with identity link: handled by the LMM engine."""
        return self.name == "gaussian" and self.link_name == "identity"

    # --- link
    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """μ = g⁻¹(η), kept inside the family's range."""
        if self.canonical and self.name == "binomial":
            return np.clip(special.expit(eta), 1e-15, 1 - 1e-15)
        if self.canonical and self.name == "poisson":
            return np.maximum(np.exp(eta), 1e-300)
        mu = self.link.inverse(eta)
        if self.name in ("binomial", "beta"):
            mu = np.clip(mu, 1e-15, 1 - 1e-15)
        elif self.name in ("poisson", "gamma", "nbinom2", "nbinom1"):
            mu = np.maximum(mu, 1e-300)
        return mu

    def mu_eta(self, eta: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        """dμ/dη; from μ = g⁻¹(η) when given and the link is logit (μ(1−μ)) or log (μ)."""
        if mu is not None and self.link_name == "logit":
            return mu * (1.0 - mu)
        if mu is not None and self.link_name == "log":
            return mu
        return self.link.inverse_deriv(eta)

    def variance(self, mu: np.ndarray, phi: float = 1.0) -> np.ndarray:
        """V(μ) (NB2: μ + μ²/θ with θ = ``phi``; the other families' φ scales V outside)."""
        if self.name == "nbinom2":
            return mu + mu * mu / phi
        if self.name == "nbinom1":
            return mu * (1.0 + phi)
        if self.name == "beta":
            return mu * (1.0 - mu) / (1.0 + phi)
        return self.sm.variance(mu)

    def _scale(self, phi: float) -> float:
        """The φ that divides the working weights: NB and beta's φ sits inside V(μ) instead."""
        return phi if self.residual_scale else 1.0

    def sigma_of(self, phi: float) -> float:
        """What ``res.sigma`` reports for dispersion φ: √φ for a residual scale, φ itself for a
        shape parameter (glmmTMB's ``sigma()`` in both cases)."""
        return float(np.sqrt(phi)) if self.residual_scale else float(phi)

    def dispersion_of(self, sigma: float) -> float:
        """The dispersion φ whose :meth:`sigma_of` is ``sigma``."""
        return sigma**2 if self.residual_scale else sigma

    def derivatives(self, y, mu, eta, prior, phi):
        """(score, observed information, expected information) of log f in η, row by row, for
        the families of :data:`EXACT`: ∂ℓ/∂η = μ'ℓ_μ, −∂²ℓ/∂η² = −(μ''ℓ_μ + μ'²ℓ_μμ); the
        expected one is beta's exactly (its ℓ_μμ does not involve y) and NB1's quasi-likelihood
        μ'²/V."""
        d = self.mu_eta(eta, mu)
        d2 = self.link.inverse_deriv2(eta)
        if self.name == "nbinom1":  # size s = μ/φ, p = 1/(1+φ)
            s = mu / phi
            l1 = (digamma_difference(y, s) - np.log1p(phi)) / phi
            l2 = trigamma_difference(y, s) / phi**2
            expected = prior * d * d / self.variance(mu, phi)
        else:  # beta: a = μφ, b = (1−μ)φ
            a, b = mu * phi, (1.0 - mu) * phi
            l1 = phi * (special.digamma(b) - special.digamma(a) + np.log(y) - np.log1p(-y))
            l2 = -(phi**2) * (trigamma(a) + trigamma(b))
            expected = -prior * d * d * l2
        score = prior * d * l1
        observed = -prior * (d2 * l1 + d * d * l2)
        return score, observed, expected

    def eta_derivatives(self, y, mu, eta, phi):
        """(score, observed information, expected information) of one row's log f in η, without
        prior weights, for any family but binomial: :meth:`derivatives` for those of
        :data:`EXACT`; μ'(y − μ)/(φV), the observed and the Fisher weight for the others."""
        if self.exact:
            return self.derivatives(y, mu, eta, 1.0, phi)
        score = self.mu_eta(eta, mu) * (y - mu) / (self.variance(mu, phi) * self._scale(phi))
        return score, self.weights(y, mu, eta, 1.0, phi, observed=True), self.weights(y, mu, eta, 1.0, phi)

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """η = g(μ)."""
        return self.link(mu)

    # --- PIRLS weights
    def weights(self, y, mu, eta, prior, phi=1.0, observed=False):
        """Working weights: Fisher w·μ'²/(φV), or the observed information of η when asked.
        For the canonical logit and log links μ'= V(μ), so the Fisher weight is w·V(μ)/φ."""
        if self.canonical and self.name in ("binomial", "poisson"):
            return prior * self.mu_eta(eta, mu) / phi
        d = self.mu_eta(eta, mu)
        V = self.variance(mu, phi)
        scale = self._scale(phi)
        w = prior * d * d / (V * scale)
        if observed and not self.canonical:
            d2 = self.link.inverse_deriv2(eta)
            dV = 1.0 + 2.0 * mu / phi if self.name == "nbinom2" else self.sm.variance.deriv(mu)
            # −∂²/∂η² of log f = w μ'²/(φV) − w (y−μ)(μ''/V − μ'² V'/V²)/φ
            w = w - prior * (y - mu) * (d2 / V - d * d * dV / V**2) / scale
        return w

    # --- likelihood
    def loglik(self, y, mu, prior, phi=1.0, trials=None) -> float:
        """Σ log f(yᵢ | μᵢ, φ): binomial on the count scale, Gamma with shape w/φ."""
        return ResponseTerms(self, y, prior, trials).total(mu, phi)

    def _sm_at(self, phi: float):
        """statsmodels' family at this φ (NB2: alpha = 1/θ; the others do not depend on it)."""
        if self.name == "nbinom2":
            return sm.families.NegativeBinomial(link=self.link, alpha=1.0 / phi)
        if self.name in EXACT:
            raise FitError(
                f"deviance residuals and lme4's deviance() are not defined here for the {self.name} family "
                "(it is not an exponential family with a unit deviance); use resid_pearson or the log-likelihood"
            )
        return self.sm

    def deviance(self, y, mu, prior, phi: float = 1.0) -> float:
        """Σ wᵢ d(yᵢ, μᵢ): the unit deviance of statsmodels' family (NB2 at its θ = ``phi``)."""
        return float(self._sm_at(phi).deviance(y, mu, var_weights=prior))

    def resid_dev(self, y, mu, prior, phi: float = 1.0) -> np.ndarray:
        """Signed deviance residuals (NB2 at its θ = ``phi``)."""
        return self._sm_at(phi).resid_dev(y, mu, var_weights=prior)

    def latent_variance(self, phi: float = 1.0) -> float:
        """Latent-scale residual variance for the ICC (the seed's table and its analogues)."""
        if self.name == "binomial":
            return {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}.get(self.link_name, np.pi**2 / 3)
        if self.name == "poisson":
            return 1.0
        if self.name == "gamma":
            return phi
        if self.name in SHAPE_DISPERSION:
            raise FitError(
                f"the latent-scale residual variance of a {self.name} model depends on the mean; "
                f"icc() and design_effect() are not available for {self.name} yet"
            )
        return phi

    def code_levels(self, values: pd.Series, name: str, levels=None) -> np.ndarray:
        """A response that is not numbers (a pandas Categorical, text) as 0/1, as lme4 codes it.

        Binomial only (as glm's binomial family does with a factor): the first level is failure
        (0) and every other level success (1). The levels are the categories of a Categorical in
        their order, or the sorted distinct values of text, less those not present (lme4 drops
        unused levels); ``levels`` gives them when known beforehand (all partitions of Dask
        data). With more than two levels a :class:`ResponseLevelsWarning` says how they were
        coded. Other families raise a :class:`DataError`.
        """
        levels = observed_levels(values) if levels is None else list(levels)
        shown = ", ".join(repr(v) for v in levels[:4]) + (", ..." if len(levels) > 4 else "")
        if self.name != "binomial":
            raise DataError(
                f"response '{name}' is not numeric (levels {shown}); a {self.name} response must be "
                "numbers; for a two-level outcome use family='binomial' (first level = failure, as in lme4)"
            )
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

    def warn_noninteger_successes(self, y: np.ndarray, prior: np.ndarray, trials, name: str) -> None:
        """Warn, as glm and lme4 do, when a binomial response's successes y·n are not whole numbers.

        The fit then maximises the binomial likelihood extended to real counts (Γ functions for
        the coefficients) — the same objective in PIRLS and in the Laplace likelihood."""
        if self.name != "binomial" or y is None:
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

    def check_response(self, y: np.ndarray, name: str, trials=None) -> None:
        """Raise if ``y`` is outside the family's support, or constant."""
        if self.name == "binomial":
            if np.any((y < 0) | (y > 1)):
                bad = y[(y < 0) | (y > 1)][0]
                raise DataError(
                    f"binomial response '{name}' has value {bad:g} outside [0, 1]; use 0/1 outcomes, "
                    "proportions with weights= trials, or cbind(successes, failures)"
                )
        elif self.name == "beta":
            if np.any((y <= 0) | (y >= 1)):
                bad = y[(y <= 0) | (y >= 1)][0]
                raise DataError(
                    f"beta response '{name}' has value {bad:g}; the beta family needs 0 < y < 1 strictly. Exact 0s "
                    "and 1s need another family (a zero/one-inflated beta, or binomial with trials for proportions "
                    "of counts), or a transformation such as (y (n - 1) + 0.5) / n"
                )
        elif self.name in ("poisson", "nbinom2", "nbinom1"):
            label = {"poisson": "Poisson", "nbinom2": "negative binomial", "nbinom1": "negative binomial"}[self.name]
            if np.any(y < 0):
                raise DataError(
                    f"{label} response '{name}' has negative values (e.g. {y[y < 0][0]:g}); counts must be >= 0"
                )
            if np.any(np.abs(y - np.round(y)) > 1e-8):
                raise DataError(
                    f"{label} response '{name}' has non-integer values (e.g. {y[np.abs(y - np.round(y)) > 1e-8][0]:g})"
                )
        elif self.name == "gamma":
            if np.any(y <= 0):
                raise DataError(
                    f"Gamma response '{name}' has non-positive values (e.g. {y[y <= 0][0]:g}); Gamma needs y > 0"
                )
        if len(y) > 1 and np.all(y == y[0]):
            raise DataError(
                f"response '{name}' is constant ({y[0]:g} in every row): there is nothing to model (lme4's "
                "'Response is constant'; a binomial or Poisson fit would run off to infinity)"
            )


def observed_levels(values: pd.Series) -> list:
    """Levels of a factor response, as R's factor() orders them: a Categorical's categories in
    order, text sorted; levels without a row are left out."""
    present = values.dropna().unique()
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present)
        return [c for c in values.cat.categories if c in seen]
    try:
        return sorted(present)
    except TypeError:  # mixed kinds of values: order them by their text
        return sorted(present, key=str)


#: links by R's names, for :func:`family`
_LINKS = {
    "log": sm.families.links.Log,
    "logit": sm.families.links.Logit,
    "probit": sm.families.links.Probit,
    "cloglog": sm.families.links.CLogLog,
    "loglog": sm.families.links.LogLog,
    "cauchit": sm.families.links.Cauchy,
    "identity": sm.families.links.Identity,
    "sqrt": sm.families.links.Sqrt,
    "inverse": sm.families.links.InversePower,
}
#: the statsmodels class each name's link is checked against (NB1 as NegativeBinomial, beta as Binomial)
_LINK_CLASS = {
    "gaussian": sm.families.Gaussian,
    "binomial": sm.families.Binomial,
    "poisson": sm.families.Poisson,
    "gamma": sm.families.Gamma,
    "nbinom2": sm.families.NegativeBinomial,
    "nbinom1": sm.families.NegativeBinomial,
    "beta": sm.families.Binomial,
}


def family(name: str, link=None) -> Family:
    """A family by name with a link other than its default, as glmmTMB's ``beta_family(link =
    "probit")`` or ``nbinom1(link = "sqrt")``: ``family("beta", link="probit")``.

    ``link`` is R's name of it (``"log"``, ``"logit"``, ``"probit"``, ``"cloglog"``,
    ``"loglog"``, ``"cauchit"``, ``"identity"``, ``"sqrt"``, ``"inverse"``) or a statsmodels
    link instance; any link statsmodels' family of the same kind takes (NB1 as
    NegativeBinomial's, beta as Binomial's)."""
    key = str(name).strip().lower()
    if key not in _LINK_CLASS:
        raise FamilyError(f"unknown family '{name}'; choose one of {', '.join(_LINK_CLASS)}")
    if link is None:
        return resolve_family(key)
    if isinstance(link, str):
        if link.strip().lower() not in _LINKS:
            raise FamilyError(f"unknown link '{link}'; choose one of {', '.join(_LINKS)}")
        link = _LINKS[link.strip().lower()]()
    if not isinstance(link, sm.families.links.Link):
        raise FamilyError(f"link must be a name or a statsmodels link, not {type(link).__name__}")
    cls = _LINK_CLASS[key]
    with warnings.catch_warnings():  # statsmodels' "not a safe link" note: the fit reports its own trouble
        warnings.simplefilter("ignore")
        try:
            base = cls(link=link, alpha=1.0) if cls is sm.families.NegativeBinomial else cls(link=link)
        except (TypeError, ValueError) as exc:  # statsmodels refusing the link for this family
            raise FamilyError(f"the {key} family does not take the {type(link).__name__} link ({exc})") from None
    return Family(_Named(base, key) if key in EXACT else base)


def resolve_family(family) -> Family:
    """Accept a name (``"binomial"``), a statsmodels family instance, or a :class:`Family`."""
    if family is None:
        return Family(sm.families.Gaussian())
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        key = family.strip().lower()
        if key not in _NAMES:
            raise FamilyError(
                f"unknown family '{family}'; choose one of {', '.join(_NAMES)} or pass a statsmodels family"
            )
        return Family(_NAMES[key]())
    if isinstance(family, sm.families.Family):
        return Family(family)
    raise FamilyError(f"family must be a name or a statsmodels family, not {type(family).__name__}")


class ResponseTerms:
    """The response's part of log f(y | μ, φ), split into what depends on μ and what does not.

    The constant part (binomial coefficients, log y!, ...) is computed once from the data, so
    each PIRLS step only evaluates the part that changes with μ.
    """

    def __init__(self, family: Family, y: np.ndarray, prior: np.ndarray, trials: np.ndarray | None = None):
        self.family = family
        self.y, self.prior = y, prior
        name = family.name
        if name == "binomial":  # successes k = y·n as given: non-integer k (lme4 warns) keep one objective
            n = prior if trials is None else trials
            k = y * n
            pw = np.ones_like(y) if trials is None else prior / np.where(trials > 0, trials, 1)
            self.const = pw * (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1))
            self.a, self.b = pw * k, pw * (n - k)
        elif name == "poisson":
            self.const = -prior * special.gammaln(y + 1)
            self.a, self.b = prior * y, prior
        elif name == "gamma":
            self.logy = np.log(y)
            self.const = -self.logy
        elif name in ("nbinom2", "nbinom1"):
            self.const = -prior * special.gammaln(y + 1)
        elif name == "beta":
            self.logy, self.log1my = np.log(y), np.log1p(-y)
            self.const = -prior * (self.logy + self.log1my)
        else:
            self.const = np.zeros_like(y)

    def rows(self, mu: np.ndarray, phi: float = 1.0) -> np.ndarray:
        """log f(yᵢ | μᵢ, φ) row by row."""
        name = self.family.name
        if name == "binomial":  # μ is kept inside (0, 1) by linkinv, so the logs are finite
            return self.const + self.a * np.log(mu) + self.b * np.log1p(-mu)
        if name == "poisson":
            return self.const + self.a * np.log(mu) - self.b * mu
        if name == "gamma":
            shape = self.prior / phi
            return (
                shape * (np.log(shape) + self.logy - np.log(mu))
                - shape * self.y / mu
                + self.const
                - special.gammaln(shape)
            )
        if name == "nbinom2":  # size θ = φ: log Γ(y+θ) − log Γ(θ) − log y! + θ log θ + y log μ − (y+θ) log(θ+μ)
            y, th = self.y, phi
            # θ log θ − (y+θ) log(θ+μ) written as −θ log1p(μ/θ) − y log(θ+μ): no cancellation of two
            # large terms as θ grows toward the Poisson limit
            core = lgamma_ratio(y, th) - th * np.log1p(mu / th)
            return self.prior * (core + y * (np.log(mu) - np.log(th + mu))) + self.const
        if name == "nbinom1":  # size s = μ/φ: log Γ(y+s) − log Γ(s) − log y! − s log(1+φ) + y log(φ/(1+φ))
            y, sz = self.y, mu / phi
            core = lgamma_ratio(y, sz) - (sz + y) * np.log1p(phi) + y * np.log(phi)
            return self.prior * core + self.const
        if name == "beta":  # log Γ(φ) − log Γ(μφ) − log Γ((1−μ)φ) + μφ log y + (1−μ)φ log(1−y) − log y − log(1−y)
            a, b = mu * phi, (1.0 - mu) * phi
            core = special.gammaln(phi) - special.gammaln(a) - special.gammaln(b) + a * self.logy + b * self.log1my
            return self.prior * core + self.const
        prior = self.prior
        return -0.5 * (np.log(2 * np.pi * phi / prior) + prior * (self.y - mu) ** 2 / phi)

    def total(self, mu: np.ndarray, phi: float = 1.0) -> float:
        """Σ log f(yᵢ | μᵢ, φ)."""
        return float(np.sum(self.rows(mu, phi)))
