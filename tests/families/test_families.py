"""Each family answers for itself: its log-likelihood against scipy's distributions, its score
and information in η against differences of that log-likelihood, its simulations against its
mean and variance, and the registry that finds it by name."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from midas_glmm.errors import FamilyError
from midas_glmm.families import FAMILIES, Family, ResponseTerms, family, resolve_family

RNG = np.random.default_rng(20261204)
N = 8

#: (name, link, dispersion φ, y, μ, trials) — trials only for binomial counts
CASES = [
    ("gaussian", "log", 0.7, RNG.normal(2.0, 1.0, N), RNG.uniform(0.5, 3.0, N), None),
    ("binomial", "logit", 1.0, np.array([0, 1, 2, 5, 3, 4, 0, 6]) / 6.0, RNG.uniform(0.1, 0.9, N), np.full(N, 6.0)),
    ("binomial", "probit", 1.0, np.array([0, 1, 1, 0, 1, 0, 1, 1.0]), RNG.uniform(0.1, 0.9, N), None),
    ("poisson", "log", 1.0, np.array([0, 1, 3, 7, 2, 0, 5, 11.0]), RNG.uniform(0.5, 8.0, N), None),
    ("poisson", "sqrt", 1.0, np.array([0, 1, 3, 7, 2, 0, 5, 11.0]), RNG.uniform(0.5, 8.0, N), None),
    ("gamma", "log", 0.4, RNG.gamma(2.5, 1.0, N), RNG.uniform(1.0, 4.0, N), None),
    ("gamma", "inverse", 0.4, RNG.gamma(2.5, 1.0, N), RNG.uniform(1.0, 4.0, N), None),
    ("nbinom2", "log", 2.5, np.array([0, 1, 3, 7, 2, 0, 5, 11.0]), RNG.uniform(0.5, 8.0, N), None),
    ("nbinom1", "log", 1.5, np.array([0, 1, 3, 7, 2, 0, 5, 11.0]), RNG.uniform(0.5, 8.0, N), None),
    ("nbinom1", "sqrt", 1.5, np.array([0, 1, 3, 7, 2, 0, 5, 11.0]), RNG.uniform(0.5, 8.0, N), None),
    ("beta", "logit", 6.0, RNG.beta(2.0, 3.0, N), RNG.uniform(0.2, 0.8, N), None),
    ("beta", "probit", 6.0, RNG.beta(2.0, 3.0, N), RNG.uniform(0.2, 0.8, N), None),
]
IDS = [f"{c[0]}-{c[1]}" for c in CASES]


def _scipy_logf(name, y, mu, phi, trials):
    """log f(y | μ, φ) from scipy, independent of the library's code."""
    if name == "gaussian":
        return stats.norm.logpdf(y, mu, np.sqrt(phi))
    if name == "binomial":
        n = np.ones_like(y) if trials is None else trials
        return stats.binom.logpmf(np.round(y * n), n, mu)
    if name == "poisson":
        return stats.poisson.logpmf(y, mu)
    if name == "gamma":
        return stats.gamma.logpdf(y, 1.0 / phi, scale=mu * phi)
    if name == "nbinom2":
        return stats.nbinom.logpmf(y, phi, phi / (phi + mu))
    if name == "nbinom1":
        return stats.nbinom.logpmf(y, mu / phi, 1.0 / (1.0 + phi))
    return stats.beta.logpdf(y, mu * phi, (1.0 - mu) * phi)


@pytest.mark.parametrize(("name", "link", "phi", "y", "mu", "trials"), CASES, ids=IDS)
def test_loglik_is_scipys(name, link, phi, y, mu, trials):
    fam = family(name, link)
    prior = np.ones_like(y) if trials is None else trials
    rows = ResponseTerms(fam, y, prior, trials).rows(mu, phi)
    assert rows == pytest.approx(_scipy_logf(name, y, mu, phi, trials), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize(("name", "link", "phi", "y", "mu", "trials"), CASES, ids=IDS)
def test_score_and_information_are_derivatives_of_the_loglik(name, link, phi, y, mu, trials):
    """∂ log f/∂η and −∂² log f/∂η² (the observed information) by central differences in η;
    the binomial family's score is taken on one trial (its Laplace rows are per trial)."""
    if name == "binomial":
        y = (y > 0.5).astype(float)
    fam = family(name, link)
    eta = fam.linkfun(mu)

    def logf(e):
        return ResponseTerms(fam, y, np.ones_like(y)).rows(fam.linkinv(e), phi)

    h = 1e-4
    score_fd = (logf(eta + h) - logf(eta - h)) / (2 * h)
    info_fd = -(logf(eta + h) - 2 * logf(eta) + logf(eta - h)) / h**2
    score, observed, expected = fam.eta_derivatives(y, mu, eta, phi)
    assert score == pytest.approx(score_fd, rel=1e-6, abs=1e-7)
    assert observed == pytest.approx(info_fd, rel=1e-4, abs=1e-5)
    assert np.all(expected > 0)


@pytest.mark.parametrize(("name", "link", "phi", "y", "mu", "trials"), CASES, ids=IDS)
def test_simulations_have_the_family_mean_and_variance(name, link, phi, y, mu, trials):
    """The mean and variance of 20,000 draws per row against μ and V(μ)·(φ for a residual
    scale)/w, within five standard errors."""
    fam = family(name, link)
    k = 20_000
    prior = np.ones_like(mu) if trials is None else trials
    rng = np.random.default_rng(1)
    draws = np.stack([fam.simulate(mu, rng, prior, trials, phi) for _ in range(k)])
    var = fam.variance(mu, phi) * (phi if fam.residual_scale else 1.0) / prior
    assert np.all(np.abs(draws.mean(axis=0) - mu) < 5 * np.sqrt(var / k))
    assert np.all(np.abs(draws.var(axis=0) / var - 1) < 5 * np.sqrt(2.0 / k) * 3)


def test_the_registry_finds_every_family_and_its_links():
    for name, cls in FAMILIES.items():
        fam = family(name)
        assert isinstance(fam, cls) and fam.name == name and isinstance(fam, Family)
        assert type(resolve_family(name)) is cls
        assert fam.link_name == cls.default_link
    assert family("beta", "probit").link_name == "probit"
    assert family("nbinom1", "sqrt").variance(np.array([2.0]), 0.5) == pytest.approx(3.0)
    with pytest.raises(FamilyError, match="unknown family 'negbin'"):
        family("negbin")
    with pytest.raises(FamilyError, match="unknown link 'logg'"):
        family("poisson", "logg")


def test_facts_that_steer_the_engine():
    """What code elsewhere asks the family object instead of testing its name."""
    binomial, poisson, nb2, beta = family("binomial"), family("poisson"), family("nbinom2"), family("beta")
    assert binomial.agq and poisson.agq and not nb2.agq
    assert poisson.zero_inflatable and nb2.zero_inflatable and not binomial.zero_inflatable
    assert not beta.zero_in_support and not family("gamma").zero_in_support
    assert nb2.nests(poisson) and family("nbinom1").nests(poisson) and not poisson.nests(nb2)
    assert binomial.kernel_link is not None and family("binomial", "probit").kernel_link is None
    assert family("gamma", "log").observed_positive and not family("gamma").observed_positive
    assert binomial.mean_name == "prob" and poisson.mean_name == "rate" and nb2.mean_name == "response"
    assert family("gaussian").is_lmm and not family("gaussian", "log").is_lmm


# ---------------------------------------------------------------------------------------- families in fits
def _counts_and_proportions(seed=3):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n, groups = 400, 25
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    u = rng.normal(0, 0.5, groups)[g]
    mu = np.exp(0.8 + 0.4 * x + u)
    p = 1 / (1 + np.exp(-(0.3 * x + u)))
    return pd.DataFrame(
        {
            "g": g,
            "x": x,
            "count": rng.negative_binomial(2.0, 2.0 / (2.0 + mu)),
            "prop": np.clip(rng.beta(p * 8, (1 - p) * 8), 1e-3, 1 - 1e-3),
            "w": (rng.uniform(size=n) > 0.2).astype(float),
        }
    )


@pytest.mark.parametrize(
    ("name", "response"), [("nbinom2", "count"), ("nbinom1", "count"), ("beta", "prop"), ("poisson", "count")]
)
def test_a_zero_weight_is_a_dropped_row(name, response):
    """glmmTMB reads a zero prior weight as a row left out; the fit with zero weights equals the
    fit without those rows (it used to stop: 'PIRLS diverged' for NB1, NB2 and beta)."""
    import warnings

    from midas_glmm import MixedModel

    data = _counts_and_proportions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = MixedModel.from_formula(f"{response} ~ x + (1|g)", data, family=name, weights="w").fit()
        dropped = MixedModel.from_formula(f"{response} ~ x + (1|g)", data[data.w > 0], family=name).fit()
    assert weighted.llf == pytest.approx(dropped.llf, abs=1e-6)
    assert np.allclose(weighted.params, dropped.params, atol=1e-3 * dropped.bse.min())
    assert weighted.dispersion == pytest.approx(dropped.dispersion, rel=1e-3)


@pytest.mark.parametrize("name", ["nbinom2", "nbinom1", "poisson", "gaussian", "beta"])
def test_cbind_is_for_binomial_responses(name):
    from midas_glmm import MixedModel

    data = _counts_and_proportions().assign(fail=lambda d: d["count"] + 1)
    with pytest.raises(FamilyError, match=f"cbind\\(\\) is for binomial responses; give a {name} model one column"):
        MixedModel.from_formula("cbind(count, fail) ~ x + (1|g)", data, family=name)


def test_variance_derivative_is_the_variance_functions():
    """dV/dμ of every family against differences of V(μ) (at φ = 0.7 where V has one)."""
    mu = np.array([0.2, 0.5, 0.7])
    for name in FAMILIES:
        fam = family(name)
        h = 1e-6
        fd = (fam.variance(mu + h, 0.7) - fam.variance(mu - h, 0.7)) / (2 * h)
        assert fam.variance_deriv(mu, 0.7) == pytest.approx(fd, rel=1e-6, abs=1e-8), name


def test_family_of_a_statsmodels_family():
    """midas_glmm.Family(statsmodels family) gives that kind of family with its link, as it did
    when Family wrapped statsmodels' families; the base class alone is refused."""
    import statsmodels.api as sm

    fam = Family(sm.families.Gamma(sm.families.links.Log()))
    assert fam.name == "gamma" and fam.link_name == "log"
    assert Family(sm.families.Binomial()).canonical
    with pytest.raises(FamilyError, match="base class of the response families"):
        Family("logit")
    with pytest.raises(FamilyError, match="fixed negative binomial alpha"):
        Family(sm.families.NegativeBinomial(alpha=0.5))
