"""The families' own links, variance functions and unit deviances against statsmodels' (an
independent implementation of the same formulas), and statsmodels objects accepted as input."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from midas_glmm import FamilyError, MixedModel, family
from midas_glmm.engine.glm import fit_glm
from midas_glmm.families import LINKS, resolve_family
from midas_glmm.linalg import codes

SM_LINKS = {
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


@pytest.mark.parametrize("name", sorted(LINKS))
def test_links_equal_statsmodels(name):
    ours, theirs = LINKS[name](), SM_LINKS[name]()
    unit = name in ("logit", "probit", "cloglog", "loglog", "cauchit")
    eta = np.linspace(-4, 4, 33) if unit or name in ("log", "identity") else np.linspace(0.2, 4, 33)
    mu = theirs.inverse(eta)
    assert np.allclose(ours.inverse(eta), mu, rtol=1e-12, atol=1e-300)
    assert np.allclose(ours(mu), theirs(mu), rtol=1e-9, atol=1e-12)
    assert np.allclose(ours.inverse_deriv(eta), theirs.inverse_deriv(eta), rtol=1e-10, atol=1e-300)
    # statsmodels' second derivative is numerical for some links: agree to its accuracy
    assert np.allclose(ours.inverse_deriv2(eta), theirs.inverse_deriv2(eta), rtol=1e-5, atol=1e-7)
    assert np.allclose(ours.deriv(mu), theirs.deriv(mu), rtol=1e-8)


CASES = [
    ("gaussian", sm.families.Gaussian(), lambda r: r.normal(2, 1, 50), 1.0),
    ("binomial", sm.families.Binomial(), lambda r: r.integers(0, 2, 50).astype(float), 1.0),
    ("poisson", sm.families.Poisson(), lambda r: r.poisson(3, 50).astype(float), 1.0),
    ("gamma", sm.families.Gamma(), lambda r: r.gamma(2, 1.5, 50), 1.0),
    ("nbinom2", sm.families.NegativeBinomial(alpha=1 / 2.5), lambda r: r.poisson(3, 50).astype(float), 2.5),
]


@pytest.mark.parametrize("name,smfam,draw,phi", CASES, ids=[c[0] for c in CASES])
def test_variance_and_deviance_equal_statsmodels(name, smfam, draw, phi):
    rng = np.random.default_rng(1)
    fam = family(name)
    y = draw(rng)
    mu = np.clip(rng.uniform(0.2, 0.8, len(y)), 0, 1) * (1 if name == "binomial" else 4)
    w = rng.uniform(0.5, 2, len(y))
    var = smfam.variance(mu) if name != "nbinom2" else mu + mu**2 / phi
    assert np.allclose(fam.variance(mu, phi), var, rtol=1e-12)
    assert np.isclose(fam.deviance(y, mu, w, phi), smfam.deviance(y, mu, var_weights=w), rtol=1e-10)
    assert np.allclose(fam.resid_dev(y, mu, w, phi), smfam.resid_dev(y, mu, var_weights=w), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name,smfam,canonical",
    [
        ("binomial", sm.families.Binomial(), False),
        ("binomial", sm.families.Binomial(), True),
        ("poisson", sm.families.Poisson(), False),
        ("poisson", sm.families.Poisson(), True),
        ("gamma", sm.families.Gamma(sm.families.links.Log()), False),
    ],
)
def test_glm_start_equals_statsmodels_glm(name, smfam, canonical):
    """The IRLS that starts a GLMM reaches statsmodels' GLM estimates and deviance, the canonical
    binomial and Poisson also from their log-likelihood's pieces a, b (its steps by canonical_terms)."""
    rng = np.random.default_rng(7)
    X = np.column_stack([np.ones(200), rng.normal(size=(200, 2))])
    eta = X @ [0.3, 0.5, -0.4]
    y = {
        "binomial": lambda: rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float),
        "poisson": lambda: rng.poisson(np.exp(eta)).astype(float),
        "gamma": lambda: rng.gamma(3.0, np.exp(eta) / 3.0),
    }[name]()
    w = rng.uniform(0.5, 2.0, 200)
    fam = family(name, link="log" if name == "gamma" else None)
    pieces = None
    if canonical:  # log f = const + a log μ + b log(1 − μ) (logit), const + a log μ − bμ (log)
        pieces = (codes.LOGIT, w * y, w * (1.0 - y)) if name == "binomial" else (codes.LOG, w * y, w)
    ours = fit_glm(y, X, fam, weights=w, canonical=pieces)
    ref = sm.GLM(y, X, family=smfam, var_weights=w).fit(tol=1e-13)
    assert ours.converged  # both stop on a change of deviance below 1e-8: β to ~1e-6
    assert np.allclose(ours.beta, ref.params, rtol=1e-5, atol=1e-8)
    assert np.isclose(ours.deviance, ref.deviance, rtol=1e-8)


def test_statsmodels_objects_are_read_as_ours():
    assert resolve_family(sm.families.Binomial(sm.families.links.Probit())).link_name == "probit"
    assert resolve_family(sm.families.Gamma()).link_name == "inverse"
    assert family("poisson", link=sm.families.links.Sqrt()).link_name == "sqrt"
    assert resolve_family(sm.families.NegativeBinomial(alpha=1.0)).name == "nbinom2"
    with pytest.raises(FamilyError, match="does not take the logit link"):
        family("poisson", link="logit")
    with pytest.raises(FamilyError, match="not supported"):
        family("poisson", link=sm.families.links.Power(3.0))


def test_a_statsmodels_family_fits_like_its_name():
    """A statsmodels family instance names the same model as its name."""
    rng = np.random.default_rng(3)
    import pandas as pd

    df = pd.DataFrame({"g": np.repeat(np.arange(20), 10), "x": rng.normal(size=200)})
    df["y"] = rng.binomial(1, 1 / (1 + np.exp(-(0.3 * df.x + rng.normal(size=20)[df.g]))))
    a = MixedModel.from_formula("y ~ x + (1|g)", df, family=sm.families.Binomial()).fit()
    b = MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial").fit()
    assert a.llf == b.llf and np.array_equal(a.params.to_numpy(), b.params.to_numpy())
