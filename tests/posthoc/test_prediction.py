"""get_prediction(): population-level standard errors against glmmTMB's
predict(se.fit = TRUE, re.form = NA) (tests/reference/predictions, made by
predictions/make_predictions.R), and the properties of the conditional and observation intervals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REF, read_reference_csv
from scipy import stats

from midas_glmm import MixedModel, datasets
from midas_glmm.errors import DataError

CASES = sorted(p.stem for p in (REF / "predictions").glob("*.json"))


@pytest.mark.parametrize("name", CASES)
def test_population_standard_errors_equal_glmmtmb(name):
    ref = json.loads((REF / "predictions" / f"{name}.json").read_text())
    df = read_reference_csv(REF / ref["data"])
    family = None if ref["family"] == "gaussian" else ref["family"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(ref["formula_py"], df, family=family).fit(method="ML" if family is None else None)
    assert res.llf == pytest.approx(ref["logLik"], abs=1e-3)
    pred = res.get_prediction(df.iloc[ref["rows"]], random_effects=False)
    assert np.allclose(pred.linpred, ref["fit"], rtol=1e-3, atol=1e-3 * np.std(ref["fit"]))
    assert np.allclose(pred.se_link, ref["se_fit"], rtol=1e-3)


@pytest.fixture(scope="module")
def sleep_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()


def test_conditional_variance_adds_the_random_effects_and_a_new_group_its_covariance(sleep_fit):
    res = sleep_fit
    new = pd.DataFrame({"Days": [0.0, 4.0, 9.0, 4.0], "Subject": ["308", "335", "372", "nobody"]})
    pop = res.get_prediction(new, random_effects=False)
    cond = res.get_prediction(new)
    Sig = res.term_covariances()[0]
    z = np.column_stack([np.ones(4), new.Days])
    # a seen subject: its conditional covariance; the new one: the term's covariance
    ranef = res.ranef(condvar=True)
    for i, subj in enumerate(new.Subject[:3]):
        assert cond.se_link[i] > pop.se_link[i]
        assert cond.linpred[i] == pytest.approx(res.predict(new.iloc[[i]])[0])
        sd = ranef[ranef.grp == subj].condsd.to_numpy()
        assert cond.se_link[i] ** 2 - pop.se_link[i] ** 2 >= 0.5 * min(sd) ** 2
    assert cond.se_link[3] ** 2 == pytest.approx(pop.se_link[3] ** 2 + z[3] @ Sig @ z[3], rel=1e-10)
    assert cond.linpred[3] == pytest.approx(pop.linpred[3])


def test_gaussian_frames_have_observation_intervals(sleep_fit):
    res = sleep_fit
    new = pd.DataFrame({"Days": [1.0, 8.0], "Subject": ["308", "nobody"]})
    for re in (True, False):
        f = res.get_prediction(new, random_effects=re).summary_frame(alpha=0.1)
        assert list(f.columns) == ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper", "obs_ci_lower", "obs_ci_upper"]
        z = stats.norm.ppf(0.95)
        assert np.allclose(f.mean_ci_upper - f["mean"], z * f.mean_se)
        assert np.all(f.obs_ci_lower < f.mean_ci_lower) and np.all(f.obs_ci_upper > f.mean_ci_upper)
    half = (f.obs_ci_upper - f["mean"]) / z
    Sig = res.term_covariances()[0]
    zr = np.column_stack([np.ones(2), new.Days])
    extra = np.einsum("ia,ab,ib->i", zr, Sig, zr)
    assert np.allclose(half**2, f.mean_se**2 + res.sigma**2 + extra)


def test_glmm_intervals_are_on_the_response_scale_and_ordered():
    cbpp = datasets.load("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(
            "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", cbpp, family="binomial"
        ).fit()
    f = res.get_prediction().summary_frame()
    assert "obs_ci_lower" not in f.columns
    assert np.all((0 < f.mean_ci_lower) & (f.mean_ci_lower < f["mean"]) & (f["mean"] < f.mean_ci_upper))
    assert np.all(f.mean_ci_upper < 1)
    assert np.allclose(f["mean"], res.fittedvalues)
    p = res.get_prediction()
    assert np.allclose(f.mean_se, f["mean"] * (1 - f["mean"]) * p.se_link)


def test_missing_predictors_give_nan_rows_and_missing_columns_an_error(sleep_fit):
    new = pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "308"]}, index=[10, 11])
    f = sleep_fit.get_prediction(new).summary_frame()
    assert list(f.index) == [10, 11] and f.iloc[0].notna().all() and f.iloc[1].isna().all()
    with pytest.raises(DataError, match="Subject"):
        sleep_fit.get_prediction(pd.DataFrame({"Days": [1.0]}))
