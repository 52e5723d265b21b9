"""Property-based checks of the front end: for data with missing values, odd dtypes, extreme
scales, degenerate groups and bad weights, a model either raises one of the library's errors
with a message naming the fault, or fits exactly what lme4 fits — the fit on the cleaned data.
Never a raw exception, NaN estimates or a silently different model; never a changed DataFrame.
"""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midas_glmm import MixedModel
from midas_glmm.errors import MidasError

PROPERTY = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

#: every message a bad input may get here; anything else is a new kind of failure to look at
KNOWN_ERRORS = re.compile(
    "|".join(
        [
            r"grouping factor '\w+' has only \d+ level",
            r"grouping factor '\w+' has \d+ levels for \d+ observations",
            r"has \d+ random effects for \d+ observations",
            r"every row has a missing value",
            r"weights has (negative|infinite) values \(row",
            r"weights( column 'w')? is not numeric",
            r"every prior weight is zero",
            r"is an exact linear function of the fixed effects",
            r"binomial response 'y' has the single level",
            r"response 'y' is constant",
            r"rows with a positive weight cannot estimate the fixed effect",
            r"the fit failed numerically",
        ]
    )
)


@st.composite
def frames(draw, binary: bool = False) -> pd.DataFrame:
    """A clean frame: response y, predictor x, grouping g (2 to 7 groups of 1 to 6 rows)."""
    n_groups, per_group = draw(st.integers(2, 7)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=len(g))
    eta = 0.5 + 1.5 * x + rng.normal(0, 1, n_groups)[g]
    y = (rng.uniform(size=len(g)) < 1 / (1 + np.exp(-eta))).astype(float) if binary else eta + rng.normal(size=len(g))
    return pd.DataFrame({"y": y, "x": x, "g": g})


def outcome(fit):
    """("fit", results) or ("error", exception); a raw exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "fit", fit()
    except MidasError as exc:
        assert KNOWN_ERRORS.search(str(exc)), f"unexpected library error: {exc}"
        return "error", exc


def assert_same(got, ref) -> None:
    """Both raise the same class of library error, or both fit the same model to the same rows."""
    assert got[0] == ref[0], (got, ref)
    if got[0] == "error":
        assert type(got[1]) is type(ref[1]), (got, ref)
        return
    a, b = got[1], ref[1]
    assert np.all(np.isfinite(a.params)) and np.all(np.isfinite(a.bse)) and np.isfinite(a.llf)
    assert list(a.params.index) == list(b.params.index)
    assert a.nobs == b.nobs
    assert a.llf == pytest.approx(b.llf, rel=1e-7, abs=1e-7)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-6 * (1 + np.abs(b.params).max()))


def lmm(formula, data, **kw):
    return lambda: MixedModel.from_formula(formula, data, **kw).fit(method="ML")


def glmm(formula, data, **kw):
    return lambda: MixedModel.from_formula(formula, data, family="binomial", **kw).fit()


@PROPERTY
@given(frames(), st.data())
def test_missing_values_give_the_fit_on_the_complete_rows(df, data):
    n = len(df)
    holes = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(["y", "x", "g"])), max_size=n))
    bad = df.astype({"g": object})
    for row, col in holes:
        bad.loc[row, col] = None if col == "g" else np.nan
    before = bad.copy(deep=True)
    got = outcome(lmm("y ~ x + (1|g)", bad))
    pd.testing.assert_frame_equal(bad, before)  # the caller's frame is untouched
    ref = outcome(lmm("y ~ x + (1|g)", bad.dropna()))
    assert_same(got, ref)
    if got[0] == "fit":
        assert got[1].n_dropped == n - len(bad.dropna())


DTYPES = {
    "g as text": lambda d: d.assign(g="s" + d["g"].astype(str)),
    "g as category": lambda d: d.assign(g=d["g"].astype("category")),
    "g as object": lambda d: d.assign(g=d["g"].astype(object)),
    "y as Float64": lambda d: d.assign(y=d["y"].astype("Float64")),
    "x as object numbers": lambda d: d.assign(x=d["x"].astype(object)),
    "x as Float64 with NA": lambda d: d.assign(x=pd.array(np.r_[np.nan, d["x"].to_numpy()[1:]], dtype="Float64")),
    "x as Int64 with NA": lambda d: d.assign(x=pd.array(np.r_[None, np.round(3 * d["x"][1:])], dtype="Int64")),
}


@PROPERTY
@given(frames(), st.sampled_from(sorted(DTYPES)))
def test_odd_dtypes_fit_the_same_model(df, kind):
    odd = DTYPES[kind](df)
    clean = odd.astype({"y": float, "x": float}).dropna()  # plain float columns, complete rows
    if kind.startswith("g"):
        clean = df
    assert_same(outcome(lmm("y ~ x + (1|g)", odd)), outcome(lmm("y ~ x + (1|g)", clean)))


BINARY = {
    "bool": lambda y: y.astype(bool),
    "text": lambda y: np.where(y == 1, "yes", "no"),
    "category": lambda y: pd.Categorical(np.where(y == 1, "b", "a"), categories=["a", "b"]),
    "Int64 with NA": lambda y: pd.array(np.r_[None, y[1:]], dtype="Int64"),
}


def separated(df: pd.DataFrame) -> bool:
    """x splits the 0s from the 1s: the fixed effects' estimates are infinite (lme4 reports huge
    ones), so there is no finite fit to compare."""
    x0, x1 = df.loc[df["y"] == 0, "x"], df.loc[df["y"] == 1, "x"]
    return len(x0) == 0 or len(x1) == 0 or x0.max() < x1.min() or x1.max() < x0.min()


@PROPERTY
@given(frames(binary=True).filter(lambda d: not separated(d) or d["y"].nunique() < 2), st.sampled_from(sorted(BINARY)))
def test_binary_responses_of_any_dtype_fit_the_same_model(df, kind):
    odd = df.assign(y=BINARY[kind](df["y"].to_numpy()))
    clean = df.iloc[1:] if kind == "Int64 with NA" else df
    assert_same(outcome(glmm("y ~ x + (1|g)", odd)), outcome(glmm("y ~ x + (1|g)", clean)))


SCALES = [(scale, shift) for scale in (1e-8, 1e-3, 1e3, 1e8) for shift in (0.0, 1e4, 1e7, -1e9)]


@PROPERTY
@given(frames(), st.sampled_from([(a, b) for a, b in SCALES if abs(b) <= 1e7 * a]))
def test_rescaled_and_shifted_predictors_give_the_same_fit(df, scale_shift):
    # the shift keeps at least 9 of the 16 digits of x * scale: what is left is x, not rounding
    scale, shift = scale_shift
    ref = outcome(lmm("y ~ x + (1|g)", df))
    got = outcome(lmm("y ~ x + (1|g)", df.assign(x=df["x"] * scale + shift)))
    assert got[0] == ref[0], (got, ref)
    if got[0] == "fit":
        a, b = got[1], ref[1]
        assert list(a.params.index) == ["(Intercept)", "x"], "a predictor was dropped"
        assert a.llf == pytest.approx(b.llf, rel=1e-7, abs=1e-7)
        assert a.params["x"] * scale == pytest.approx(b.params["x"], rel=1e-5, abs=1e-8)


@PROPERTY
@given(frames(), st.data())
def test_prior_weights(df, data):
    n = len(df)
    w = np.array(
        data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0, np.nan, np.inf, -1.0]), min_size=n, max_size=n))
    )
    got = outcome(lmm("y ~ x + (1|g)", df, weights=w))
    if np.isinf(w).any() or (w < 0).any():
        assert got[0] == "error" and re.search(r"weights has (negative|infinite) values", str(got[1]))
        return
    keep = ~np.isnan(w)  # lme4 drops a row with a missing weight; a zero weight stays in nobs
    assert_same(got, outcome(lmm("y ~ x + (1|g)", df[keep], weights=w[keep])))


@PROPERTY
@given(frames(), st.sampled_from(["text", "one level", "one row per group"]))
def test_degenerate_groups_and_text_weights_are_named(df, kind):
    if kind == "text":
        got = outcome(lmm("y ~ x + (1|g)", df.assign(w="heavy"), weights="w"))
        assert got[0] == "error" and "weights column 'w' is not numeric" in str(got[1])
    elif kind == "one level":
        got = outcome(lmm("y ~ x + (1|g)", df.assign(g=7)))
        assert got[0] == "error" and "grouping factor 'g' has only 1 level" in str(got[1])
    else:
        got = outcome(lmm("y ~ x + (1|g)", df.assign(g=np.arange(len(df)))))
        assert got[0] == "error" and f"has {len(df)} levels for {len(df)} observations" in str(got[1])


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    levels=st.integers(4, 20),
    balanced=st.booleans(),
    formula=st.sampled_from(["y ~ x + (x|g)", "y ~ 1 + (1|g)", "y ~ x + (1|g)", "y ~ x + (x|g) + (1|h)"]),
    method=st.sampled_from(["REML", "ML"]),
    sds=st.tuples(st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([0.0, 0.2, 0.8])),
)
def test_the_default_start_ends_where_bobyqa_does(seed, levels, balanced, formula, method, sds):
    """The default fit (moment start from the levels' own regressions, a balanced design's start
    taken once the check confirms it) never ends below BOBYQA's (asked for by name), on balanced
    and unbalanced designs, variances zero or not."""
    rng = np.random.default_rng(seed)
    sizes = np.full(levels, 5) if balanced else rng.integers(3, 9, levels)  # more rows than random effects
    g = np.repeat(np.arange(levels), sizes)
    x = np.tile(np.arange(5.0), levels) if balanced else rng.normal(size=len(g))
    y = 1 + 0.5 * x + rng.normal(0, sds[0], levels)[g] + rng.normal(0, sds[1], levels)[g] * x + rng.normal(size=len(g))
    data = pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": rng.integers(0, 4, len(g)).astype(str)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedModel.from_formula(formula, data)
        default, searched = model.fit(method=method), model.fit(method=method, optimizer="bobyqa")
    assert default.llf >= searched.llf - 1e-6
