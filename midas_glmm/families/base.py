"""The response family: what a GLMM needs of a distribution and its link, asked of the family.

:class:`Family` holds the link (:mod:`.links`) and the algebra every family shares:

* μ = g⁻¹(η) and dμ/dη, the variance V(μ) and the dispersion φ,
* the working weights of PIRLS, w·μ'²/(φV), and the observed information of η, which adds
  −(y − μ)·∂/∂η[μ'/V]·w/φ and equals the former for canonical links,
* the score and information of log f in η (the Laplace gradient and zero-inflation),
* the unit deviance and the Pearson and deviance residuals.

Each family is a subclass in a module of its own (``gaussian.py``, ``binomial.py``, ...) that
states its facts (a dispersion or not, the information its Laplace approximation takes, whether
it takes zero-inflation or quadrature) and answers for itself: its support, its log-likelihood,
simulation, latent-scale variance, dispersion start and cautions. Code elsewhere asks the family
object; it never tests the family's name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError, FamilyError, FitError
from .links import LINKS, link_of, statsmodels_object

__all__ = ["Family", "ResponseTerms", "LINKS", "observed_levels", "family_of"]

#: links whose inverse maps every η into the family's range (no step can leave its domain)
WHOLE_LINE = ("log", "logit", "probit", "cloglog", "loglog", "cauchit")


class Family:
    """A response family with its link.

    Attributes
    ----------
    name : str
        glmmTMB's and lme4's name (``"gaussian"``, ``"binomial"``, ``"nbinom2"``, ...).
    link, link_name : :class:`~.links.Link`, str
        The link and R's name of it (``"logit"``, ``"log"``, ...).
    canonical : bool
        The link is the family's canonical link.
    has_dispersion : bool
        φ is estimated (Gaussian, Gamma, NB2, NB1, beta); else φ = 1.
    residual_scale : bool
        φ is a residual scale reported as σ = √φ with a "Residual" row in ``varcorr()``
        (Gaussian, Gamma); else φ is a shape parameter of the distribution reported as it is.
    laplace_observed : bool
        The Laplace log-determinant takes the observed information of η (glmmTMB's exact
        Hessian) rather than the expected one (lme4's PIRLS). The two agree for canonical links.
    exact : bool
        The score and information come from the log-likelihood itself (:meth:`derivatives`),
        not from the exponential-family form (NB1, beta).
    agq : bool
        Adaptive Gauss–Hermite quadrature (``nAGQ > 1``) is available, as in lme4.
    zero_inflatable : bool
        A zero-inflation part (``ziformula``) may be added, as in glmmTMB.
    dispersion_model : bool
        φ may depend on covariates (glmmTMB's ``dispformula``, log φᵢ = (X_d γ)ᵢ).
    thresholds : bool
        The family's parameters are ordered thresholds (the ordinal family: φ is their vector).
    categorical_response : bool
        The response is categories, coded by the family whatever their type (ordinal).
    drops_intercept : bool
        The fixed effects take no intercept (an ordinal model's thresholds hold it).
    """

    name = ""
    #: how messages call a response of the family ("Poisson response 'y' ...")
    label = ""
    default_link = "identity"
    canonical_link: str | None = None
    #: the links (R's names) the family takes, its default first
    links: tuple[str, ...] = ("identity", "log", "inverse")
    #: the name of statsmodels' family class that names this family (``Family(sm.families.Gamma())``)
    statsmodels_name: str | None = None
    has_dispersion = False
    residual_scale = False
    laplace_observed = False
    exact = False
    agq = False
    zero_inflatable = False
    dispersion_model = False
    thresholds = False
    categorical_response = False
    drops_intercept = False
    #: the response can be 0 (False: strictly positive, nothing to zero-inflate)
    zero_in_support = True
    #: emmeans' name of a mean on the response scale
    mean_name = "response"
    #: glmmTMB's words for the dispersion in summary() (None: "Dispersion (phi)")
    dispersion_label: str | None = None
    #: fitted probabilities of 0 or 1 mean a separated response (glm's warning)
    checks_separation = False
    #: links (R's names) whose observed information is positive in every row
    observed_positive_links: tuple[str, ...] = ()
    #: the compiled PIRLS pass of :mod:`~midas_glmm.linalg.rowkernels` for this family and link
    kernel_link: int | None = None
    #: with the canonical link μ' = V(μ), so the Fisher weight is w·μ'/φ (binomial-logit, Poisson-log)
    canonical_mu_eta_is_variance = False
    #: the moments of the GLM's working response (PQL's first step, pirls._working_moments) are
    #: biased low for this family: the search starts from them times this factor, and a GLMM of
    #: one θ keeps lme4's θ₀ (1.0: no bias seen; binomial's moments 0.73-0.88 of θ̂)
    working_moments_scale = 1.0
    #: an exponential family with a unit deviance (lme4's deviance(), deviance residuals)
    has_unit_deviance = True
    #: the response may be successes out of trials (``cbind(successes, failures)``)
    takes_trials = False

    def __new__(cls, *args, **kwargs):
        if cls is Family and args and statsmodels_object(args[0], "Family"):
            return family_of(args[0])  # Family(a statsmodels family): the family of that kind, with its link
        return super().__new__(cls)

    def __init__(self, link=None):
        """The family with ``link``: R's name of it, a link of :mod:`.links` or of statsmodels, or
        a statsmodels family of this kind (its link); None for the family's default link."""
        if type(self) is Family:
            raise FamilyError(
                "Family is the base class of the response families; build one with midas_glmm.family(name, link), "
                "or pass a family's name or a statsmodels family to from_formula"
            )
        if statsmodels_object(link, "Family"):
            link = link.link
        self.link = link_of(self.default_link if link is None else link)
        self.link_name = self.link.name
        if self.link_name not in self.links:
            raise FamilyError(
                f"the {self.name} family does not take the {self.link_name} link; choose one of {', '.join(self.links)}"
            )
        self.canonical = self.canonical_link == self.link_name
        # Newton steps take the observed information too, and their last system is the Laplace one
        self.observed_positive = self.link_name in self.observed_positive_links
        self.whole_line_link = self.link_name in WHOLE_LINE

    def __setstate__(self, state: dict) -> None:
        # a family saved before one class per family kept its name in the object: rebuild it as
        # the class of that name, with its link
        if "name" in state:
            self.__class__ = _subclass_named(state["name"])
            self.__init__(state["link"])
        else:
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"Family({self.name}, link={self.link_name})"

    @property
    def is_lmm(self) -> bool:
        """Gaussian with identity link: handled by the LMM engine."""
        return False

    @property
    def shape_dispersion(self) -> bool:
        """φ is a shape parameter of the distribution (NB2's size θ, NB1's φ, beta's precision)."""
        return self.has_dispersion and not self.residual_scale

    def nests(self, other: Family) -> bool:
        """Whether ``other`` is this family at a limit of its dispersion (a likelihood-ratio test
        of the two is then on the boundary: Poisson within the negative binomials); :attr:`limit`
        says which."""
        return False

    #: the dispersion's value at which the family it :meth:`nests` is reached
    limit = ""

    def kernel_rows(self, terms: ResponseTerms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(const, a, b) of the compiled pass of :attr:`kernel_link`, from the log-likelihood's
        pieces: log f = const + a log μ + b log(1 − μ) (logit) or const + a log μ − b μ (log)."""
        return terms.const, terms.parts["a"], terms.parts["b"]

    # --- link and variance
    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        """μ = g⁻¹(η), kept inside the family's range."""
        return self._in_range(self.link.inverse(eta))

    def _in_range(self, mu: np.ndarray) -> np.ndarray:
        return mu

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """η = g(μ)."""
        return self.link(mu)

    def mu_eta(self, eta: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        """dμ/dη; from μ = g⁻¹(η) when given and the link is logit (μ(1−μ)) or log (μ)."""
        if mu is not None and self.link_name == "logit":
            return mu * (1.0 - mu)
        if mu is not None and self.link_name == "log":
            return mu
        return self.link.inverse_deriv(eta)

    def mu_eta2(self, eta: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
        """d²μ/dη²; from μ = g⁻¹(η) when given and the link is logit (μ(1−μ)(1−2μ)) or log (μ)."""
        if mu is not None and self.link_name == "logit":
            return mu * (1.0 - mu) * (1.0 - 2.0 * mu)
        if mu is not None and self.link_name == "log":
            return mu
        return self.link.inverse_deriv2(eta)

    def variance(self, mu: np.ndarray, phi: float = 1.0) -> np.ndarray:
        """V(μ), the variance function (φ scales it outside for a residual scale)."""
        raise NotImplementedError

    def variance_deriv(self, mu: np.ndarray, phi: float = 1.0) -> np.ndarray:
        """dV/dμ."""
        raise NotImplementedError

    def _scale(self, phi: float) -> float:
        """The φ that divides the working weights: a shape parameter sits inside V(μ) instead."""
        return phi if self.residual_scale else 1.0

    def sigma_of(self, phi: float) -> float:
        """What ``res.sigma`` reports for dispersion φ: √φ for a residual scale, φ itself for a
        shape parameter (glmmTMB's ``sigma()`` in both cases)."""
        if np.ndim(phi):  # one φ per row (a dispersion model)
            return np.sqrt(phi) if self.residual_scale else np.asarray(phi, dtype=float)
        return float(np.sqrt(phi)) if self.residual_scale else float(phi)

    def dispersion_of(self, sigma: float) -> float:
        """The dispersion φ whose :meth:`sigma_of` is ``sigma``."""
        return sigma**2 if self.residual_scale else sigma

    # --- PIRLS weights, score and information in η
    def weights(self, y, mu, eta, prior, phi=1.0, observed=False):
        """Working weights: Fisher w·μ'²/(φV), or the observed information of η when asked (the
        two agree for a canonical link)."""
        if self.canonical and self.canonical_mu_eta_is_variance:
            return prior * self.mu_eta(eta, mu) / phi
        d = self.mu_eta(eta, mu)
        V = self.variance(mu, phi)
        scale = self._scale(phi)
        w = prior * d * d / (V * scale)
        if observed and not self.canonical:
            d2 = self.mu_eta2(eta, mu)
            dV = self.variance_deriv(mu, phi)
            # −∂²/∂η² of log f = w μ'²/(φV) − w (y−μ)(μ''/V − μ'² V'/V²)/φ
            w = w - prior * (y - mu) * (d2 / V - d * d * dV / V**2) / scale
        return w

    def derivatives(self, y, mu, eta, prior, phi):
        """(score, observed information, expected information) of log f in η, row by row, from
        the log-likelihood itself: ∂ℓ/∂η = μ'ℓ_μ, −∂²ℓ/∂η² = −(μ''ℓ_μ + μ'²ℓ_μμ), with
        (ℓ_μ, ℓ_μμ, expected) from :meth:`mean_derivatives` (the families that are ``exact``)."""
        d = self.mu_eta(eta, mu)
        d2 = self.mu_eta2(eta, mu)
        l1, l2, expected = self.mean_derivatives(y, mu, prior, phi, d)
        score = prior * d * l1
        observed = -prior * (d2 * l1 + d * d * l2)
        return score, observed, expected

    def loglik_and_derivatives(self, terms: ResponseTerms, mu, eta, prior, phi):
        """(log f per row, score, observed and expected information in η, the last three
        prior-weighted) of an ``exact`` family, in one call: :meth:`loglik_rows` and
        :meth:`derivatives` (a family whose two share their work answers both in one pass)."""
        return (self.loglik_rows(terms, mu, phi), *self.derivatives(terms.y, mu, eta, prior, phi))

    def mean_derivatives(self, y, mu, prior, phi, d):
        """(ℓ_μ, ℓ_μμ, expected information of η) of an ``exact`` family; ``d`` is μ'."""
        raise NotImplementedError(f"the {self.name} family takes its score from the exponential-family form")

    def log_phi_rows(self, y, mu, eta, prior, phi, derivs=None):
        """(∂ log f, ∂ℓ', ∂w)/∂ log φ per row (prior-weighted; ℓ' the score in η, w the observed
        information), for the Laplace gradient's dispersion channel, where the family has them in
        closed form; None: the gradient takes central differences of :meth:`eta_derivatives`.
        ``derivs``: the rows' prior-weighted (ℓ', w) at φ, when the caller has them."""
        return None

    def eta_derivatives(self, y, mu, eta, phi, expected: bool = True):
        """(score, observed information, expected information) of one row's log f in η, without
        prior weights: :meth:`derivatives` for an ``exact`` family; μ'(y − μ)/(φV), the observed
        and the Fisher weight for the others (None for the last unless ``expected``)."""
        if self.exact:
            return self.derivatives(y, mu, eta, 1.0, phi)
        score = self.mu_eta(eta, mu) * (y - mu) / (self.variance(mu, phi) * self._scale(phi))
        fisher = self.weights(y, mu, eta, 1.0, phi) if expected else None
        return score, self.weights(y, mu, eta, 1.0, phi, observed=True), fisher

    # --- likelihood
    def loglik(self, y, mu, prior, phi=1.0, trials=None) -> float:
        """Σ log f(yᵢ | μᵢ, φ)."""
        return ResponseTerms(self, y, prior, trials).total(mu, phi)

    def loglik_constant(self, y, prior, trials) -> tuple[np.ndarray, dict]:
        """The part of log f(yᵢ | μᵢ, φ) that μ does not change (per row), and the per-row pieces
        :meth:`loglik_rows` reuses: computed once from the data."""
        return np.zeros_like(y), {}

    def loglik_rows(self, terms: ResponseTerms, mu: np.ndarray, phi: float) -> np.ndarray:
        """log f(yᵢ | μᵢ, φ) row by row, from the constant part in ``terms``."""
        raise NotImplementedError

    # --- deviance and residuals
    def unit_deviance(self, y, mu, phi: float = 1.0) -> np.ndarray:
        """d(y, μ) = 2[log f(y | y) − log f(y | μ)] of one unit of prior weight."""
        raise FitError(
            f"deviance residuals and lme4's deviance() are not defined here for the {self.name} family "
            "(it is not an exponential family with a unit deviance); use resid_pearson or the log-likelihood"
        )

    def deviance(self, y, mu, prior, phi: float = 1.0) -> float:
        """Σ wᵢ d(yᵢ, μᵢ): the family's unit deviances."""
        return float(np.sum(prior * self.unit_deviance(y, mu, phi)))

    def resid_dev(self, y, mu, prior, phi: float = 1.0) -> np.ndarray:
        """Signed deviance residuals, sign(y − μ)√(w d(y, μ))."""
        return np.sign(y - mu) * np.sqrt(np.clip(prior * self.unit_deviance(y, mu, phi), 0.0, np.inf))

    def start_family(self) -> Family:
        """The family whose GLM gives the fit its start (itself; NB1 and beta take a neighbour
        with the same link whose GLM is an exponential family's)."""
        return self

    def start_mean(self, y: np.ndarray) -> np.ndarray:
        """μ to start the GLM's IRLS from (R's ``mustart``, halfway to the mean)."""
        return (y + np.mean(y)) / 2.0

    def pearson_residuals(self, y, mu, w, phi: float) -> np.ndarray:
        """√w (y − μ)/√V(μ), unscaled by σ or φ (lme4's ``residuals(type = "pearson")``)."""
        return np.sqrt(w / self.variance(mu, phi)) * (y - mu)

    def deviance_residuals(self, y, mu, w, phi: float) -> np.ndarray:
        """sign(y − μ)√(w d(y, μ)) (lme4's ``residuals(m)`` of a GLMM)."""
        return np.sign(y - mu) * np.sqrt(np.maximum(self.resid_dev(y, mu, w, phi) ** 2, 0.0))

    # --- what the family answers for
    def simulate(self, mu: np.ndarray, rng: np.random.Generator, prior, trials, phi: float) -> np.ndarray:
        """A response drawn from f(· | μ, φ) per row (prior weights ``prior``; ``trials`` for a
        binomial count response)."""
        raise FitError(f"simulation is not available for the {self.name} family")

    def latent_variance(self, phi: float = 1.0) -> float:
        """Latent-scale residual variance for the ICC (the seed's table and its analogues)."""
        raise FitError(
            f"the latent-scale residual variance of a {self.name} model depends on the mean; "
            f"icc() and design_effect() are not available for {self.name} yet"
        )

    def r2_variance(self, sigma: float, null_mean) -> float:
        """Nakagawa's distribution-specific variance σ²_ε (``performance::r2_nakagawa``);
        ``null_mean()`` gives exp(β̂₀) of the intercept-only model where the family needs it."""
        raise FitError(
            f"r2() is defined here for Gaussian, binomial and Poisson models, not {self.name} "
            "(its distribution-specific variance is not implemented)"
        )

    def dispersion_start(self, y, mu, w, mean_deviance: float) -> float:
        """φ to start the fit from, given the GLM's fitted means and its deviance per row."""
        return mean_deviance if self.has_dispersion else 1.0

    def laplace_cautions(self, group: str, sizes, totals, events: float, trials: float, single: bool) -> list[str]:
        """The seed's cautions about the Laplace approximation for this family's data (per group
        of the first term: trials ``sizes`` and responses ``totals``; overall events and trials)."""
        return []

    # --- the response
    def check_response(self, y: np.ndarray, name: str, trials=None) -> None:
        """Raise if ``y`` is outside the family's support, or constant."""
        self.check_support(y, name)
        if len(y) > 1 and np.all(y == y[0]):
            raise DataError(
                f"response '{name}' is constant ({y[0]:g} in every row): there is nothing to model (lme4's "
                "'Response is constant'; a binomial or Poisson fit would run off to infinity)"
            )

    def check_support(self, y: np.ndarray, name: str) -> None:
        """Raise if a value of ``y`` is outside the family's support."""

    def warn_noninteger_successes(self, y: np.ndarray, prior: np.ndarray, trials, name: str) -> None:
        """Warn where the family's response must be whole numbers and is not (binomial counts)."""

    def code_levels(self, values: pd.Series, name: str, levels=None) -> np.ndarray:
        """A response that is not numbers (a pandas Categorical, text) as numbers: only the
        binomial family codes one (first level failure, as lme4); the others refuse it."""
        levels = observed_levels(values) if levels is None else list(levels)
        raise DataError(
            f"response '{name}' is not numeric (levels {shown_levels(levels)}); a {self.name} response must be "
            "numbers; for a two-level outcome use family='binomial' (first level = failure, as in lme4)"
        )


class ResponseTerms:
    """The response's part of log f(y | μ, φ), split into what depends on μ and what does not.

    The constant part (binomial coefficients, log y!, ...) is computed once from the data, so
    each PIRLS step only evaluates the part that changes with μ (:meth:`Family.loglik_rows`).
    """

    def __init__(self, family: Family, y: np.ndarray, prior: np.ndarray, trials: np.ndarray | None = None):
        self.family = family
        # contiguous once here (a broadcast of a unit weight has stride 0): the compiled passes
        # would otherwise copy it at every step
        self.y, self.prior = y, np.ascontiguousarray(prior, dtype=float) if np.ndim(prior) else prior
        self.const, self.parts = family.loglik_constant(y, prior, trials)
        self._kept: dict = {}

    def kept(self, key, compute):
        """``compute()``, kept for the same ``key``: a part of log f that depends on the
        dispersion but not on μ (NB2's log Γ(y + θ) − log Γ(θ)) is the same at every PIRLS step
        and at every θ a Laplace gradient revisits. The last few keys are kept."""
        value = self._kept.get(key)
        if value is None:
            value = compute()
            if len(self._kept) >= 4:  # the oldest key goes
                self._kept.pop(next(iter(self._kept)), None)
            self._kept[key] = value
        return value

    def rows(self, mu: np.ndarray, phi: float = 1.0) -> np.ndarray:
        """log f(yᵢ | μᵢ, φ) row by row."""
        return self.family.loglik_rows(self, mu, phi)

    def total(self, mu: np.ndarray, phi: float = 1.0) -> float:
        """Σ log f(yᵢ | μᵢ, φ)."""
        return float(np.sum(self.rows(mu, phi)))


def _subclasses(cls=Family) -> list[type[Family]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _subclass_named(name: str) -> type[Family]:
    for cls in _subclasses():
        if cls.name == name:
            return cls
    raise FamilyError(f"unknown family '{name}'")


def family_of(smfamily) -> Family:
    """Our family of a statsmodels family instance, with its link."""
    kind = type(smfamily).__name__
    match = [c for c in _subclasses() if c.statsmodels_name == kind]
    if not match:
        raise FamilyError(f"family {kind} is not supported; use binomial, poisson, gamma, nbinom2 or gaussian")
    if getattr(smfamily, "alpha", 1.0) != 1.0:
        raise FamilyError(
            f"a fixed negative binomial alpha ({smfamily.alpha:g}) is not supported: the dispersion is estimated. "
            "Use family='nbinom2' (variance mu + mu^2/theta) or 'nbinom1'"
        )
    return match[0](smfamily.link)


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


def shown_levels(levels: list) -> str:
    """The first few levels, for a message."""
    return ", ".join(repr(v) for v in levels[:4]) + (", ..." if len(levels) > 4 else "")


class PositiveMean(Family):
    """A family whose mean is positive (counts, Gamma): μ kept at or above 1e-300."""

    def _in_range(self, mu):
        return np.maximum(mu, 1e-300)


class UnitMean(Family):
    """A family whose mean is a probability (binomial, beta): μ kept inside (1e-15, 1 − 1e-15)."""

    def _in_range(self, mu):
        return np.clip(mu, 1e-15, 1 - 1e-15)
