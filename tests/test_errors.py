"""Every user mistake gets one of the library's own exceptions, naming what is wrong."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from midas_glmm import (
    ConvergenceWarning,
    DataError,
    FamilyError,
    FewGroupsWarning,
    FitError,
    FormulaError,
    LaplaceAccuracyWarning,
    MidasError,
    MixedModel,
    datasets,
)
from midas_glmm.errors import RankDeficiencyWarning, ResponseLevelsWarning


@pytest.fixture
def sleep():
    return datasets.load("sleepstudy")


def fails(exc, pattern, formula, data, **kw):
    fit_kw = kw.pop("fit", None)
    with pytest.raises(exc, match=pattern) as info:
        m = MixedModel.from_formula(formula, data, **kw)
        if fit_kw is not None:
            m.fit(**fit_kw)
    assert isinstance(info.value, MidasError) and isinstance(info.value, ValueError)
    return str(info.value)


def test_unknown_column_suggests_the_closest(sleep):
    msg = fails(DataError, "column 'Reacton'", "Reacton ~ Days + (1|Subject)", sleep)
    assert "did you mean 'Reaction'" in msg
    fails(DataError, "column 'Subjects'", "Reaction ~ Days + (1|Subjects)", sleep)
    fails(DataError, "column 'Dys'", "Reaction ~ Days + (Dys|Subject)", sleep)


def test_no_random_effect_term(sleep):
    fails(FormulaError, "no random-effects term", "Reaction ~ Days", sleep)


def test_malformed_formula_points_at_the_place(sleep):
    msg = fails(FormulaError, "unclosed", "Reaction ~ Days + (1|Subject", sleep)
    assert "^" in msg


def test_non_numeric_response(sleep):
    fails(DataError, "not numeric", "Subject ~ Days + (1|Subject)", sleep.assign(Subject="s" + sleep["Subject"]))


@pytest.mark.parametrize(
    "family, values, pattern",
    [
        ("binomial", [0, 1, 2], r"outside \[0, 1\]"),
        ("poisson", [1, -1, 2], "negative"),
        ("poisson", [1, 1.5, 2], "non-integer"),
        ("gamma", [1.0, 0.0, 2.0], "non-positive"),
    ],
)
def test_response_outside_the_family_support(family, values, pattern):
    df = pd.DataFrame({"y": np.resize(values, 40), "g": np.repeat(np.arange(8), 5)})
    fails(DataError, pattern, "y ~ 1 + (1|g)", df, family=family)


def test_grouping_factor_with_one_level_or_one_row_per_level(sleep):
    fails(DataError, "only 1 level", "Reaction ~ Days + (1|one)", sleep.assign(one="a"))
    fails(DataError, "180 levels for 180 observations", "Reaction ~ Days + (1|row)", sleep.assign(row=np.arange(180)))


def test_observation_level_random_effects_are_fine_for_poisson():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.poisson(3, 60), "g": np.repeat(np.arange(12), 5), "obs": np.arange(60)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ 1 + (1|g) + (1|obs)", df, family="poisson").fit()
    assert res.ngroups["obs"] == 60


def test_empty_data_all_missing_and_infinite_values(sleep):
    fails(DataError, "no rows", "Reaction ~ Days + (1|Subject)", sleep.iloc[:0])
    fails(DataError, "every row has a missing value", "Reaction ~ Days + (1|Subject)", sleep.assign(Reaction=np.nan))
    bad = sleep.astype({"Days": float})
    bad.loc[5, "Days"] = np.inf
    fails(DataError, "column 'Days' holds infinite values", "Reaction ~ Days + (1|Subject)", bad)
    fails(DataError, "must be a pandas DataFrame", "Reaction ~ Days + (1|Subject)", sleep.to_numpy())


def test_method_family_nagq_and_optimizer_errors(sleep):
    cbpp = datasets.load("cbpp")
    f = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)"
    fails(FitError, "REML.*no meaning.*binomial", f, cbpp, family="binomial", fit={"method": "REML"})
    fails(FitError, "unknown method 'REMl2'", "Reaction ~ Days + (1|Subject)", sleep, fit={"method": "REMl2"})
    fails(FitError, "nAGQ and fast apply to non-Gaussian", "Reaction ~ Days + (1|Subject)", sleep, fit={"nAGQ": 5})
    fails(
        FitError,
        "single, scalar random-effects term",
        "Reaction ~ Days + (Days|Subject)",
        sleep.assign(Reaction=sleep.Reaction.round()),
        family="poisson",
        fit={"nAGQ": 5},
    )
    fails(FitError, "positive integer", f, cbpp, family="binomial", fit={"nAGQ": 0})
    fails(FitError, "unknown optimizer 'bfgs'", "Reaction ~ Days + (1|Subject)", sleep, fit={"optimizer": "bfgs"})
    fails(FamilyError, "unknown family 'binomal'", f, cbpp, family="binomal")
    fails(FamilyError, "family must be a name", f, cbpp, family=42)


def test_bad_weights_and_offsets(sleep):
    fails(DataError, "weights has 3 values", "Reaction ~ Days + (1|Subject)", sleep, weights=[1, 2, 3])
    fails(DataError, "column 'wt'", "Reaction ~ Days + (1|Subject)", sleep, weights="wt")
    fails(DataError, "weights has negative values", "Reaction ~ Days + (1|Subject)", sleep, weights=-np.ones(180))
    fails(DataError, "offset has non-finite values", "Reaction ~ Days + offset(np.log(Days)) + (1|Subject)", sleep)


def test_predict_newdata_errors(sleep):
    res = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
    with pytest.raises(DataError, match="lacks grouping column 'Subject'"):
        res.predict(pd.DataFrame({"Days": [1.0]}))
    assert res.predict(pd.DataFrame({"Days": [1.0]}), random_effects=False).shape == (1,)
    with pytest.raises(FitError, match="kind must be"):
        res.predict(kind="probability")


def test_few_groups_and_laplace_cautions():
    ds = datasets.load("dyestuff").head(20)  # 4 batches
    with pytest.warns(FewGroupsWarning, match="only 4 levels"):
        MixedModel.from_formula("Yield ~ 1 + (1|Batch)", ds)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 3), "x": rng.normal(size=90)})
    df["y"] = (rng.uniform(size=90) < 0.3).astype(int)
    with pytest.warns(LaplaceAccuracyWarning, match=re.escape("compare with nAGQ > 1")):
        MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial").fit()


def test_convergence_warning_class_is_a_user_warning():
    assert issubclass(ConvergenceWarning, UserWarning)


def test_response_that_the_fixed_effects_fit_exactly(sleep):
    exact = sleep.assign(Reaction=lambda d: 250.0 + 10.0 * d["Days"])
    with pytest.raises(FitError, match="'Reaction' is an exact linear function of the fixed effects"):
        MixedModel.from_formula("Reaction ~ Days + (1|Subject)", exact).fit()
    # a response that is only nearly linear is fitted
    near = exact.assign(Reaction=lambda d: d["Reaction"] + np.random.default_rng(1).normal(0, 1e-3, len(d)))
    assert MixedModel.from_formula("Reaction ~ Days + (1|Subject)", near).fit().sigma == pytest.approx(1e-3, rel=0.2)


@pytest.mark.parametrize(
    "weights, pattern",
    [
        (np.r_[np.inf, np.ones(179)], r"weights has infinite values \(row 0: inf\)"),
        (np.r_[np.ones(179), -2.0], r"weights has negative values \(row 179: -2\)"),
        (["a"] * 180, "weights is not numeric \\(e.g. 'a'\\)"),
        ("w_text", "weights column 'w_text' is not numeric"),
        ("w_inf", "weights column 'w_inf' has infinite values"),
        (np.zeros(180), "every prior weight is zero"),
    ],
)
def test_weights_that_make_no_model_are_named(sleep, weights, pattern):
    data = sleep.assign(w_text="a", w_inf=np.r_[np.ones(90), np.inf, np.ones(89)])
    fails(DataError, pattern, "Reaction ~ Days + (1|Subject)", data, weights=weights)


def test_a_missing_weight_drops_its_row_as_in_lme4(sleep):
    w = np.r_[np.nan, 1 + np.arange(179) % 3]
    res = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep, weights=w).fit()
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep.iloc[1:], weights=w[1:]).fit()
    assert res.nobs == 179 and res.n_dropped == 1
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)


def test_zero_weight_rows_count_in_nobs_as_in_lme4(sleep):
    # lme4's nobs() is nrow(model.frame): rows with a zero weight stay in it
    w = np.r_[np.zeros(10), np.ones(170)]
    assert MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep, weights=w).nobs == 180


def test_duplicate_column_names_are_named(sleep):
    dup = pd.concat([sleep, sleep[["Days"]]], axis=1)
    fails(DataError, "column 'Days' appears 2 times", "Reaction ~ Days + (1|Subject)", dup)
    # a duplicated column the model does not read is harmless
    other = pd.concat(
        [sleep, sleep[["Days"]].rename(columns={"Days": "x"}), sleep[["Days"]].rename(columns={"Days": "x"})], axis=1
    )
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
    assert MixedModel.from_formula("Reaction ~ Days + (1|Subject)", other).fit().llf == pytest.approx(
        ref.llf, abs=1e-10
    )


def test_dotted_names_are_read_whole_and_a_missing_one_is_named_whole(sleep):
    dotted = sleep.rename(columns={"Reaction": "reaction.ms", "Days": "days.n", "Subject": "subj.id"})
    ref = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", sleep).fit()
    res = MixedModel.from_formula("reaction.ms ~ days.n + (days.n|subj.id)", dotted).fit()
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)
    assert list(res.params.index) == ["(Intercept)", "days.n"]
    msg = fails(DataError, "column 'day.n'", "reaction.ms ~ day.n + (1|subj.id)", dotted)
    assert "did you mean 'days.n'" in msg and "backticks" in msg


def test_backticked_names_on_both_sides(sleep):
    odd = sleep.rename(columns={"Reaction": "reaction time", "Days": "days (n)", "Subject": "who?"})
    ref = MixedModel.from_formula("Reaction ~ Days + I(Days**2) + (1|Subject)", sleep).fit()
    res = MixedModel.from_formula("`reaction time` ~ `days (n)` + I(`days (n)`^2) + (1|`who?`)", odd).fit()
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)
    np.testing.assert_allclose(res.params.to_numpy(), ref.params.to_numpy(), rtol=1e-9)
    assert res.design.response_name == "reaction time"
    logged = MixedModel.from_formula("np.log(`reaction time`) ~ `days (n)` + (1|`who?`)", odd)
    np.testing.assert_allclose(logged.design.y, np.log(sleep["Reaction"]))
    fails(FormulaError, "backticks", "reaction time ~ Days + (1|Subject)", sleep)


def test_python_keywords_as_column_names(sleep):
    kw = sleep.rename(columns={"Reaction": "class", "Days": "lambda"})
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
    res = MixedModel.from_formula("class ~ lambda + (1|Subject)", kw).fit()
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)
    assert list(res.params.index) == ["(Intercept)", "lambda"]
    fails(FormulaError, "'lambda' is a Python keyword.*rename it", "class ~ I(lambda**2) + (1|Subject)", kw)


@pytest.mark.parametrize(
    "family, first, pattern",
    [
        ("poisson", 2.5, "non-integer values \\(e.g. 2.5\\)"),
        ("poisson", -1.0, "negative values"),
        ("binomial", 2.0, r"value 2 outside \[0, 1\]"),
        ("gamma", 0.0, "non-positive values"),
    ],
)
def test_dask_responses_are_checked_as_in_memory(family, first, pattern):
    import dask.dataframe as dd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(20), 10), "x": rng.normal(size=200)})
    df["y"] = np.r_[rng.integers(0, 2, 199).astype(float) + (family == "gamma"), first][::-1]
    df.loc[150, "y"] = first  # in the last partition too
    for data in (df, dd.from_pandas(df, npartitions=3)):
        fails(DataError, pattern, "y ~ x + (1|g)", data, family=family)


def test_dask_weights_and_infinite_values_are_checked_as_in_memory(sleep):
    import dask.dataframe as dd

    bad = sleep.assign(w=np.r_[np.ones(170), -1.0, np.ones(9)], inf=np.r_[np.ones(170), np.inf, np.ones(9)])
    ddf = dd.from_pandas(bad, npartitions=3)
    fails(DataError, "weights column 'w' has negative values", "Reaction ~ Days + (1|Subject)", ddf, weights="w")
    fails(DataError, "column 'inf' holds infinite values", "Reaction ~ inf + (1|Subject)", ddf)
    fails(DataError, "weights column 'Subject' is not numeric", "Reaction ~ Days + (1|Subject)", ddf, weights="Subject")


def test_dask_factor_response_uses_the_levels_of_all_partitions():
    import dask.dataframe as dd

    rng = np.random.default_rng(2)
    df = pd.DataFrame({"g": np.repeat(np.arange(20), 10), "x": rng.normal(size=200)})
    df["y"] = np.where(rng.uniform(size=200) < 0.5, "yes", "no")
    df.loc[df.index >= 130, "y"] = "yes"  # the last partition never sees the first level, 'no'
    mem = MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial")
    dsk = MixedModel.from_formula("y ~ x + (1|g)", dd.from_pandas(df, npartitions=3), family="binomial")
    src = dsk.design.source
    np.testing.assert_array_equal(src.map_rows(src.response).compute().to_numpy(), mem.design.y)
    np.testing.assert_array_equal(mem.design.y, (df["y"] == "yes").to_numpy(dtype=float))
    three = df.assign(y=np.where(df.index < 5, "maybe", df["y"]))
    with pytest.warns(ResponseLevelsWarning, match="'maybe' is failure"):
        MixedModel.from_formula("y ~ x + (1|g)", dd.from_pandas(three, npartitions=3), family="binomial")
    fails(DataError, "gaussian response must be numbers", "y ~ x + (1|g)", dd.from_pandas(df, npartitions=3))


def _arrays(sleep):
    return sleep["Reaction"].to_numpy(), np.column_stack([np.ones(180), sleep["Days"]]), sleep["Subject"].to_numpy()


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda y, X, g: (np.r_[np.nan, y[1:]], X, g), "endog has a missing value at row 0"),
        (lambda y, X, g: ([None, *y[1:]], X, g), "endog has a missing value at row 0"),
        (lambda y, X, g: (y, np.r_[X[:5], [[1, np.inf]], X[6:]], g), "exog has an infinite value at row 5"),
        (lambda y, X, g: (["a"] * 180, X, g), "endog must be numbers"),
        (lambda y, X, g: (y, [[1, 2], [1]] * 90, g), "exog must be numbers in a rectangular array"),
        (lambda y, X, g: (y, np.ones((180, 2, 2)), g), "exog must be 2-dimensional"),
        (lambda y, X, g: (y[:-1], X, g), "exog has 180 rows but endog has 179"),
        (lambda y, X, g: (y, X, g[:-1]), "grouping factor 'group' has 179 values"),
        (lambda y, X, g: (y, X, np.r_[[None], g[1:]]), "grouping factor 'group' has a missing value at row 0"),
        (lambda y, X, g: (y, X, {"subj": g}), None),
    ],
)
def test_array_constructor_checks_its_arrays(sleep, change, pattern):
    y, X, g = change(*_arrays(sleep))
    if pattern is None:  # the valid case: lme4's fit, as from_formula gives it
        ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
        assert MixedModel(y, X, g).fit().llf == pytest.approx(ref.llf, abs=1e-8)
        return
    with pytest.raises(DataError, match=re.escape(pattern)):
        MixedModel(y, X, g)


@pytest.mark.parametrize(
    "kw, pattern",
    [
        ({"weights": [1, 2]}, "weights has 2 rows but endog has 180"),
        ({"weights": -np.ones(180)}, "weights has negative values"),
        ({"offset": np.r_[np.inf, np.zeros(179)]}, "offset has an infinite value at row 0"),
        ({"exog_re": np.ones(3)}, "exog_re['group'] has 3 rows but endog has 180"),
        ({"exog_re": {"Subjects": np.ones(180)}}, "exog_re names 'Subjects', which is not a grouping factor"),
        ({"exog_names": ["a"]}, "exog_names has 1 names but exog has 2 columns"),
    ],
)
def test_array_constructor_checks_its_options(sleep, kw, pattern):
    with pytest.raises(DataError, match=re.escape(pattern)):
        MixedModel(*_arrays(sleep), **kw)


def test_array_constructor_drops_collinear_columns_as_from_formula(sleep):
    y, X, g = _arrays(sleep)
    with pytest.warns(RankDeficiencyWarning, match="rank deficient"):
        res = MixedModel(y, np.column_stack([X, 2 * X[:, 1]]), g, exog_names=["(Intercept)", "Days", "Days2"]).fit()
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
    assert list(res.params.index) == ["(Intercept)", "Days"]
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)


@pytest.mark.parametrize(
    "formula, kw, pattern",
    [
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": 101}, "lme4's limit of 100"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": 2000}, "lme4's limit of 100"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": True}, "positive integer, not True"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": 0}, "nAGQ=0 is fast=True"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": 2.0}, "positive integer, not 2.0"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd) + (1|obs)", {"nAGQ": 2}, "single, scalar"),
        ("cbind(incidence, size - incidence) ~ period + (period|herd)", {"nAGQ": 9}, "single, scalar"),
        ("cbind(incidence, size - incidence) ~ period + (1|herd)", {"nAGQ": 9, "fast": True}, "cannot be combined"),
    ],
)
def test_nagq_is_refused_early_where_lme4_refuses_it(formula, kw, pattern, monkeypatch):
    import midas_glmm.model

    def no_fit(*args, **kwargs):
        raise AssertionError("the engine ran before the options were checked")

    monkeypatch.setattr(midas_glmm.model, "fit_glmm", no_fit)
    cbpp = datasets.load("cbpp").assign(obs=lambda d: np.arange(len(d)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedModel.from_formula(formula, cbpp, family="binomial")
    with pytest.raises(FitError, match=re.escape(pattern)):
        model.fit(**kw)


def test_gamma_refuses_quadrature_before_fitting():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 5), "y": rng.gamma(2.0, 1.0, 50)})
    with pytest.raises(FitError, match="binomial, Poisson and ordinal models, not gamma"):
        MixedModel.from_formula("y ~ 1 + (1|g)", df, family="gamma").fit(nAGQ=5)


@pytest.mark.parametrize("family, value", [("gaussian", 3.5), ("binomial", 0), ("binomial", 1), ("poisson", 0)])
def test_a_constant_response_is_refused(family, value):
    df = pd.DataFrame({"y": np.full(40, value), "x": np.arange(40.0), "g": np.repeat(np.arange(8), 5)})
    fails(DataError, f"response 'y' is constant \\({value:g} in every row\\)", "y ~ x + (1|g)", df, family=family)


def test_zero_weights_that_leave_a_fixed_effect_inestimable(sleep):
    w = np.where(sleep["Days"] == 3, 1.0, 0.0)  # Days is constant among the weighted rows
    fails(
        DataError,
        r"rows with a positive weight cannot estimate the fixed effect\(s\) \['Days'\]",
        "Reaction ~ Days + (1|Subject)",
        sleep,
        weights=w,
    )


def test_a_numerical_failure_of_the_engine_is_a_fit_error(sleep, monkeypatch):
    import midas_glmm.model

    def singular(*args, **kwargs):
        raise np.linalg.LinAlgError("Matrix is not positive definite")

    monkeypatch.setattr(midas_glmm.model, "fit_lmm", singular)
    with pytest.raises(FitError, match="the fit failed numerically \\(LinAlgError: Matrix is not positive definite\\)"):
        MixedModel.from_formula("Reaction ~ Days + (1|Subject)", sleep).fit()
