"""Residuals (Pearson, deviance) and Nakagawa's R² against lme4 and performance::r2_nakagawa
(tests/reference/diagnostics, made by diagnostics/make_diagnostics.R), and their properties."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import REF, read_reference_csv

from midas_glmm import MixedModel
from midas_glmm.errors import FitError

CASES = sorted(p.stem for p in (REF / "diagnostics").glob("*.json"))


def _fit(name):
    ref = json.loads((REF / "diagnostics" / f"{name}.json").read_text())
    df = read_reference_csv(REF / ref["data"])
    if ref["obs_level"]:
        df["obs"] = np.arange(len(df))
    family = None
    if ref["family"] != "gaussian":
        links = {
            "logit": sm.families.links.Logit(),
            "probit": sm.families.links.Probit(),
            "log": sm.families.links.Log(),
        }
        fam = sm.families.Binomial if ref["family"] == "binomial" else sm.families.Poisson
        family = fam(links[ref.get("link") or ("log" if ref["family"] == "poisson" else "logit")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(ref["formula_py"], df, family=family, weights=ref.get("weights")).fit()
    return ref, res


@pytest.mark.parametrize("name", CASES)
def test_residuals_equal_lme4(name):
    ref, res = _fit(name)
    assert res.llf == pytest.approx(ref["logLik"], abs=1e-3)
    # 1e-4 of the residuals' own scale (RMS): an LMM's residuals are in the response's units
    for kind, ours in (("pearson", res.resid_pearson), ("deviance", res.resid_deviance), ("response", res.resid)):
        theirs = np.asarray(ref[f"resid_{kind}"])
        scale = np.sqrt(np.mean(theirs**2))
        assert np.max(np.abs(ours.to_numpy() - theirs)) <= 1e-4 * scale, kind


@pytest.mark.parametrize("name", CASES)
def test_r2_equals_performance(name):
    ref, res = _fit(name)
    r2 = res.r2()
    assert list(r2.index) == ["marginal", "conditional"]
    assert r2["marginal"] == pytest.approx(ref["r2_marginal"], abs=1e-3)
    assert r2["conditional"] == pytest.approx(ref["r2_conditional"], abs=1e-3)


def test_deviance_residuals_square_to_the_deviance_and_pearson_to_the_chi_square():
    _, res = _fit("cbpp_binomial_laplace")
    assert float((res.resid_deviance**2).sum()) == pytest.approx(res.deviance, rel=1e-10)
    y, mu, w = res.design.y, res.fittedvalues.to_numpy(), res.design.weights
    assert float((res.resid_pearson**2).sum()) == pytest.approx(float(np.sum(w * (y - mu) ** 2 / (mu * (1 - mu)))))


def test_r2_refuses_families_it_has_no_variance_for():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=200), "g": rng.integers(0, 20, 200)})
    df["y"] = np.exp(0.3 * df.x) * rng.gamma(2.0, 0.5, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ x + (1|g)", df, family="gamma").fit()
    with pytest.raises(FitError, match="Gaussian, binomial and Poisson"):
        res.r2()
    assert np.isfinite(res.resid_pearson).all() and np.isfinite(res.resid_deviance).all()
