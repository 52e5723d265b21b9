"""The GLMM's passes over the rows in numpy (RowMap.numpy_rows) against the compiled passes: each
pass (the blocks of the working system, η, Z'V, the leverages), PIRLS' evaluation and the Laplace
gradient's row sums, on one- and two-term designs of every kind of column, canonical families and
others; the models that take them; and whole fits, which then call no compiled row pass."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_glmmrows import rows

from midas_glmm import MixedModel
from midas_glmm.engine import glmmrows, sparsity
from midas_glmm.engine.factor import Factor
from midas_glmm.engine.pirls import GLMMProblem

FAMILIES = {
    "binomial": "cbind(k, n - k)",
    "poisson": "c",
    "nbinom2": "c",
    "gamma": "g2",
}

TERMS = {
    "scalar": "(1|g)",  # one column of ones
    "slope": "(x|g)",  # two columns, four products
    "crossed": "(1|g) + (1|h)",  # two scalar terms
    "wide": "(x|g) + (1|h)",  # seven products
    "column": "(0 + x2|g) + (1|h)",  # a column other than ones, beside one
}


def _data(seed=3, n=700):
    """test_glmmrows' rows, with a Gamma response whose mean has both grouping factors' effects."""
    df = rows(seed=seed, n=n)
    rng = np.random.default_rng(seed + 100)
    level_g = dict(zip(sorted(set(df.g)), rng.normal(0, 0.5, df.g.nunique())))
    level_h = dict(zip(sorted(set(df.h)), rng.normal(0, 0.3, df.h.nunique())))
    mean = np.exp(0.3 * df.x + df.g.map(level_g) + df.h.map(level_h))
    return df.assign(g2=mean * rng.gamma(4.0, 0.25, len(df)))


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-300))


def _problem(family, terms, df=None, dense=False):
    df = _data() if df is None else df
    m = MixedModel.from_formula(f"{FAMILIES[family]} ~ x + x2 + {TERMS[terms]}", df, family=family, offset="o")
    return m, GLMMProblem(m.design, m.family, standardize_X=True, dense=dense)


def _random_lams(rm, rng) -> list[np.ndarray]:
    """A random lower-triangular λ per term of the map (its columns' counts from col_base)."""
    return [np.tril(rng.uniform(0.5, 1.5, (p, p))) for p in np.diff(rm.col_base)]


@pytest.mark.parametrize("terms", sorted(TERMS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_numpy_pass_equals_the_compiled_one(family, terms):
    """blocks (joint and in u alone, with the finiteness check or without), η, Z'V and the
    leverages of random inputs, the two ways."""
    m, prob = _problem(family, terms)
    rm = prob.rows.block.rowmap
    X = prob.rows.block._Xc
    n, q = X.shape[0], rm.plan.q
    rng = np.random.default_rng(5)
    W, c = rng.uniform(0.1, 2.0, n), rng.normal(size=n)
    base, b = rng.normal(size=n), rng.normal(size=q)
    V = rng.normal(size=(n, 2))
    lams = _random_lams(rm, rng)
    S = rng.normal(size=rm.plan.nA)

    def passes(numpy: bool):
        rm.numpy_rows = numpy
        return [
            rm.blocks(W, X, c, prob.shift, prob.scale),
            rm.blocks(W, X[:, :0], c, checked=True),
            rm.eta(base, b),
            rm.zt_product(V),
            rm.leverages(lams, S),
        ]

    got, want = passes(True), passes(False)
    for g, w in zip(got[:2], want[:2]):
        for part in ("A", "XZ", "XX"):
            _close(getattr(g, part), getattr(w, part))
        assert g.n == w.n
    for g, w in zip(got[2:], want[2:]):
        _close(g, w)
    rm.numpy_rows = True  # a weight that is not finite is an error, as in the compiled pass
    W[3] = np.nan
    with pytest.raises(FloatingPointError):
        rm.blocks(W, X, c, prob.shift, prob.scale)


@pytest.mark.parametrize("terms", ["scalar", "crossed", "wide", "column"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_evaluation_and_gradient_sums_equal_the_compiled_ones(family, terms):
    """PIRLS' evaluation at (β, u) and the Laplace gradient's row sums at the factor there, with
    numpy's passes and the compiled ones (a canonical family's own first pass included)."""
    m, prob = _problem(family, terms)
    block, rm = prob.rows.block, prob.rows.block.rowmap
    rng = np.random.default_rng(2)
    lams = prob.tmap.lams(prob.tmap.start * 0.7)
    # gamma's inverse link: η kept positive
    us = [rng.normal(0, 0.1 if family == "gamma" else 0.4, t.q) for t in m.design.terms]
    beta_raw = np.array([2.0, 0.1, -0.1]) if family == "gamma" else np.array([0.2, 0.5, -0.1])
    phi = 1.3 if m.family.has_dispersion else 1.0

    def both(numpy: bool):
        rm.numpy_rows = numpy
        block._last_pass = None
        out = [block.evaluate(beta_raw, lams, us, phi, joint, prob.shift, prob.scale) for joint in (True, False)]
        L = Factor(prob.plan, out[1][1], lams)
        Z, Zt = L.selected_inverse()
        S_data = Z if not prob.plan.qt else np.concatenate([Z, Zt[prob.plan.tail_entries()]])
        return out, block.laplace_gradient_sums(beta_raw, lams, us, L, S_data, phi)[:4]

    (evals, sums), (evals_c, sums_c) = both(True), both(False)
    for (ll, cp), (ll_c, cp_c) in zip(evals, evals_c):
        assert np.isfinite(ll) and ll == pytest.approx(ll_c, rel=1e-12)
        for part in ("A", "XZ", "XX"):
            _close(getattr(cp, part), getattr(cp_c, part), rtol=1e-11)
    for got, want in zip(sums, sums_c):
        _close(got, want, rtol=1e-10)


@pytest.mark.parametrize(
    "family, terms, n, numpy, system",
    [
        ("binomial", "scalar", 400, True, True),  # one scalar column (its PIRLS group by group)
        ("poisson", "scalar", 400, True, True),
        # a canonical family's scalar terms: numpy's working system on few rows, else the compiled
        # one (faster there), the rest numpy
        ("binomial", "crossed", 400, True, True),
        ("poisson", "column", 400, True, True),
        ("binomial", "crossed", 1200, True, False),
        ("poisson", "column", 1200, True, False),
        ("binomial", "slope", 400, False, False),  # a term of two columns: compiled throughout
        ("binomial", "wide", 400, False, False),
        ("nbinom2", "scalar", 400, True, True),  # other families: weights and working response in numpy already
        ("gamma", "slope", 400, True, True),
        ("nbinom2", "crossed", 1200, True, True),
        ("gamma", "column", 400, True, True),
        ("nbinom2", "wide", 400, False, False),  # seven products of columns: the compiled pass skips the zero ones
    ],
)
def test_which_models_take_the_numpy_passes(family, terms, n, numpy, system, monkeypatch):
    df = _data(n=n)
    block = _problem(family, terms, df)[1].rows.block
    assert (block.rowmap.numpy_rows, block._system_in_numpy) == (numpy, system)
    monkeypatch.setattr(glmmrows, "NUMPY_ROWS", len(df) - 1)  # more rows than numpy's passes take
    block = _problem(family, terms, df)[1].rows.block
    assert not block.rowmap.numpy_rows and not block._system_in_numpy


class _NoKernels:
    """Stands for the compiled row passes' module: any use of it is an error."""

    def __getattr__(self, name):
        raise AssertionError(f"a compiled row pass was called: rowkernels.{name}")


class _SystemOnly:
    """Stands for the compiled row passes' module with only the working system's pass."""

    def __getattr__(self, name):
        from midas_glmm.linalg import rowkernels

        if name in ("working_system", "working_system_kernel", "working_buffers"):
            return getattr(rowkernels, name)
        raise AssertionError(f"a compiled row pass other than the working system was called: rowkernels.{name}")


def _fit_with(stand_in, family, terms, seed, monkeypatch, n=500):
    """(the fit with ``stand_in`` as the compiled row passes' module, the fit compiled throughout)."""
    df = _data(seed=seed, n=n)
    formula = f"{FAMILIES[family]} ~ x + x2 + {TERMS[terms]}"
    with monkeypatch.context() as mp:
        mp.setattr(glmmrows, "rowkernels", stand_in)
        mp.setattr(sparsity, "rowkernels", stand_in)
        fast = MixedModel.from_formula(formula, df, family=family).fit()
    monkeypatch.setattr(glmmrows, "NUMPY_ROWS", 0)
    return fast, MixedModel.from_formula(formula, df, family=family).fit()


def _assert_same_fit(fast, slow):
    """The optimum, standard errors and modes of two fits agree."""
    assert fast.llf == pytest.approx(slow.llf, rel=1e-10, abs=1e-8)
    assert np.allclose(fast.theta, slow.theta, rtol=1e-5, atol=1e-6)
    assert np.allclose(fast.params, slow.params, rtol=1e-6, atol=1e-6 * slow.bse.min())
    assert np.allclose(fast.bse, slow.bse, rtol=1e-5)
    for name, re in fast.ranef().items():
        assert np.allclose(re.to_numpy(), slow.ranef()[name].to_numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "family, terms",
    [("nbinom2", "slope"), ("gamma", "crossed"), ("nbinom2", "scalar"), ("binomial", "crossed"), ("poisson", "column")],
)
def test_fits_on_numpys_passes_call_no_kernel_and_equal_the_compiled_fits(family, terms, monkeypatch):
    """A small model of a family other than the canonical binomial and Poisson, or a canonical one
    of scalar terms on few rows, fits without a compiled row pass (nothing to load or compile on
    a first fit), to the optimum, standard errors and modes of the fit on the compiled passes."""
    _assert_same_fit(*_fit_with(_NoKernels(), family, terms, 6, monkeypatch))


@pytest.mark.parametrize("family, terms", [("binomial", "crossed"), ("poisson", "crossed"), ("poisson", "column")])
def test_canonical_fits_of_several_scalar_terms_compile_only_the_working_system(family, terms, monkeypatch):
    """A canonical binomial or Poisson model of two or three scalar random-effects terms on more
    rows than CANONICAL_NUMPY_SYSTEM_ROWS takes the compiled working system alone (η and the
    Laplace gradient's row sums in numpy: a first fit compiles one pass), to the optimum, standard
    errors and modes of the fit compiled throughout."""
    _assert_same_fit(*_fit_with(_SystemOnly(), family, terms, 7, monkeypatch, n=1200))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(30, 400),
    groups=st.tuples(st.integers(2, 12), st.integers(2, 9)),
    terms=st.sampled_from(["(1|g)", "(x|g)", "(0 + x|g)", "(1|g) + (1|h)", "(x|g) + (1|h)", "(0 + x2|g) + (x|h)"]),
    seed=st.integers(0, 10_000),
)
def test_numpy_passes_equal_the_compiled_ones_on_random_designs(n, groups, terms, seed):
    """Hypothesis: any rows, group sizes (a level may hold one row), term shapes and columns
    (x2 is 0 in a third of the rows): numpy's passes equal the compiled ones."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "x2": np.where(rng.uniform(size=n) < 1 / 3, 0.0, rng.normal(size=n)),
            "g": rng.integers(0, groups[0], n).astype(str),
            "h": rng.integers(0, groups[1], n).astype(str),
            "c": rng.poisson(2.0, n),
        }
    )
    m = MixedModel.from_formula(f"c ~ x + {terms}", df, family="nbinom2")
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=False)
    rm, X = prob.rows.block.rowmap, prob.rows.block._Xc
    W, c = rng.uniform(0.0, 3.0, n), rng.normal(size=n)
    b, V = rng.normal(size=rm.plan.q), rng.normal(size=(n, 2))
    lams, S = _random_lams(rm, rng), rng.normal(size=rm.plan.nA)

    def passes(numpy: bool):
        rm.numpy_rows = numpy
        cp = rm.blocks(W, X, c, prob.shift, prob.scale)
        return [cp.A, cp.XZ, cp.XX, rm.eta(c, b), rm.zt_product(V), rm.leverages(lams, S)]

    for got, want in zip(passes(True), passes(False)):
        _close(got, want, rtol=1e-11)


@pytest.mark.parametrize("family", ["poisson", "nbinom2"])
def test_a_dummys_slope_crossed_with_another_term_fits_on_the_sparse_plan(family, monkeypatch):
    """(0 + d|g) + (1|h) with d a 0/1 dummy: two levels may meet only in rows where d is 0. The
    plan's pattern is by the rows the levels share, so every row's products (zeros too) have a
    place, and the fit on the sparse plan (132 random effects) equals the one on the dense plan.
    (The pattern by the columns' values left such pairs out: "a coupling outside the analysed
    pattern". lme4 on data of this kind, seed 0 at 3,000 rows: the same estimates to 1e-6, its
    log-likelihood 2.6e-6 lower.)"""
    from midas_glmm.engine import pirls

    rng = np.random.default_rng(0)
    n = 1500
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "d": (rng.uniform(size=n) < 0.5).astype(float),
            "g": rng.integers(0, 80, n).astype(str),
            "h": rng.integers(0, 52, n).astype(str),
        }
    )
    df["c"] = rng.poisson(np.exp(0.3 * df.x + 0.4 * df.d * rng.normal(size=80)[df.g.astype(int)]))
    fits = {}
    for dense in (False, True):
        monkeypatch.setattr(pirls, "small_model", lambda terms, dense=dense: dense)
        m = MixedModel.from_formula("c ~ x + (0 + d|g) + (1|h)", df, family=family)
        assert (GLMMProblem(m.design, m.family, True).plan.Ns == 0) == dense
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[dense] = m.fit()
    a, b = fits[False], fits[True]
    assert a.llf == pytest.approx(b.llf, rel=1e-9, abs=1e-7)
    assert np.allclose(a.params, b.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)
