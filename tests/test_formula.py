"""The lme4 formula syntax and its errors."""

import re

import pytest

from midas_glmm.errors import FormulaError
from midas_glmm.formula import parse_formula


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
