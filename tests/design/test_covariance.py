"""Covariance structures (design/covariance.py): each maps its parameters to a factor λ whose
λλ' has the structure's form, for any parameter values; and the formula reads them."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from midas_glmm.design.covariance import (
    AR1,
    CompoundSymmetry,
    Diagonal,
    OrnsteinUhlenbeck,
    Toeplitz,
    Unstructured,
    structure,
)
from midas_glmm.design.formula import parse_formula
from midas_glmm.errors import FormulaError

STRUCTURES = [Unstructured, Diagonal, CompoundSymmetry, AR1, Toeplitz, OrnsteinUhlenbeck]
reals = st.floats(-4.0, 4.0, allow_nan=False)
sds = st.floats(0.05, 5.0, allow_nan=False)


def params(cls, p, draw_sd, draw_cor):
    s = cls(p)
    lower = s.lower()
    return np.array([draw_sd[i] if np.isfinite(lower[i]) else draw_cor[i] for i in range(s.n_par)])


#: Hypothesis' find: an unstructured λ of diagonal 1/16 below entries of 2, its λλ' of condition
#: ~1e17 (λ's parameters by position, column by column: the diagonal's from sd, the rest from cor)
FOUND_SD = [0.0625 if i in (6, 11, 15, 18, 20) else 2.0 if i == 0 else 1.0 for i in range(21)]
FOUND_COR = [{3: -0.41462463012059825, 5: 1.0, 7: 2.0, 12: 2.71875, 16: 2.0, 19: 2.0}.get(i, 0.0) for i in range(21)]


@settings(max_examples=60, deadline=None)
@given(p=st.integers(2, 6), sd=st.lists(sds, min_size=21, max_size=21), cor=st.lists(reals, min_size=21, max_size=21))
@example(p=6, sd=FOUND_SD, cor=FOUND_COR)
def test_every_structure_gives_a_positive_definite_covariance_of_its_form(p, sd, cor):
    for cls in STRUCTURES:
        s = cls(p)
        par = params(cls, p, sd, cor)
        lam = s.lam(par)
        assert np.allclose(lam, np.tril(lam)), cls.name  # lower triangular, as the engine needs
        Sig = lam @ lam.T
        # positive definite: λ lower triangular with a positive diagonal (det λ > 0), an exact test;
        # the computed eigenvalues of a λλ' of condition 1e17 round its smallest to 0 (the example)
        assert np.all(np.diag(lam) > 0), cls.name
        d = np.sqrt(np.diag(Sig))
        R = Sig / np.outer(d, d)
        if cls is Diagonal:
            assert np.allclose(R, np.eye(p))
        if cls is CompoundSymmetry:
            off = R[~np.eye(p, dtype=bool)]
            assert np.allclose(off, off[0]) and off[0] > -1 / (p - 1)
        if cls is AR1:
            assert np.allclose(d, d[0])  # one SD
            rho = R[1, 0]
            k = np.arange(p)
            assert np.allclose(R, rho ** np.abs(k[:, None] - k[None, :]))
        if cls is OrnsteinUhlenbeck:  # exp(−κ|tᵢ − tⱼ|) at times 0, 1, …: ρ^|i−j|, one SD
            assert np.allclose(d, d[0]) and (p < 3 or np.allclose(R[2, 0], R[1, 0] ** 2))
        if cls is Toeplitz:
            for lag in range(1, p):
                assert np.allclose(np.diagonal(R, lag), R[lag, 0])  # constant along each diagonal


@settings(max_examples=60, deadline=None)
@given(p=st.integers(2, 5), sd=st.lists(sds, min_size=15, max_size=15), cor=st.lists(reals, min_size=15, max_size=15))
def test_natural_values_map_back_to_the_same_covariance(p, sd, cor):
    """par → (SDs, correlations) → par gives the same λλ' (profile intervals move along these)."""
    for cls in STRUCTURES:
        s = cls(p)
        par = params(cls, p, sd, cor)
        values, names = s.natural(par, scale=2.0)
        back = s.par_from_natural(values, scale=2.0)
        assert back is not None, cls.name
        assert np.allclose(s.lam(back) @ s.lam(back).T, s.lam(par) @ s.lam(par).T, rtol=1e-7, atol=1e-9), cls.name
        assert len(names) == s.n_par
        lo, hi = s.natural_bounds()
        assert np.all(values >= lo) and np.all(values <= hi)


@settings(max_examples=200, deadline=None)
@given(
    s1=st.floats(0.0, 1e3),
    s2=st.floats(0.0, 1e3),
    rho=st.floats(-1.2, 1.2),
    scale=st.sampled_from([1.0, 0.01, 25.0]),
)
@example(s1=2.0, s2=3.0, rho=1.0, scale=1.0)  # a correlation at its limit: Σ singular, the jitter's factor
@example(s1=2.0, s2=3.0, rho=-1.0000001, scale=1.0)  # just past it: no factor
def test_one_and_two_columns_from_natural_values_in_closed_form_as_lapack(s1, s2, rho, scale):
    """The profile's every evaluation maps (SDs, correlation) to θ: for one or two columns by
    the closed-form Cholesky factor of Σ + jI, LAPACK's (the general path's) up to rounding;
    None exactly where LAPACK finds no factor."""
    Sig = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    try:
        L = np.linalg.cholesky(Sig + 1e-14 * np.eye(2) * max(1.0, np.max(np.abs(Sig))))
    except np.linalg.LinAlgError:
        L = None
    got = Unstructured(2).par_from_natural(np.array([s1, rho, s2]), scale)
    assert (got is None) == (L is None or not np.all(np.isfinite(L)))
    if got is not None:  # at |ρ| = 1 λ₂₂ is the rounding of √j: to the largest entry's scale
        want = L[[0, 1, 1], [0, 0, 1]] / scale
        assert np.allclose(got, want, rtol=1e-12, atol=1e-8 * np.max(np.abs(want)))
    one = Unstructured(1).par_from_natural(np.array([s1]), scale)
    assert one == pytest.approx(np.sqrt(s1 * s1 + 1e-14 * max(1.0, s1 * s1)) / scale, rel=1e-15)


def test_ar1_factor_is_the_cholesky_factor_of_its_correlation():
    s = AR1(5)
    for a in (-3.0, -0.4, 0.0, 0.7, 12.0):
        rho = a / np.sqrt(1 + a * a)
        k = np.arange(5)
        R = rho ** np.abs(k[:, None] - k[None, :])
        assert np.allclose(s.lam(np.array([2.0, a])), 2.0 * np.linalg.cholesky(R))


def test_toeplitz_partial_autocorrelations_give_the_autocorrelations_back():
    rng = np.random.default_rng(1)
    for _ in range(20):
        partial = rng.uniform(-0.95, 0.95, 4)
        r = Toeplitz._autocorrelations(partial)
        assert np.allclose(Toeplitz._partials(r), partial)
    assert Toeplitz._partials(np.array([0.9, -0.9])) is None  # no valid correlation sequence


def test_cs_correlation_range_and_its_singular_ends():
    s = CompoundSymmetry(3)
    assert s.natural_bounds()[0][-1] == pytest.approx(-0.5)
    assert s.singular(np.array([1.0, 1.0, 1.0, 40.0]), 1e-4)  # ρ → 1
    assert s.singular(np.array([1.0, 1.0, 1.0, -40.0]), 1e-4)  # ρ → −1/2
    assert not s.singular(np.array([1.0, 1.0, 1.0, 0.0]), 1e-4)
    assert s.par_from_natural(np.array([1.0, 1.0, 1.0, -0.6])) is None


def test_unstructured_is_lme4s_lower_triangle_by_column():
    s = structure("us", 3)
    assert s.par_names(["a", "b", "c"], "g") == ["g.a", "g.b.a", "g.c.a", "g.b", "g.c.b", "g.c"]
    lam = s.lam(np.arange(1.0, 7.0))
    assert lam[1, 0] == 2.0 and lam[2, 0] == 3.0 and lam[1, 1] == 4.0 and lam[2, 2] == 6.0


@pytest.mark.parametrize("name", ["us", "diag", "cs", "ar1", "toep", "ou"])
def test_the_formula_reads_each_structure(name):
    p = parse_formula(f"y ~ x + {name}(0 + tf | g) + (1 | h)")
    assert [t.structure for t in p.random] == [name, "us"]
    assert p.fixed == "x"
    assert str(p.random[0]) == (f"{name}(0 + tf | g)" if name != "us" else "(0 + tf | g)")


def test_a_function_of_the_same_name_in_the_fixed_part_stays_fixed():
    assert parse_formula("y ~ exp(x) + diag + (1 | g)").fixed == "exp(x) + diag"


@pytest.mark.parametrize(
    "formula, words",
    [
        ("y ~ exp(0 + pos | g)", "'exp' .* not available"),
        ("y ~ foo(1 | g)", "no random-effects term"),
        ("y ~ diag(1 + x || g)", "'\\|\\|' inside diag"),
    ],
)
def test_unknown_or_misused_structures_are_named(formula, words):
    with pytest.raises(FormulaError, match=words):
        parse_formula(formula)


def test_ou_reads_unequally_spaced_times():
    s = OrnsteinUhlenbeck(3, times=[0.0, 1.0, 3.0])
    R = s.lam(np.array([1.0, np.log(0.5)])) @ s.lam(np.array([1.0, np.log(0.5)])).T
    assert (
        np.allclose(R[1, 0], np.exp(-0.5)) and np.allclose(R[2, 1], np.exp(-1.0)) and np.allclose(R[2, 0], np.exp(-1.5))
    )
    assert s.natural(np.array([2.0, np.log(0.5)]), scale=1.0)[0] == pytest.approx([2.0, np.exp(-0.5)])


def test_numfactor_is_read_as_a_factor_of_times():
    p = parse_formula("y ~ x + ou(numFactor(t) + 0 | g)")
    assert p.random[0].expr == "C(t) + 0" and p.random[0].structure == "ou"


@pytest.mark.parametrize("par", [np.array([0.7]), [0.7], 0.7, np.array([3])])
def test_a_scalar_terms_lambda_is_a_new_float_array(par):
    """Unstructured(1).lam's shortcut: λ = [θ] as a 1 × 1 float array of its own (writing it
    changes neither θ nor the next λ), from an array, a list or a number."""
    s = Unstructured(1)
    lam = s.lam(par)
    assert lam.shape == (1, 1) and lam.dtype == float and lam[0, 0] == float(np.ravel(par)[0])
    lam[0, 0] = -1.0
    assert s.lam(par)[0, 0] == float(np.ravel(par)[0]) and float(np.ravel(par)[0]) != -1.0
    assert np.array_equal(s.lam(np.array([0.25])), Unstructured(2).lam(np.array([0.25, 0.0, 0.0]))[:1, :1])
