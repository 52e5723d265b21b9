"""Building the design: missing values, the caller's data, grouping-column types, weights."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midas_glmm import MixedModel, datasets
from midas_glmm.design.fixed import column_moments, column_sums, independent_columns
from midas_glmm.errors import DataError, RankDeficiencyWarning, ResponseLevelsWarning


def test_missing_values_are_dropped_and_counted():
    df = datasets.load("sleepstudy")
    df.loc[[3, 40, 41], "Reaction"] = np.nan
    df.loc[[7], "Days"] = np.nan
    df.loc[[9], "Subject"] = None
    res = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df).fit()
    assert res.nobs == 175 and res.n_dropped == 5
    assert "Rows dropped for missing values: 5" in str(res.summary())
    clean = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df.dropna()).fit()
    assert res.llf == pytest.approx(clean.llf, abs=1e-10)


def test_unused_columns_with_missing_values_do_not_drop_rows():
    df = datasets.load("sleepstudy").assign(other=np.nan)
    assert MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df).nobs == 180


def test_callers_dataframe_is_untouched():
    df = datasets.load("cbpp")
    df.loc[0, "size"] = np.nan
    before = df.copy(deep=True)
    MixedModel.from_formula("cbind(incidence, size - incidence) ~ C(period) + (1|herd)", df, family="binomial").fit()
    pd.testing.assert_frame_equal(df, before)


def test_grouping_column_types_give_the_same_fit():
    df = datasets.load("sleepstudy")
    fits = []
    for col in (df["Subject"].astype(str), df["Subject"].astype(int), df["Subject"].astype("category")):
        fits.append(MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", df.assign(Subject=col)).fit())
    for r in fits[1:]:
        assert r.reml_criterion == pytest.approx(fits[0].reml_criterion, abs=1e-9)
        assert list(r.ranef()["Subject"].index) == list(fits[0].ranef()["Subject"].index)


def test_weights_by_name_or_array():
    df = datasets.load("sleepstudy").assign(w=lambda d: 1 + (d.index % 4) / 4)
    a = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df, weights="w").fit()
    b = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df, weights=df["w"].to_numpy()).fit()
    c = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df).fit()
    assert a.llf == pytest.approx(b.llf, abs=1e-10)
    assert a.llf != pytest.approx(c.llf, abs=1e-3)


def test_rank_deficient_design_drops_columns_with_a_warning():
    df = datasets.load("sleepstudy").assign(Days2=lambda d: 2 * d["Days"])
    with pytest.warns(Warning, match="rank deficient"):
        res = MixedModel.from_formula("Reaction ~ Days + Days2 + (1|Subject)", df).fit()
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df).fit()
    assert list(res.params.index) == ["(Intercept)", "Days"]
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)
    assert len(res.predict(df.head(3))) == 3


def test_transformations_and_interactions_in_the_fixed_part():
    df = datasets.load("sleepstudy")
    res = MixedModel.from_formula("np.log(Reaction) ~ Days + I(Days**2) + (1|Subject)", df).fit()
    assert list(res.params.index) == ["(Intercept)", "Days", "I(Days ** 2)"]
    new = df.head(4)
    manual = res.params.iloc[0] + res.params.iloc[1] * new["Days"] + res.params.iloc[2] * new["Days"] ** 2
    assert np.allclose(res.predict(new, random_effects=False), manual)


def test_caret_means_power_as_in_r():
    df = datasets.load("sleepstudy")
    r = MixedModel.from_formula("Reaction ~ Days + I(Days^2) + (1|Subject)", df).design
    py = MixedModel.from_formula("Reaction ~ Days + I(Days**2) + (1|Subject)", df).design
    np.testing.assert_array_equal(r.X, py.X)
    np.testing.assert_array_equal(r.X[:, 2], df["Days"].to_numpy() ** 2)  # not Days XOR 2
    sq = MixedModel.from_formula("Reaction ~ Days + (1|Subject) + (0 + I(Days^2) | Subject)", df).design
    np.testing.assert_array_equal(sq.terms[1].Zcols[:, 0], df["Days"].to_numpy() ** 2)
    resp = MixedModel.from_formula("Reaction^2 ~ Days + (1|Subject)", df).design
    np.testing.assert_allclose(resp.y, df["Reaction"].to_numpy() ** 2)


@pytest.mark.parametrize("shift", [1e5, 1e7, 1e9])
def test_a_large_mean_does_not_make_a_predictor_look_constant(shift):
    df = datasets.load("sleepstudy")
    ref = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", df).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        res = MixedModel.from_formula("Reaction ~ x + (1|Subject)", df.assign(x=df["Days"] + shift)).fit()
    assert res.params["x"] == pytest.approx(ref.params["Days"], rel=1e-9)
    assert res.bse["x"] == pytest.approx(ref.bse["Days"], rel=1e-6)
    # the intercept moves by exactly -slope * shift
    assert res.params["(Intercept)"] == pytest.approx(ref.params["(Intercept)"] - shift * ref.params["Days"], rel=1e-9)


def test_a_large_mean_without_an_intercept_is_centred_through_the_dummies():
    df = datasets.load("sleepstudy").assign(half=lambda d: np.where(d["Days"] < 5, "a", "b"))
    ref = MixedModel.from_formula("Reaction ~ 0 + C(half) + Days + (1|Subject)", df).fit()
    res = MixedModel.from_formula("Reaction ~ 0 + C(half) + x + (1|Subject)", df.assign(x=df["Days"] + 1e8)).fit()
    assert res.params["x"] == pytest.approx(ref.params["Days"], rel=1e-8)
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-8)


@pytest.mark.parametrize(
    "extra, dropped",
    [
        ({"x2": lambda d: 3.0 * d["Days"] + 1e7}, ["x2"]),  # collinear with Days and the intercept
        ({"c": lambda d: np.full(len(d), 1e7)}, ["c"]),  # a constant: collinear with the intercept
        ({"x2": lambda d: d["Days"] * (1 + 1e-12)}, ["x2"]),  # numerically the same column
    ],
)
def test_truly_collinear_columns_are_still_dropped(extra, dropped):
    df = datasets.load("sleepstudy").assign(**extra)
    name = next(iter(extra))
    with pytest.warns(RankDeficiencyWarning, match="rank deficient"):
        m = MixedModel.from_formula(f"Reaction ~ Days + {name} + (1|Subject)", df)
    assert m.design.dropped_columns == dropped
    assert m.design.fixed_names == ["(Intercept)", "Days"]


def test_rank_rule_is_unchanged_by_a_shift_and_matches_a_qr():
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(size=n)
    dummies = np.eye(3)[rng.integers(0, 3, n)][:, 1:]
    names = ["(Intercept)", "x", "f1", "f2", "lin", "mix"]

    def design(shift):
        return np.column_stack([np.ones(n), x + shift, dummies, 2 * x - 5, dummies[:, 0] + x])

    with pytest.warns(RankDeficiencyWarning):
        keep, dropped = independent_columns(n, *column_moments(design(1e8)), names)
    assert dropped == ["lin", "mix"]
    with pytest.warns(RankDeficiencyWarning):
        assert list(independent_columns(n, *column_moments(design(0.0)), names)[0]) == list(keep)
    assert np.linalg.matrix_rank(design(0.0)) == len(keep) == np.linalg.matrix_rank(design(0.0)[:, keep])


@pytest.mark.parametrize("n", [1, 4097, 65_536, 65_537, 140_001])
def test_column_moments_in_chunks_equal_exact_centred_sums(n):
    """Means and centred cross-products across the pass's chunk boundaries (the buffer reused,
    a last chunk shorter), on columns shifted by 1e7: exact to the shifted data's precision."""
    rng = np.random.default_rng(n)
    X = np.column_stack([np.ones(n), 1e7 + rng.normal(size=n), rng.integers(0, 3, n), rng.normal(size=n) * 1e-3])
    mean, C = column_moments(X)
    exact_mean = np.array([np.sum(c.astype(np.longdouble)) / n for c in X.T], dtype=float)
    D = X - exact_mean
    assert mean == pytest.approx(exact_mean, rel=1e-15, abs=1e-12)
    assert C == pytest.approx(D.T @ D, rel=1e-9, abs=1e-9 * max(n, 1))


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7,), (5_000, 6), (5_000,)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_column_sums_equal_exact_sums(shape, order):
    """The BLAS column sums of the moments and the rough OLS: each column's exact sum (computed in
    long double) to double precision, whatever the memory order, for vectors and empty arrays."""
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    X = np.asarray(1e4 + rng.normal(size=shape), order=order)
    exact = np.sum(X.astype(np.longdouble), axis=0).astype(float)
    got = column_sums(X)
    assert np.shape(got) == np.shape(exact)
    assert got == pytest.approx(exact, rel=1e-13, abs=0)


def _binary_data(seed=0, n=240):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"g": np.repeat(np.arange(24), n // 24), "x": rng.normal(size=n)})
    u = rng.normal(0, 0.8, 24)[df["g"]]
    df["y01"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(-0.3 + 0.8 * df["x"] + u)))).astype(int)
    return df


@pytest.mark.parametrize(
    "coded",
    [
        lambda y: np.where(y == 1, "Y", "N"),  # lme4's VerbAgg r2: N < Y
        lambda y: np.where(y == 1, "y", "n"),  # MASS bacteria: n < y
        lambda y: pd.Categorical(np.where(y == 1, "yes", "no"), categories=["no", "yes"]),
        lambda y: y.astype(bool),
        lambda y: pd.array(y, dtype="Int64"),
    ],
    ids=["text-YN", "text-ny", "categorical", "bool", "Int64"],
)
def test_binomial_factor_response_is_coded_as_lme4_codes_it(coded):
    df = _binary_data()
    ref = MixedModel.from_formula("y01 ~ x + (1|g)", df, family="binomial")
    m = MixedModel.from_formula("y ~ x + (1|g)", df.assign(y=coded(df["y01"].to_numpy())), family="binomial")
    np.testing.assert_array_equal(m.design.y, ref.design.y)


def test_binomial_factor_levels_follow_the_category_order():
    # first level = failure: reversing the categories mirrors the fit (beta -> -beta, same theta)
    df = _binary_data()
    text = np.where(df["y01"] == 1, "yes", "no")
    fits = [
        MixedModel.from_formula(
            "y ~ x + (1|g)", df.assign(y=pd.Categorical(text, categories=cats)), family="binomial"
        ).fit()
        for cats in (["no", "yes"], ["yes", "no"])
    ]
    np.testing.assert_allclose(fits[1].params.to_numpy(), -fits[0].params.to_numpy(), rtol=1e-5, atol=1e-8)
    assert fits[1].llf == pytest.approx(fits[0].llf, abs=1e-6)


def test_binomial_response_with_more_levels_codes_the_first_as_failure_with_a_warning():
    df = _binary_data()
    three = np.where(df["y01"] == 0, "a", np.where(df["x"] > 0, "b", "c"))
    with pytest.warns(ResponseLevelsWarning, match="3 levels.*'a' is failure"):
        m = MixedModel.from_formula("y ~ x + (1|g)", df.assign(y=three), family="binomial")
    np.testing.assert_array_equal(m.design.y, df["y01"].to_numpy())


@pytest.mark.parametrize("family", ["gaussian", "poisson", "gamma"])
def test_text_response_for_other_families_is_refused(family):
    df = _binary_data().assign(y=lambda d: np.where(d["y01"] == 1, "Y", "N"))
    with pytest.raises(DataError, match="response 'y' is not numeric \\(levels 'N', 'Y'\\).*family='binomial'"):
        MixedModel.from_formula("y ~ x + (1|g)", df, family=family)


def test_single_level_binomial_factor_is_refused():
    df = _binary_data().assign(y="Y")
    with pytest.raises(DataError, match="single level 'Y'"):
        MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial")


def test_numbers_in_an_object_column_are_numbers_not_a_factor():
    df = datasets.load("sleepstudy")
    ref = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", df).fit()
    obj = df.assign(Days=df["Days"].astype(object))
    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", obj).fit()
    assert list(res.params.index) == ["(Intercept)", "Days"]  # not one dummy per day
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, abs=1e-9)
    np.testing.assert_allclose(res.predict(obj.head(5)), ref.predict(df.head(5)), rtol=1e-10)
    text = df.assign(Days=df["Days"].astype(str))  # text stays a factor, as in R
    assert len(MixedModel.from_formula("Reaction ~ Days + (1|Subject)", text).design.fixed_names) == 10


def test_dask_reads_dotted_and_backticked_names_as_pandas_does():
    import dask.dataframe as dd

    df = datasets.load("sleepstudy").rename(columns={"Reaction": "r.t", "Days": "my days", "Subject": "subj.id"})
    f = "r.t ~ C(`my days`) + (1|subj.id)"
    mem = MixedModel.from_formula(f, df).fit()
    dsk = MixedModel.from_formula(f, dd.from_pandas(df, npartitions=3)).fit()
    assert list(dsk.params.index) == list(mem.params.index)
    assert dsk.reml_criterion == pytest.approx(mem.reml_criterion, abs=1e-8)


@pytest.mark.parametrize(
    ("formula", "columns", "plain_formula"),
    [
        ("y ~ x + (1|グループ)", {"g": "グループ"}, "y ~ x + (1|g)"),  # a grouping factor in any script
        ("y ~ 横 + (1|g)", {"x": "横"}, "y ~ x + (1|g)"),
        ("y ~ np + (1|g)", {"x": "np"}, "y ~ x + (1|g)"),  # a column named like numpy's alias
        ("y ~ log + (1|g)", {"x": "log"}, "y ~ x + (1|g)"),
        ("y ~ `0` + (1|`1`)", {"x": 0, "g": 1}, "y ~ x + (1|g)"),  # integer column names
        ("y ~ center(x) + (1|g)", {}, "y ~ center(x) + (1|g)"),  # a stateful transform's variable
    ],
)
def test_any_pandas_column_name_works_in_a_formula(formula, columns, plain_formula):
    """Names pandas allows are usable (backticks for non-identifiers): the fit equals the one with
    plain names, and predict(newdata) reads the same columns."""
    rng = np.random.default_rng(11)
    plain = pd.DataFrame({"y": rng.normal(size=90), "x": rng.normal(size=90), "g": np.repeat(list("abcdefghi"), 10)})
    named = plain.rename(columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, named).fit()
        base = MixedModel.from_formula(plain_formula, plain).fit()
    assert res.params.to_numpy() == pytest.approx(base.params.to_numpy(), rel=1e-10)
    assert res.llf == pytest.approx(base.llf, rel=1e-12)
    assert np.allclose(res.predict(named.head(4)), base.predict(plain.head(4)), rtol=1e-10)


def test_reference_grid_keeps_covariates_with_at_most_two_values():
    """emmeans' cov.keep = "2": a covariate with one or two distinct values (NaN aside) enters
    the grid at each of them, sorted; one with more at its mean; a pandas nullable column too."""
    from midas_glmm.design.formula import parse_formula
    from midas_glmm.design.grid import reference_grid_info

    df = pd.DataFrame(
        {
            "y": np.arange(8.0),
            "ind": [1.0, 0.0, np.nan, 1.0, 0.0, 0.0, 1.0, 1.0],
            "one": [2.5] * 8,
            "three": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0],
            "nullable": pd.array([3, None, -1, 3, -1, 3, 3, -1], dtype="Int64"),
            "g": list("abababab"),
        }
    )
    info = reference_grid_info(parse_formula("y ~ ind + one + three + nullable + (1|g)"), df)
    assert info["ind"] == ("kept", [0.0, 1.0])
    assert info["one"] == ("kept", [2.5])
    assert info["three"] == ("numeric", pytest.approx(df["three"].mean()))
    assert info["nullable"] == ("kept", [-1.0, 3.0])


def test_text_with_pandas_na_is_a_factor_as_plain_text_is():
    """A predictor of pandas' ``string`` dtype (missing values as pd.NA, as after
    ``convert_dtypes()``) is a factor, as plain text is, in the fit and in predict's new rows
    (formulaic alone would try to read it as numbers)."""
    rng = np.random.default_rng(5)
    n = 240
    f = rng.choice(["lo", "mid", "hi"], n)
    g = rng.integers(0, 12, n)
    y = np.select([f == "mid", f == "hi"], [1.0, 2.5], 0.0) + rng.normal(0, 1, 12)[g] + rng.normal(size=n)
    plain = pd.DataFrame({"y": y, "f": pd.Series(f, dtype=object), "g": g})
    na_text = plain.astype({"f": "string"})
    want = MixedModel.from_formula("y ~ f + (f | g)", plain).fit()
    got = MixedModel.from_formula("y ~ f + (f | g)", na_text).fit()
    assert list(got.params.index) == list(want.params.index) == ["(Intercept)", "f[T.lo]", "f[T.mid]"]
    assert got.params.to_numpy() == pytest.approx(want.params.to_numpy(), rel=1e-10)
    assert got.llf == pytest.approx(want.llf, rel=1e-12)
    new = na_text.iloc[:5]
    assert np.asarray(got.predict(new)) == pytest.approx(np.asarray(want.predict(plain.iloc[:5])), rel=1e-10)


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([1.5, np.nan, 2.0]),
        pd.Series([1, 2, 3]),
        pd.Series([True, False, True]),
        pd.Series(np.array([1, 2, 3], dtype=np.uint8)),
        pd.Series(["a", None, "b"], dtype=object),
        pd.Series(["a", pd.NA, "b"], dtype="string"),
        pd.Series([1, pd.NA, 3], dtype="Int64"),
        pd.Series(pd.Categorical(["a", None, "b"])),
        pd.Series(pd.to_datetime(["2020-01-01", None, "2020-01-03"])),
    ],
)
def test_missing_rows_read_as_pandas_isna(values):
    """The complete-case filter's fast reading of numpy columns finds exactly pandas' missing values."""
    from midas_glmm.design.design import _missing

    assert np.array_equal(_missing(values), values.isna().to_numpy())


def test_a_frame_whose_every_column_is_used_is_untouched():
    """With every column used and no row dropped the design reads the caller's frame itself:
    a fit, its predictions and an object column of numbers leave it as it was."""
    df = datasets.load("sleepstudy")[["Reaction", "Days", "Subject"]]
    df["Days"] = df["Days"].astype(object)  # numbers in an object column: converted in a copy
    before = df.copy(deep=True)
    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", df).fit()
    res.predict(df)
    pd.testing.assert_frame_equal(df, before)
    assert res.params["Days"] == pytest.approx(10.467, abs=1e-3)


@pytest.mark.parametrize("dtype", ["str", "string", object])
def test_text_factorized_as_python_strings_keeps_pandas_codes_and_sorted_levels(dtype):
    """factorize_sorted reads pandas' text as Python strings (pyarrow's factorize costs ~4x
    more): the codes and sorted levels equal pandas' own factorize(sort=True), accents, case,
    digits and empty text included."""
    from midas_glmm.design.columns import factorize_sorted

    values = ["b", "B", "é", "a10", "a2", "", "z", "Ä", "b", "ß", "a2", "日本"]
    for reps in (3, 30, 60, 400):  # by a set (up to TEXT_SET_ROWS), as strings, pyarrow's (TEXT_OBJECT_ROWS)
        col = pd.Series(values * reps, dtype=dtype)
        codes, levels = factorize_sorted(col)
        want_codes, want_levels = pd.factorize(col, sort=True)
        assert np.array_equal(codes, want_codes) and codes.dtype == want_codes.dtype
        assert list(levels) == list(want_levels)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    words=st.lists(st.text(alphabet="aAbé日 0", max_size=3), min_size=1, max_size=12),
    n=st.integers(1, 700),
    missing=st.booleans(),
    dtype=st.sampled_from(["str", "string"]),
    seed=st.integers(0, 10_000),
)
def test_text_factorized_keeps_pandas_codes_on_random_columns(words, n, missing, dtype, seed):
    """Hypothesis: any short text column (repeated words, case, accents, spaces, empty text, a
    missing value) is factorized as pandas' factorize(sort=True) does it, by each path."""
    from midas_glmm.design.columns import factorize_sorted

    rng = np.random.default_rng(seed)
    values = [words[i] for i in rng.integers(0, len(words), n)]
    if missing:
        values[int(rng.integers(0, n))] = None
    col = pd.Series(values, dtype=dtype)
    codes, levels = factorize_sorted(col)
    want_codes, want_levels = pd.factorize(col, sort=True)
    assert np.array_equal(codes, want_codes)
    assert list(levels) == list(want_levels)


def test_unused_columns_stay_out_of_the_formulas_namespace():
    """Only the used columns reach formulaic (taken by position): unused columns named after its
    functions (scale, C) do not shadow them, with or without dropped rows, and the caller's frame
    is left as it was; the fit equals the one on the used columns alone."""
    base = datasets.load("sleepstudy")
    wide = base.assign(scale="x", C=1.0, other=np.arange(len(base)) % 3, text="t")
    formula = "Reaction ~ scale(Days) + (1|Subject)"
    for frame in (wide, wide.assign(Reaction=wide["Reaction"].where(wide.index % 17 != 0))):
        before = frame.copy(deep=True)
        got = MixedModel.from_formula(formula, frame).fit()
        used = frame[["Reaction", "Days", "Subject"]].dropna()
        want = MixedModel.from_formula(formula, used).fit()
        pd.testing.assert_frame_equal(frame, before)
        assert got.nobs == len(used) and got.llf == pytest.approx(want.llf, rel=1e-12)
        assert got.params.to_numpy() == pytest.approx(want.params.to_numpy(), rel=1e-10)
        assert list(got.ranef()["Subject"].index) == list(want.ranef()["Subject"].index)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    dtype=st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint32", "uint64"]),
    n=st.integers(1, 300),
    spread=st.sampled_from([1, 5, 100, 10_000, 2**40]),
    seed=st.integers(0, 10_000),
)
def test_integers_counted_keep_pandas_codes_and_sorted_levels(dtype, n, spread, seed):
    """Hypothesis: integer columns (group ids) are factorized by one count over their range where
    it is narrow, else by pandas; either way the codes and the sorted levels (their dtype too) are
    pandas' factorize(sort=True)'s, at the dtype's extremes as well."""
    from midas_glmm.design.columns import factorize_sorted

    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    low, high = max(info.min, -(2**50)), min(info.max, 2**50)
    lo = int(rng.integers(low, max(low, high - spread) + 1))  # the values lie in [lo, lo + spread]
    values = (lo + rng.integers(0, min(spread, high - lo) + 1, n)).astype(dtype)
    if seed % 7 == 0:  # the dtype's own extremes
        values[: min(2, n)] = np.array([info.min, info.max], dtype=dtype)[: min(2, n)]
    col = pd.Series(values)
    codes, levels = factorize_sorted(col)
    want_codes, want_levels = pd.factorize(col, sort=True)
    assert np.array_equal(codes, want_codes) and codes.dtype == want_codes.dtype
    assert levels.equals(want_levels) and levels.dtype == want_levels.dtype


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 3, 7, 50, 2**31]), min_size=2, max_size=4),
    n=st.integers(1, 300),
    seed=st.integers(0, 10_000),
)
def test_interaction_codes_order_the_combinations_as_unique_rows(sizes, n, seed):
    """Hypothesis: the interaction of factors by one mixed-radix integer per row (counted, sorted,
    or by rows where the radix would pass 2⁶²) gives np.unique(rows, axis=0)'s codes and
    combinations in the same order."""
    from midas_glmm.design.columns import interaction_codes

    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, min(s, 40 if seed % 2 else s), n).astype(np.int64) for s in sizes]
    codes, combos = interaction_codes(parts, sizes)
    uniq, want = np.unique(np.column_stack(parts), axis=0, return_inverse=True)
    assert np.array_equal(codes, want.ravel())
    assert np.array_equal(np.column_stack(combos), uniq)


def test_nested_group_labels_join_their_parts_levels():
    """(1|school/cls)'s interaction term (lme4's cls:school): codes in the order of the (cls,
    school) level pairs, cls's levels sorted as numbers, and labels "cls:school" from each part's
    levels, text and integer parts alike."""
    df = pd.DataFrame(
        {
            "school": ["b", "a", "b", "a", "c", "b", "a"],
            "cls": [2, 10, 2, 1, 1, 10, 10],
            "y": np.arange(7.0),
        }
    )
    d = MixedModel.from_formula("y ~ 1 + (1|school/cls)", df).design
    term = next(t for t in d.terms if t.group_name == "cls:school")
    assert list(term.levels) == ["1:a", "1:c", "2:b", "10:a", "10:b"]
    assert term.codes.tolist() == [2, 3, 2, 0, 1, 4, 3]


def test_a_cbind_response_with_an_expression_is_parsed_once_and_evaluated_per_data():
    """The compiled cbind/offset expression is cached by its text: a second data frame with
    other counts gets its own values."""
    d1 = datasets.load("cbpp")
    d2 = d1.assign(incidence=d1["incidence"] // 2)
    f = "cbind(incidence, size - incidence) ~ period + (1|herd)"
    y1 = MixedModel.from_formula(f, d1, family="binomial").design.y
    y2 = MixedModel.from_formula(f, d2, family="binomial").design.y
    assert np.allclose(y1, d1["incidence"] / d1["size"])
    assert np.allclose(y2, (d1["incidence"] // 2) / d1["size"])


@pytest.mark.parametrize("shape", [(20_000, 3), (20_000, 8), (20_000, 9), (500, 4)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gram_equals_the_long_double_sums_on_every_path(shape, order, weighted):
    """A'WA of linalg.gram, by dot products (column-ordered, tall, ≤ 8 columns) or BLAS' product
    (the rest): each entry its exact sum (long double) to double precision, and symmetric."""
    from midas_glmm.linalg.gram import gram

    rng = np.random.default_rng(shape[1] * 10 + weighted)
    A = np.asarray(rng.normal(size=shape) + 3.0, order=order)
    w = rng.uniform(0.5, 2.0, shape[0]) if weighted else np.ones(shape[0])
    Aw = np.asarray(A * w[:, None], order=order)
    G = gram(A, Aw if weighted else None)
    L = A.astype(np.longdouble)
    exact = np.asarray((L * w.astype(np.longdouble)[:, None]).T @ L, dtype=float)
    assert G == pytest.approx(exact, rel=1e-13)
    assert np.array_equal(G, G.T) or order == "C" or shape[1] > 8 or shape[0] < 10_000


def test_an_infinite_value_in_a_row_dropped_for_a_missing_one_is_no_error():
    """The complete-case filter and the finite check read a float column once: ±inf in a row that
    is dropped anyway (a NaN in another column) is not reported, in a kept row it is, by its label."""
    d = datasets.load("sleepstudy").astype({"Days": float})
    d.loc[3, "Days"], d.loc[3, "Reaction"] = np.inf, np.nan
    d.loc[7, "Reaction"] = -np.inf
    with pytest.raises(DataError, match=r"column 'Reaction' holds infinite values \(row 7\)"):
        MixedModel.from_formula("Reaction ~ Days + (1|Subject)", d)
    d.loc[7, "Reaction"] = 250.0
    m = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", d)
    assert m.design.nobs == 179 and m.design.n_dropped == 1


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(labels=st.lists(st.text(max_size=4), max_size=20), name=st.sampled_from([None, "g", "a:b"]))
def test_text_index_is_pandas_own_index_of_the_labels(labels, name):
    """text_index gives the dtype pandas would infer: the same Index (dtype and name) as
    pd.Index(labels, name=name), empty, repeated and non-ASCII labels included."""
    from midas_glmm.design.columns import text_index

    got, want = text_index(labels, name=name), pd.Index(labels, name=name)
    assert got.identical(want) or (not labels and got.equals(want) and got.name == want.name)


def test_theta_slices_formed_once_and_for_a_map_pickled_without_them():
    """ThetaMap keeps each term's slice of θ after its first use; a map pickled before it kept
    them (no _slices in its state) forms them on first use, the same slices."""
    import pickle

    from midas_glmm.design.reterms import ThetaMap

    d = MixedModel.from_formula("Reaction ~ Days + (Days|Subject) + (1|Subject)", datasets.load("sleepstudy")).design
    tm = ThetaMap(d.terms)
    assert tm.slices() == (slice(0, 3), slice(3, 4))
    assert tm.slices() is tm.slices()
    state = dict(tm.__dict__)
    state.pop("_slices")
    old = ThetaMap.__new__(ThetaMap)
    old.__dict__.update(pickle.loads(pickle.dumps(state)))
    assert "_slices" not in old.__dict__
    assert old.slices() == tm.slices()
    theta = np.array([1.1, 0.2, 0.3, 0.7])
    assert all(np.array_equal(a, b) for a, b in zip(old.lams(theta), tm.lams(theta)))
