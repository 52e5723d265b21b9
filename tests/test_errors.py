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
        "single scalar random-effects term",
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
    fails(DataError, "weights must be non-negative", "Reaction ~ Days + (1|Subject)", sleep, weights=-np.ones(180))
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
