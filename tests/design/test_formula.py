"""The lme4 formula syntax and its errors."""

import re

import formulaic
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midas_glmm.design import columns
from midas_glmm.design.formula import parse_formula
from midas_glmm.errors import FormulaError


def terms(f):
    return [(t.expr, t.group, t.group_name) for t in parse_formula(f).random]


def test_random_intercept():
    p = parse_formula("score ~ hours + (1|school)")
    assert p.response == "score" and p.fixed == "hours"
    assert terms("score ~ hours + (1|school)") == [("1", ("school",), "school")]


def test_correlated_slope_and_no_intercept_forms():
    assert terms("y ~ x + (x|g)") == [("x", ("g",), "g")]
    assert terms("y ~ x + (0 + x|g)") == [("0 + x", ("g",), "g")]
    assert terms("y ~ x + (-1 + x | g)") == [("-1 + x", ("g",), "g")]


def test_uncorrelated_terms_expand():
    assert terms("y ~ x + (x||g)") == [("1", ("g",), "g"), ("0 + x", ("g",), "g")]
    assert terms("y ~ (0 + x + z||g)") == [("0 + x", ("g",), "g"), ("0 + z", ("g",), "g")]


def test_nesting_expands_as_lme4():
    assert terms("y ~ (1|a/b)") == [("1", ("b", "a"), "b:a"), ("1", ("a",), "a")]
    assert [t[2] for t in terms("y ~ (1|a/b/c)")] == ["c:(b:a)", "b:a", "a"]


def test_interaction_group_and_crossed_terms():
    assert terms("y ~ (1|a:b)") == [("1", ("a", "b"), "a:b")]
    assert [t[2] for t in terms("y ~ x + (1|s) + (1|d) + (1|dept)")] == ["s", "d", "dept"]


def test_fixed_part_goes_to_formulaic_untouched():
    p = parse_formula("y ~ C(f) * x + np.log(z) + I(x**2) + (1|g)")
    assert p.fixed == "C(f) * x + np.log(z) + I(x**2)"
    assert parse_formula("y ~ (1|g)").fixed == "1"
    assert parse_formula("y ~ 0 + x + (1|g)").fixed == "0 + x"


def test_offsets_and_cbind():
    p = parse_formula("cbind(k, n - k) ~ x + offset(np.log(t)) + (1|g)")
    assert p.cbind == ("k", "n - k")
    assert p.offsets == ["np.log(t)"] and p.fixed == "x"


@pytest.mark.parametrize(
    "formula, fragment",
    [
        ("y ~ x + (1|g", "unclosed '('"),
        ("y ~ x + 1|g)", "unmatched ')'"),
        ("y ~ x + (|g)", "nothing before the bar"),
        ("y ~ x + (1|)", "no grouping factor"),
        ("y x + (1|g)", "exactly one '~'"),
        ("y ~ x | g", "outside a parenthesised"),
        ("y ~ x + + (1|g)", "stray '+'"),
        ("y ~ (1|g|h)", "exactly one '|'"),
        ("cbind(a) ~ x + (1|g)", "two arguments"),
        ("", "non-empty"),
    ],
)
def test_malformed_formulas_say_what_and_where(formula, fragment):
    with pytest.raises(FormulaError, match=re.escape(fragment)):
        parse_formula(formula)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        parse_formula("y ~ (1|")


@pytest.mark.parametrize(
    "formula, fixed, response",
    [
        ("y ~ I(x^2) + (1|g)", "I(x**2)", "y"),
        ("y ~ np.log(x^2 + 1) + (1|g)", "np.log(x**2 + 1)", "y"),
        ("y ~ I((a + b)^3) + (1|g)", "I((a + b)**3)", "y"),
        ("y ~ (a + b)^2 + (1|g)", "(a + b)^2", "y"),  # interactions up to order 2, as in R
        ("log(y)^2 ~ x + (1|g)", "x", "log(y)**2"),
        ("y ~ C(f, levels=['a^b']) + (1|g)", "C(f, levels=['a^b'])", "y"),
    ],
)
def test_caret_is_rs_power_where_python_evaluates(formula, fixed, response):
    p = parse_formula(formula)
    assert (p.fixed, p.response) == (fixed, response)


def test_caret_in_random_terms_and_offsets():
    p = parse_formula("y ~ x + offset(t^2) + (x + I(x^2) | g)")
    assert p.offsets == ["t**2"]
    assert [t.expr for t in p.random] == ["x + I(x**2)"]
    assert parse_formula("cbind(k^2, n - k) ~ x + (1|g)").cbind == ("k**2", "n - k")


# ----------------------------------------------------------------- plain right-hand sides
# A sum of numeric columns and factors is materialised by numpy once formulaic has given its spec for the
# same text and column types (columns.model_matrix): the matrix, names, layout and spec must be
# formulaic's own, on other data too.

_COLUMNS = ["a", "b", "c", "u", "f", "g", "h"]


def _plain_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(-5, 5, n),
            "c": rng.normal(size=n).astype(np.float32),
            "u": rng.integers(0, 9, n).astype(np.uint8),
            "f": pd.Series(rng.choice(["x", "y", "z"], n), dtype="str"),
            "g": pd.Categorical(rng.choice(["v", "u"], n), categories=["v", "w", "u"]),  # w unused
            "h": pd.Series(rng.choice(["1", "2", "10"], n), dtype="str"),  # sorted as text
            "flag": rng.random(n) < 0.5,
            "obj": pd.Series(rng.choice(["x", "y"], n), dtype=object),
            "na_text": pd.Series(rng.choice(["x", "y"], n), dtype="string"),
            "na_number": pd.Series(rng.normal(size=n), dtype="Float64"),
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    cols=st.lists(st.sampled_from(_COLUMNS), min_size=0, max_size=4, unique=True),
    intercept=st.sampled_from(["", "1 + ", "0 + ", "-1"]),
    output=st.sampled_from(["numpy", "pandas"]),
    seed=st.integers(0, 1000),
)
def test_plain_model_matrices_are_formulaics(cols, intercept, output, seed):
    if not cols and intercept in ("", "1 + "):
        rhs = "1"
    elif intercept == "-1":
        rhs = " + ".join(cols or ["a"]) + " - 1"
    else:
        rhs = intercept + " + ".join(cols or ["a"])
    frames = [_plain_frame(seed + k, 40 - 5 * k) for k in range(3)]
    columns._PLAIN_SPECS.clear()
    columns._PLAIN_SEEN.clear()
    for data in frames:  # formulaic's matrix, formulaic's checked and kept, then numpy's with it
        X, names, spec = columns.model_matrix(rhs, data, output=output)
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output=output)
        want = np.asarray(mm, dtype=float)
        assert names == list(mm.model_spec.column_names)
        assert np.array_equal(X, want)
        assert X.flags["C_CONTIGUOUS"] == want.flags["C_CONTIGUOUS"]
        assert spec == mm.model_spec
    assert len(columns._PLAIN_SPECS) == 1
    other = _plain_frame(seed + 3, 40)  # the spec replays on new rows as numpy builds them
    assert np.array_equal(np.asarray(spec.get_model_matrix(other), float), columns.model_matrix(rhs, other, output)[0])


@pytest.mark.parametrize(
    "rhs",
    [
        "obj",
        "a + obj",
        "a:b",
        "a * f",
        "np.exp(a)",
        "flag",
        "C(f)",
        "0 + 1 + a",
        "a + a",
        "center(a)",
        "a - 1 + b",
        "missing",
    ],
)
def test_other_right_hand_sides_are_left_to_formulaic(rhs):
    data = _plain_frame(0, 30)
    assert columns.plain_terms(rhs, data) is None
    assert columns.plain_terms("na_text", data) is None  # text with pd.NA: not a factor to formulaic
    columns._PLAIN_SPECS.clear()
    if rhs != "missing":
        for _ in range(3):
            columns.model_matrix(rhs, data)
    assert not columns._PLAIN_SPECS


def test_a_factor_with_a_missing_value_gets_formulaics_error():
    """The numpy build reads complete rows only: a factor with a missing value is left to
    formulaic (na_action="raise"), whose error the design reports, even with its spec kept."""
    data = _plain_frame(0, 30)
    columns._PLAIN_SPECS.clear()
    columns._PLAIN_SEEN.clear()
    columns.model_matrix("a + g", data)
    columns.model_matrix("a + g", data)
    assert len(columns._PLAIN_SPECS) == 1
    holed = data.assign(g=data["g"].where(np.arange(30) != 3))
    with pytest.raises(Exception, match="(?i)missing|null|nan"):
        columns.model_matrix("a + g", holed)


def test_a_formula_read_again_is_read_once_and_handed_out_afresh():
    """parse_formula and names_in keep what they read of a formula (a simulation refits one
    formula many times) but hand each caller its own lists and sets: one caller's change does not
    reach the next, and a bad formula raises each time (errors are not kept)."""
    from midas_glmm.design.columns import names_in
    from midas_glmm.design.formula import _parse_cached, parse_formula

    text = "y ~ x + offset(log(t)) + (x | g) + (1 | a/b)"
    first = parse_formula(text)
    hits = _parse_cached.cache_info().hits
    first.random.clear()
    first.offsets.append("z")
    second = parse_formula(text)
    assert _parse_cached.cache_info().hits == hits + 1
    assert [str(t) for t in second.random] == ["(x | g)", "(1 | b:a)", "(1 | a)"]
    assert second.offsets == ["log(t)"] and second.fixed == "x"
    found = names_in("np.log(a + b)")
    found.add("c")
    assert names_in("np.log(a + b)") == {"a", "b"}
    for _ in range(2):
        with pytest.raises(FormulaError, match="exactly one '~'"):
            parse_formula("y ~ x ~ z + (1|g)")
