"""What an ordinal fit (family="ordinal", clmm's cumulative link model) answers: predictions of the
categories checked against the model's formula by hand, the response's levels (and the errors
when they cannot be known), properties of the likelihood a bug would break, comparisons,
simulation, saving, and the clear refusals of what is not available for ordinal models.
The numbers themselves are checked against ordinal::clmm in tests/engine/test_ordinal_reference.py."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import midas_glmm
from midas_glmm import MixedModel
from midas_glmm.errors import DataError, FamilyError, FitError

WINE = Path(__file__).parents[1] / "reference" / "ordinal" / "wine.csv"
FORMULA = "rating ~ temp + contact + (1|judge)"


@pytest.fixture(scope="module")
def wine():
    return pd.read_csv(WINE)


def _fit(data, formula=FORMULA, **family):
    fam = midas_glmm.family("ordinal", **family) if family else "ordinal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, data, family=fam).fit()


@pytest.fixture(scope="module")
def res(wine):
    return _fit(wine)


def _by_hand(res, data, with_ranef=True):
    """P(Y = j) = F(τ_j − η) − F(τ_{j−1} − η), η = x'β (+ the judge's mode), F the logistic."""
    eta = (data["temp"] == "warm") * res.params.iloc[0] + (data["contact"] == "yes") * res.params.iloc[1]
    if with_ranef:
        modes = res.ranef()["judge"]["(Intercept)"]
        modes.index = modes.index.astype(str)
        eta = eta + data["judge"].astype(str).map(modes).fillna(0.0)
    cum = special.expit(res.thresholds.to_numpy()[None, :] - eta.to_numpy()[:, None])
    return np.diff(np.c_[np.zeros(len(data)), cum, np.ones(len(data))], axis=1)


def test_predict_prob_is_the_model_by_hand(res, wine):
    new = wine.iloc[[0, 5, 17, 40]]
    prob = res.predict(new, kind="prob")
    assert list(prob.columns) == [1, 2, 3, 4, 5]
    assert list(prob.index) == list(new.index)
    np.testing.assert_allclose(prob.to_numpy(), _by_hand(res, new), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-12)
    marginal = res.predict(new, kind="prob", random_effects=False)
    np.testing.assert_allclose(marginal.to_numpy(), _by_hand(res, new, with_ranef=False), rtol=1e-12, atol=1e-15)
    assert res.predict(new).equals(prob)  # "prob" is an ordinal model's default, as clm's predict()


def test_cum_prob_class_and_link_follow_from_prob(res, wine):
    new = wine.iloc[:10]
    prob = res.predict(new, kind="prob").to_numpy()
    cum = res.predict(new, kind="cum_prob")
    assert list(cum.columns) == ["<= 1", "<= 2", "<= 3", "<= 4"]
    np.testing.assert_allclose(cum.to_numpy(), np.cumsum(prob, axis=1)[:, :-1], rtol=1e-12)
    assert list(res.predict(new, kind="class")) == [[1, 2, 3, 4, 5][k] for k in prob.argmax(axis=1)]
    eta = res.predict(new, kind="link")
    np.testing.assert_allclose(special.expit(res.thresholds.to_numpy()[None, :] - eta[:, None]), cum.to_numpy())


def test_a_new_judge_gets_the_population_prediction(res, wine):
    new = wine.iloc[[0, 0]].assign(judge=["someone new", wine["judge"].iloc[0]])
    prob = res.predict(new, kind="prob").to_numpy()
    np.testing.assert_allclose(prob[0], res.predict(new.iloc[[0]], kind="prob", random_effects=False).to_numpy()[0])
    assert not np.allclose(prob[0], prob[1])


def test_fitted_values_are_the_observed_categories_probabilities(res, wine):
    prob = _by_hand(res, wine)
    np.testing.assert_allclose(res.fittedvalues.to_numpy(), prob[np.arange(len(wine)), wine["rating"] - 1], rtol=1e-10)


def test_summary_has_a_threshold_block(res):
    text = str(res.summary())
    assert "Threshold coefficients (logit link)" in text
    for name in ("1|2", "2|3", "3|4", "4|5"):
        assert f" {name} " in text
    assert "Family: ordinal" in text


def test_thresholds_shift_with_a_shifted_predictor(wine):
    """P(Y ≤ j) = F(τ_j − βx): x → x + c moves τ_j to τ_j + βc and leaves the likelihood alone."""
    data = wine.assign(x=wine["bottle"] / 4.0)
    base = _fit(data, "rating ~ x + (1|judge)")
    shifted = _fit(data.assign(x=data["x"] + 3.0), "rating ~ x + (1|judge)")
    assert shifted.llf == pytest.approx(base.llf, abs=1e-7)
    beta = base.params["x"]
    np.testing.assert_allclose(shifted.thresholds.to_numpy(), base.thresholds.to_numpy() + 3.0 * beta, rtol=1e-5)


def test_reversed_levels_mirror_the_fit(wine):
    """Reversing the categories' order negates β and mirrors the thresholds (symmetric logit)."""
    text = wine.assign(rating=wine["rating"].map(dict(zip(range(1, 6), "abcde"))))
    up = _fit(text, levels=list("abcde"))
    down = _fit(text, levels=list("edcba"))
    assert down.llf == pytest.approx(up.llf, abs=1e-7)
    np.testing.assert_allclose(down.params.to_numpy(), -up.params.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(down.thresholds.to_numpy(), -up.thresholds.to_numpy()[::-1], rtol=1e-5)
    assert list(down.thresholds.index) == ["e|d", "d|c", "c|b", "b|a"]


def test_row_order_does_not_matter(wine, res):
    shuffled = wine.sample(frac=1.0, random_state=3)
    assert _fit(shuffled).llf == pytest.approx(res.llf, abs=1e-7)


def test_levels_from_a_categorical_numbers_or_levels_give_one_fit(wine, res):
    labels = dict(zip(range(1, 6), ["poor", "fair", "good", "very good", "excellent"]))
    order = list(labels.values())
    text = wine.assign(rating=wine["rating"].map(labels))
    ordered = text.assign(rating=pd.Categorical(text["rating"], categories=order, ordered=True))
    for fit in (_fit(text, levels=order), _fit(ordered)):
        assert fit.llf == pytest.approx(res.llf, abs=1e-7)
        assert list(fit.thresholds.index) == ["poor|fair", "fair|good", "good|very good", "very good|excellent"]
    assert list(_fit(ordered).predict(wine.iloc[:2], kind="prob").columns) == order


def test_a_level_without_rows_is_dropped_as_clmm_does(wine, res):
    declared = wine.assign(rating=pd.Categorical(wine["rating"], categories=[0, 1, 2, 3, 4, 5, 6], ordered=True))
    fit = _fit(declared)
    assert list(fit.thresholds.index) == list(res.thresholds.index)
    assert fit.llf == pytest.approx(res.llf, abs=1e-7)


def test_the_response_must_have_a_knowable_order(wine):
    text = wine.assign(rating=wine["rating"].map(dict(zip(range(1, 6), "abcde"))))
    with pytest.raises(DataError, match="'rating' is text.*levels="):
        MixedModel.from_formula(FORMULA, text, family="ordinal")
    with pytest.raises(DataError, match="'rating' has values not in levels=: 'e'"):
        MixedModel.from_formula(FORMULA, text, family=midas_glmm.family("ordinal", levels=list("abcd")))
    with pytest.raises(DataError, match="single level"):
        MixedModel.from_formula(FORMULA, wine.assign(rating=3), family="ordinal")
    with pytest.raises(DataError, match="'rating' has 72 levels.*gaussian"):  # with the limit at 50
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("midas_glmm.families.ordinal.MAX_LEVELS", 50)
            MixedModel.from_formula(FORMULA, wine.assign(rating=np.arange(72)), family="ordinal")
    with pytest.raises(FamilyError, match="as a list"):
        midas_glmm.family("ordinal", levels="abcde")
    with pytest.raises(FamilyError, match="repeated level"):
        midas_glmm.family("ordinal", levels=["a", "b", "a"])
    with pytest.raises(FamilyError, match="logit, probit, cloglog, loglog or cauchit"):
        midas_glmm.family("ordinal", link="log")


def test_missing_responses_are_dropped_and_counted(wine, res):
    holes = wine.copy()
    holes.loc[[3, 10], "rating"] = np.nan
    before = holes.copy()
    fit = _fit(holes)
    assert fit.nobs == len(wine) - 2
    pd.testing.assert_frame_equal(holes, before)  # the caller's frame is untouched
    assert fit.llf > res.llf  # two fewer log-probabilities (each negative)


def test_compare_is_the_likelihood_ratio_test(wine, res):
    smaller = _fit(wine, "rating ~ temp + (1|judge)")
    table = midas_glmm.compare(smaller, res)
    chisq = 2 * (res.llf - smaller.llf)
    assert table["Chisq"].iloc[1] == pytest.approx(chisq, rel=1e-10)
    assert table["Df"].iloc[1] == 1
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(stats.chi2.sf(chisq, 1), rel=1e-8)
    assert res.aic() == pytest.approx(-2 * res.llf + 2 * 7)  # 4 thresholds, 2 β, 1 SD


def test_simulate_draws_levels_at_the_models_probabilities(res, wine):
    draws = res.simulate(n=400, seed=11, random_effects="conditional")
    assert draws.shape == (len(wine), 400)
    assert set(np.unique(draws)) <= {1, 2, 3, 4, 5}
    observed = np.stack([(draws == k).mean(axis=1) for k in range(1, 6)], axis=1)
    expected = _by_hand(res, wine)
    assert np.max(np.abs(observed.mean(axis=0) - expected.mean(axis=0))) < 0.02
    again = res.simulate(n=400, seed=11, random_effects="conditional")
    np.testing.assert_array_equal(draws, again)


def test_save_and_load_keep_the_predictions(res, wine, tmp_path):
    path = tmp_path / "ordinal.pkl"
    res.save(path)
    back = midas_glmm.load(path)
    pd.testing.assert_series_equal(back.thresholds, res.thresholds)
    pd.testing.assert_frame_equal(back.predict(wine.iloc[:5], kind="prob"), res.predict(wine.iloc[:5], kind="prob"))


def test_what_an_ordinal_model_does_not_answer_says_so(res, wine):
    with pytest.raises(FitError, match="kind='prob'"):
        res.predict(wine.iloc[:2], kind="response")
    with pytest.raises(FitError, match="ordinal model"):
        res.emmeans("temp")
    with pytest.raises(FitError, match="ordinal model"):
        res.get_prediction(wine.iloc[:2])
    with pytest.raises(FitError, match="ordinal"):
        res.r2()
    with pytest.raises(FitError, match="simulate_residuals"):
        res.resid()
    with pytest.raises(FitError, match="REML"):
        MixedModel.from_formula(FORMULA, wine, family="ordinal").fit(method="REML")
    with pytest.raises(FamilyError, match="dispformula"):
        MixedModel.from_formula(FORMULA, wine, family="ordinal", dispformula="~ temp")
    gaussian = MixedModel.from_formula("response ~ temp + (1|judge)", wine).fit()
    with pytest.raises(FitError, match="for ordinal models"):
        gaussian.predict(wine.iloc[:2], kind="prob")


def test_icc_uses_the_links_latent_variance(res):
    """The latent-scale ICC: σ²_judge / (σ²_judge + π²/3) for the logit link."""
    var = res.varcorr()["vcov"].iloc[0]
    assert res.icc()["judge"] == pytest.approx(var / (var + np.pi**2 / 3), rel=1e-12)
