"""predict(newdata) on the inputs that used to give silent wrong answers, against lme4's
predict(newdata, allow.new.levels = TRUE) (tests/reference/extra/results_checks/predict.json,
made by make_results_checks.R)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REF

from midas_glmm import MixedModel, datasets
from midas_glmm.errors import DataError, FitError

PREDICT = json.loads((REF / "extra" / "results_checks" / "predict.json").read_text())
SS = PREDICT["sleepstudy_numeric_subject"]
CB = PREDICT["cbpp_laplace"]
# tolerances of the reference README: fixed effects within 1e-3 SE (LMM) and 5e-3 SE (GLMM); a
# prediction here adds two of them (SEs about 1.5 ms for sleepstudy, 0.23 on cbpp's logit scale)
LMM_ATOL = 2 * 1e-3 * 1.5
GLMM_ATOL = 2 * 5e-3 * 0.23


def as_expected(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def sleep_int():
    """sleepstudy with Subject stored as integers, as in lme4's reference fit."""
    ss = datasets.load("sleepstudy").astype({"Subject": int})
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", ss).fit()


@pytest.fixture(scope="module")
def sleep_float():
    ss = datasets.load("sleepstudy").astype({"Subject": float})
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", ss).fit()


@pytest.fixture(scope="module")
def cbpp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(
            "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", datasets.load("cbpp"), family="binomial"
        ).fit()


def sleep_newdata(subject):
    return pd.DataFrame({"Days": [2.0, 2.0, 2.0, 2.0, np.nan], "Subject": subject})


# the same five groups written four ways: 308, 309, missing, unseen, 308 (with Days missing)
SUBJECTS = {
    "int": pd.array([308, 309, None, 999, 308], dtype="Int64"),
    "float": [308.0, 309.0, np.nan, 999.0, 308.0],
    "str": ["308", "309", None, "999", "308"],
    "mixed": [308, "309", None, 999.0, np.float64(308)],
}


@pytest.mark.parametrize("fit", ["sleep_int", "sleep_float"])
@pytest.mark.parametrize("written", sorted(SUBJECTS))
def test_grouping_levels_match_by_value_whatever_the_dtype(fit, written, request):
    res = request.getfixturevalue(fit)
    new = sleep_newdata(SUBJECTS[written])
    got = res.predict(new)
    assert np.allclose(got, as_expected(SS["conditional"]), atol=LMM_ATOL, equal_nan=True)
    marginal = res.predict(new, random_effects=False)
    assert np.allclose(marginal, as_expected(SS["marginal"]), atol=LMM_ATOL, equal_nan=True)


def test_string_grouping_fit_matches_numeric_newdata():
    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()
    got = res.predict(sleep_newdata(SUBJECTS["float"]))
    assert np.allclose(got, as_expected(SS["conditional"]), atol=LMM_ATOL, equal_nan=True)


def test_missing_and_new_grouping_values_give_population_predictions_in_a_glmm(cbpp):
    new = pd.DataFrame(CB["newdata"])
    for herd in (new["herd"], new["herd"].map(lambda h: None if pd.isna(h) else int(h))):
        got = cbpp.predict(new.assign(herd=herd), kind="link")
        assert np.allclose(got, CB["link"], atol=GLMM_ATOL)
    assert np.allclose(cbpp.predict(new), CB["response"], atol=GLMM_ATOL / 4)  # dμ/dη ≤ 1/4


def test_fixed_factor_levels_match_by_value(cbpp):
    new = pd.DataFrame(CB["newdata"])
    as_numbers = new.assign(period=new["period"].astype(int), herd=new["herd"].astype(float))
    assert np.allclose(cbpp.predict(as_numbers, kind="link"), CB["link"], atol=GLMM_ATOL)


@pytest.mark.parametrize("period", ["5", 5, 0.5])
def test_unseen_level_of_a_fixed_factor_is_an_error_naming_column_and_level(cbpp, period):
    new = pd.DataFrame({"period": ["1", period], "herd": ["1", "1"]})
    with pytest.raises(DataError, match=rf"newdata column 'period' has level {period!r}.*did not see.*1, 2, 3, 4"):
        cbpp.predict(new)


def test_unseen_level_inside_a_transformed_factor_is_an_error_too():
    df = datasets.load("sleepstudy")
    res = MixedModel.from_formula("Reaction ~ C(Days % 3) + (1|Subject)", df).fit()
    with pytest.raises(DataError, match="did not see"):
        res.predict(pd.DataFrame({"Days": [1.5], "Subject": ["308"]}))


def test_newdata_missing_a_column_names_it_with_a_suggestion(sleep_int):
    with pytest.raises(DataError, match="lacks column 'Days'; did you mean 'days'"):
        sleep_int.predict(pd.DataFrame({"days": [1.0], "Subject": [308]}))
    with pytest.raises(DataError, match="lacks grouping column 'Subject'.*random_effects=False"):
        sleep_int.predict(pd.DataFrame({"Days": [1.0]}))
    assert sleep_int.predict(pd.DataFrame({"Days": [1.0]}), random_effects=False).shape == (1,)


def test_a_missing_slope_value_gives_nan_only_where_the_slope_is_needed(sleep_int):
    new = pd.DataFrame({"Days": [np.nan, 1.0], "Subject": [308, 308]})
    assert np.isnan(sleep_int.predict(new)[0]) and np.isfinite(sleep_int.predict(new)[1])


def test_offset_given_by_keyword_cannot_be_replayed_and_says_so():
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"g": np.repeat(np.arange(12), 8), "x": rng.normal(size=96), "t": rng.uniform(1, 4, 96)})
    df["y"] = rng.poisson(df["t"] * np.exp(0.3 * df["x"]))
    kw = MixedModel.from_formula("y ~ x + (1|g)", df, family="poisson", offset=np.log(df["t"])).fit()
    with pytest.raises(FitError, match=r"offset\(np.log\(t\)\)"):
        kw.predict(df.head(3))
    inline = MixedModel.from_formula("y ~ x + offset(np.log(t)) + (1|g)", df, family="poisson").fit()
    assert np.allclose(inline.predict(df), inline.fittedvalues)
    assert np.allclose(kw.fittedvalues, inline.fittedvalues, rtol=1e-5)


def test_dask_fit_with_an_offset_column_predicts_with_it():
    """With Dask data offset= names a column, so predictions (and fitted values) include it."""
    import dask.dataframe as dd

    rng = np.random.default_rng(4)
    df = pd.DataFrame({"g": np.repeat(np.arange(12), 8), "x": rng.normal(size=96), "o": rng.uniform(0, 3, 96)})
    df["y"] = df["o"] + 0.5 * df["x"] + rng.normal(size=96) + rng.normal(size=12)[df["g"]]
    mem = MixedModel.from_formula("y ~ x + (1|g)", df, offset="o").fit()
    dsk = MixedModel.from_formula("y ~ x + (1|g)", dd.from_pandas(df, npartitions=2), offset="o").fit()
    assert np.allclose(dsk.fittedvalues.compute().to_numpy(), mem.fittedvalues.to_numpy(), atol=1e-6)
    assert np.allclose(dsk.predict(df), mem.fittedvalues.to_numpy(), atol=1e-6)


def test_levels_in_a_random_slope_term_are_matched_and_checked_too():
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"g": np.repeat(np.arange(15), 12), "f": np.tile([1, 2, 3], 60)})
    df["y"] = rng.normal(size=180) + rng.normal(size=15)[df["g"]] * (df["f"] == 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ 1 + (0 + C(f)|g)", df).fit()
    as_text = df.head(6).astype({"f": str, "g": str})
    assert np.allclose(res.predict(as_text), res.fittedvalues.to_numpy()[:6])
    with pytest.raises(DataError, match=r"newdata column 'f' has level 4, which the fit did not see"):
        res.predict(pd.DataFrame({"f": [4], "g": [0]}))


@pytest.mark.parametrize(
    "formula", ["my.y ~ my.x + (1|g)", "`my.y` ~ `my.x` + (`my.x`|g)", "my.y ~ np.log(my.x**2) + (1|g)"]
)
def test_predict_reads_dotted_and_backticked_columns(formula):
    """formulaic's own variable list splits `my.x` at the dot; predict must read the names as the
    fit did: on the fit's own rows it returns the fitted values."""
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"my.y": rng.normal(size=n), "my.x": rng.normal(size=n) + 3, "g": rng.integers(0, 10, n)})
    res = MixedModel.from_formula(formula, df).fit()
    assert np.asarray(res.predict(df.head(5))) == pytest.approx(np.asarray(res.fittedvalues)[:5], rel=1e-12)


def test_nested_groups_on_new_rows_find_their_levels():
    """(1|school/cls) on new rows: a (cls, school) pair the fit saw takes its effect, an unseen
    pair, an unseen class or a missing school none (lme4's allow.new.levels), each row's
    prediction the fixed part plus the effects it has."""
    rng = np.random.default_rng(4)
    school = np.repeat(np.array(["s1", "s2", "s3", "s4"]), 30)
    cls = np.tile(np.repeat([1, 2, 3], 10), 4)
    y = rng.normal(size=120) + np.repeat(rng.normal(0, 1.0, 4), 30) + np.repeat(rng.normal(0, 0.7, 12), 10)
    res = MixedModel.from_formula("y ~ 1 + (1|school/cls)", pd.DataFrame({"school": school, "cls": cls, "y": y})).fit()
    new = pd.DataFrame({"school": ["s2", "s4", "s1", "s3", None, "s2"], "cls": [3, 1, 9, 2, 1, 3]})
    re_school = res.ranef()["school"]["(Intercept)"]
    re_cls = res.ranef()["cls:school"]["(Intercept)"]
    want = [
        res.params.iloc[0] + re_school.get(s, 0.0) + re_cls.get(f"{c}:{s}", 0.0)
        if s is not None
        else res.params.iloc[0]
        for s, c in zip(new.school, new.cls)
    ]
    assert np.allclose(res.predict(new), want, atol=1e-10)
    assert res.predict(new)[0] == res.predict(new)[5]  # the same pair, the same level
