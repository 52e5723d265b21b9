"""simulate_residuals(): uniform for correctly specified models (LMM, Bernoulli, binomial with
trials, Poisson), and the dispersion and zero-inflation tests flag data simulated with extra
variance or extra zeros."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from midas_glmm import MixedModel, plots


def _data(seed, n=1200, groups=60, extra_sd=0.0, zeros=0.0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.6, groups)[g] + rng.normal(0, extra_sd, n)
    trials = rng.integers(1, 8, n)
    df = pd.DataFrame({"x": x, "g": g, "n": trials})
    df["y"] = 1.0 + eta + rng.normal(size=n)
    df["yb"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    df["yp"] = rng.binomial(trials, 1 / (1 + np.exp(-eta))) / trials
    counts = rng.poisson(np.exp(eta))
    df["yc"] = np.where(rng.uniform(size=n) < zeros, 0, counts)
    return df


def _fit(formula, df, family=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, df, family=family, **kw).fit()


CORRECT = [
    ("y ~ x + (1|g)", None, {}),
    ("yb ~ x + (1|g)", "binomial", {}),
    ("yp ~ x + (1|g)", "binomial", {"weights": "n"}),
    ("yc ~ x + (1|g)", "poisson", {}),
]


@pytest.mark.parametrize("formula, family, kw", CORRECT)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_correct_models_give_uniform_residuals(formula, family, kw, seed):
    res = _fit(formula, _data(seed), family, **kw)
    q = res.simulate_residuals(n=250, seed=seed)
    r = q.residuals.to_numpy()
    assert r.shape == (res.nobs,) and np.all((0 <= r) & (r <= 1))
    assert q.test_uniformity()["pvalue"] > 0.01
    assert abs(r.mean() - 0.5) < 0.03 and abs(r.var() - 1 / 12) < 0.01
    assert q.test_dispersion()["pvalue"] > 0.01
    assert 0.8 < q.test_dispersion()["ratio"] < 1.25


def test_overdispersion_is_flagged():
    res = _fit("yc ~ x + (1|g)", _data(4, extra_sd=0.8), "poisson")
    q = res.simulate_residuals(n=250, seed=0)
    disp = q.test_dispersion()
    assert disp["ratio"] > 1.5 and disp["pvalue"] < 0.01
    assert q.test_uniformity()["pvalue"] < 0.01
    # an observation-level random effect absorbs it
    df = _data(4, extra_sd=0.8)
    df["obs"] = np.arange(len(df))
    fixed = _fit("yc ~ x + (1|g) + (1|obs)", df, "poisson").simulate_residuals(n=250, seed=0)
    assert fixed.test_dispersion()["pvalue"] > 0.01


def test_zero_inflation_is_flagged():
    res = _fit("yc ~ x + (1|g)", _data(5, zeros=0.25), "poisson")
    z = res.simulate_residuals(n=250, seed=0).test_zero_inflation()
    assert z["ratio"] > 1.2 and z["pvalue"] < 0.01
    clean = _fit("yc ~ x + (1|g)", _data(5), "poisson").simulate_residuals(n=250, seed=0).test_zero_inflation()
    assert clean["pvalue"] > 0.01


def test_same_seed_same_residuals_and_the_plots(tmp_path):
    res = _fit("yb ~ x + (1|g)", _data(6, n=400), "binomial")
    a, b = res.simulate_residuals(n=100, seed=3), res.simulate_residuals(n=100, seed=3)
    assert a.residuals.equals(b.residuals)
    assert list(a.summary().columns) == ["value", "pvalue"]
    plots.quantile_residuals(a, path=tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000
    fig = plots.diagnostics(res)  # GLMMs: the scaled residuals
    assert "KS p" in fig.axes[0].get_title()
