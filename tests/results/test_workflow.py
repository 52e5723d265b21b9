"""Workflow controls of issue 16 built so far: refit with a new response (MixedModels.jl's
refit!), and statsmodels' names for the fixed effects, the random effects and their covariance."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midas_glmm import MixedModel, datasets
from midas_glmm.errors import DataError


@pytest.fixture(scope="module")
def sleep():
    return datasets.load("sleepstudy")


def _fit(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, df, **kw).fit()


def test_refit_with_a_new_response_equals_a_fresh_fit(sleep):
    res = _fit("Reaction ~ Days + (Days|Subject)", sleep)
    y2 = np.random.default_rng(0).normal(300, 40, len(sleep)) + 10 * sleep.Days.to_numpy()
    again = res.refit(y2)
    fresh = _fit("Reaction ~ Days + (Days|Subject)", sleep.assign(Reaction=y2))
    assert again.llf == pytest.approx(fresh.llf, abs=1e-8)
    assert np.allclose(again.params, fresh.params, atol=1e-6 * fresh.bse.min())
    assert res.refit("ML").method == "ML" and res.refit(y2, method="ML").method == "ML"
    assert res.llf != again.llf  # the original result is untouched


def test_refit_of_a_glmm_and_its_checks(sleep):
    df = sleep.assign(hit=(sleep.Reaction > 300).astype(float))
    res = _fit("hit ~ Days + (1|Subject)", df, family="binomial")
    flipped = 1.0 - df.hit.to_numpy()
    again = res.refit(flipped)
    assert again.params.iloc[1] == pytest.approx(-res.params.iloc[1], rel=1e-3)
    with pytest.raises(DataError, match="uses 180 rows"):
        res.refit(np.zeros(10))
    with pytest.raises(DataError, match="missing or infinite value at row 3"):
        res.refit(np.r_[np.zeros(3), np.nan, np.zeros(176)])
    with pytest.raises(DataError, match="binomial"):
        res.refit(np.full(180, 2.0))


def test_statsmodels_names(sleep):
    res = _fit("Reaction ~ Days + (Days|Subject)", sleep)
    assert res.fe_params.equals(res.params)
    cov = res.cov_re
    assert isinstance(cov, pd.DataFrame) and list(cov.columns) == ["(Intercept)", "Days"]
    assert np.allclose(cov.to_numpy(), res.term_covariances()[0])
    re = res.random_effects
    assert set(re) == set(res.ranef()["Subject"].index)
    assert np.allclose(re["308"].to_numpy(), res.ranef()["Subject"].loc["308"].to_numpy())
    two = _fit("Reaction ~ Days + (1|Subject) + (0 + Days|Subject)", sleep)
    assert isinstance(two.cov_re, dict) and len(two.cov_re) == 2


def test_save_without_data_keeps_the_fit_and_predicts(sleep, tmp_path):
    import midas_glmm
    from midas_glmm.errors import FitError

    big = pd.concat([sleep] * 20, ignore_index=True)  # 3,600 rows, so the rows dominate a full save
    res = _fit("Reaction ~ Days + (Days|Subject)", big)
    res.fittedvalues  # a cached row-sized value, not to be saved  # noqa: B018
    light, full = tmp_path / "light.pkl", tmp_path / "full.pkl"
    res.save(light)
    res.save(full, remove_data=False)
    assert light.stat().st_size * 4 < full.stat().st_size
    back = midas_glmm.load(light)
    assert back.llf == res.llf and back.params.equals(res.params) and back.bse.equals(res.bse)
    assert str(back.summary()) == str(res.summary())
    new = pd.DataFrame({"Days": [1.0, 5.0], "Subject": ["308", "someone new"]})
    assert np.allclose(back.predict(new), res.predict(new))
    pd.testing.assert_frame_equal(back.get_prediction(new).summary_frame(), res.get_prediction(new).summary_frame())
    pd.testing.assert_frame_equal(back.ranef(condvar=True), res.ranef(condvar=True))
    pd.testing.assert_frame_equal(back.varcorr(), res.varcorr())
    for call in (lambda: back.fittedvalues, lambda: back.simulate(1), lambda: back.resid_pearson, lambda: back.anova()):
        with pytest.raises(FitError, match="saved without its data"):
            call()
    whole = midas_glmm.load(full)
    assert np.allclose(whole.fittedvalues, res.fittedvalues) and whole.anova().equals(res.anova())
    bad = tmp_path / "other.pkl"
    import pickle

    bad.write_bytes(pickle.dumps({"not": "a result"}))
    with pytest.raises(DataError, match="does not hold a midas_glmm result"):
        midas_glmm.load(bad)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(full.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or not a result file.*only files you trust"):
        midas_glmm.load(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("not a pickle at all")
    with pytest.raises(DataError, match="cannot read"):
        midas_glmm.load(text)


def test_a_saved_glmm_predicts_on_the_response_scale(tmp_path):
    import midas_glmm

    cbpp = datasets.load("cbpp")
    res = _fit("cbind(incidence, size - incidence) ~ C(period) + (1|herd)", cbpp, family="binomial")
    res.save(tmp_path / "g.pkl")
    back = midas_glmm.load(tmp_path / "g.pkl")
    new = cbpp.iloc[:6]
    assert np.allclose(back.predict(new), res.predict(new))
    assert np.allclose(
        back.predict(new, random_effects=False, kind="link"), res.predict(new, random_effects=False, kind="link")
    )
    pd.testing.assert_frame_equal(back.emmeans("period"), res.emmeans("period"))


def test_fit_controls_start_maxiter_verbose(sleep, capsys):
    from midas_glmm.errors import ConvergenceWarning, FitError

    model = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", sleep)
    res = model.fit()
    again = model.fit(start=res.theta, verbose=True)
    err = capsys.readouterr().err
    assert again.llf == pytest.approx(res.llf, abs=1e-8)
    assert err.count("criterion") >= 5 and "eval     1" in err
    assert model.fit(start={"theta": res.theta}).llf == pytest.approx(res.llf, abs=1e-8)
    assert model.fit(start=res).llf == pytest.approx(res.llf, abs=1e-8)
    # ML: REML's start (the balanced design's moments, REML's optimum) is not ML's
    with pytest.warns(ConvergenceWarning, match="maxiter = 3"):
        short = model.fit(maxiter=3, method="ML")
    assert not short.converged and short.llf < model.fit(method="ML").llf
    for bad, match in [([1.0, 0.0], "3 θ"), ([-1.0, 0.0, 0.2], "outside its range"), ({"beta": 1}, "unknown key")]:
        with pytest.raises(FitError, match=match):
            model.fit(start=bad)
    with pytest.raises(FitError, match="maxiter"):
        model.fit(maxiter=0)
    # a GLMM takes them too
    df = sleep.assign(hit=(sleep.Reaction > 300).astype(float))
    glmm = MixedModel.from_formula("hit ~ Days + (1|Subject)", df, family="binomial")
    g = glmm.fit()
    assert glmm.fit(start=g.theta).llf == pytest.approx(g.llf, abs=1e-6)


def test_update_like_lme4(sleep):
    from midas_glmm.design.formula import update_formula
    from midas_glmm.errors import FitError, FormulaError

    assert update_formula("y ~ x + (1 | g)", "~ . + z") == "y ~ x + (1 | g) + z"
    assert update_formula("y ~ x + (1 | g)", "log(y) ~ . - (1|g) + (x || g)") == "log(y) ~ x + (x || g)"
    assert update_formula("y ~ x + (1|g)", ". ~ . - 1") == "y ~ x + (1|g) - 1"
    assert update_formula("y ~ x - 1 + (1 | g)", ". ~ . + z") == "y ~ x - 1 + (1 | g) + z"
    assert update_formula("y ~ x - 1 + (1 | g)", ". ~ . + 1") == "y ~ x + (1 | g) + 1"
    with pytest.raises(FormulaError, match="no such term"):
        update_formula("y ~ x + (1|g)", ". ~ . - w")
    res = _fit("Reaction ~ Days + (Days|Subject)", sleep)
    smaller = res.update(". ~ . - (Days|Subject) + (1|Subject)")
    ref = _fit("Reaction ~ Days + (1|Subject)", sleep)
    assert smaller.llf == pytest.approx(ref.llf, abs=1e-8) and smaller.method == "REML"
    ml = res.update(method="ML")
    assert ml.method == "ML" and ml.llf == pytest.approx(res.refit("ML").llf, abs=1e-8)
    half = sleep[sleep.Days < 5]
    assert res.update(data=half).nobs == len(half)
    path = __import__("tempfile").mktemp(suffix=".pkl")
    res.save(path)
    import midas_glmm

    loaded = midas_glmm.load(path)
    with pytest.raises(FitError, match="without its data"):
        loaded.update("~ . + I(Days**2)")
    assert loaded.update(data=sleep).llf == pytest.approx(res.llf, abs=1e-8)
    # a result whose response was replaced cannot be rebuilt from its formula and data
    y2 = sleep.Reaction.to_numpy() + np.random.default_rng(1).normal(0, 30, len(sleep))
    with pytest.raises(FitError, match="response replaced"):
        res.refit(y2).update(method="ML")


def test_maxiter_warns_only_when_the_last_run_stopped(sleep):
    from midas_glmm.errors import ConvergenceWarning

    model = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", sleep)
    full = model.fit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit(maxiter=1000)
    assert res.converged and not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert res.llf == pytest.approx(full.llf, abs=1e-8)


SAVED = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["sleepstudy", "cbpp", "salamanders_nb1"])
def test_results_saved_by_the_previous_layout_still_load(name):
    """Files saved by midas_glmm 0.1.0 before its subpackages (made at 528180a, see data/): their
    classes moved and the family became one class per family; they load with the same numbers
    and still predict (an old family object rebuilt as the class of its name: an LMM stays one)."""
    import json

    import midas_glmm

    want = json.loads((SAVED / "saved_0.1.0.json").read_text())[name]
    res = midas_glmm.load(SAVED / f"saved_0.1.0_{name}.pkl")
    assert res.llf == want["llf"] and res.params.tolist() == want["params"]
    assert type(res.family).__name__ != "Family"
    if name == "sleepstudy":
        assert res.family.is_lmm and res.varcorr()["vcov"].tolist() == pytest.approx(want["varcorr"], rel=1e-12)
        assert res.predict(datasets.load("sleepstudy").head(5)).tolist() == pytest.approx(want["predict"], rel=1e-12)
    if name == "cbpp":
        assert res.predict(datasets.load("cbpp").head(5)).tolist() == pytest.approx(want["predict"], rel=1e-12)
    if name == "salamanders_nb1":
        assert res.sigma == want["sigma"] and res.family.name == "nbinom1"
    assert "Random effects" in str(res.summary())


def test_refit_aligns_a_series_by_its_index(sleep):
    """refit(pd.Series) reads the response by the data's index, as fit_many aligns one (it used
    to take the values in their order, whatever the index said)."""
    data = sleep.set_index(pd.RangeIndex(500, 500 + len(sleep)))
    res = _fit("Reaction ~ Days + (Days|Subject)", data.iloc[5:])  # rows 0-4 of the data not used
    y2 = pd.Series(np.random.default_rng(2).normal(300, 40, len(data)), index=data.index)
    shuffled = y2.sample(frac=1.0, random_state=1)
    again = res.refit(shuffled)
    fresh = _fit("Reaction ~ Days + (Days|Subject)", data.iloc[5:].assign(Reaction=y2.iloc[5:]))
    assert again.llf == pytest.approx(fresh.llf, abs=1e-8)
    with pytest.raises(DataError, match="index does not hold every row the model uses"):
        res.refit(y2.iloc[:100])


def test_update_to_another_family_as_lme4(sleep):
    """update(family=...) as lme4's update(m, family = binomial): the model again with another
    family, its settings kept where they apply (an LMM's REML is no GLMM setting)."""
    df = sleep.assign(hit=(sleep.Reaction > 300).astype(float))
    lmm = _fit("hit ~ Days + (1|Subject)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        glmm = lmm.update(family="binomial")
        direct = MixedModel.from_formula("hit ~ Days + (1|Subject)", df, family="binomial").fit()
        back = glmm.update(family="gaussian")
    assert glmm.family.name == "binomial" and glmm.llf == pytest.approx(direct.llf, abs=1e-8)
    assert back.family.is_lmm and back.method == "REML" and back.llf == pytest.approx(lmm.llf, abs=1e-8)
