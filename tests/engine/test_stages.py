"""Models of random intercepts factored term by term in numpy (linalg.stages): which plans are
staged, the staged factor, solves, selected inverse and gradient products against dense algebra
and against the compiled kernels' plan, random designs, and whole fits that call no compiled
factor kernel (what a first fit after install would have compiled: 9-20 s)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_factor import FORMULAS, _banded, _check_against_dense, _data, _dense, _theta, compiled_plans

from midas_glmm import MixedModel
from midas_glmm.design.blocks import CrossProducts
from midas_glmm.design.design import build_design
from midas_glmm.design.reterms import ThetaMap
from midas_glmm.engine import factor as factor_module
from midas_glmm.engine import gradient as gradient_module
from midas_glmm.engine import sparsity
from midas_glmm.engine.factor import Factor
from midas_glmm.engine.gradient import _logdet_blocks, profiled_gradient
from midas_glmm.engine.lmm import lmm_criterion
from midas_glmm.engine.pirls import GLMMProblem
from midas_glmm.engine.sparsity import FactorPlan
from midas_glmm.linalg import orderings, stages
from midas_glmm.linalg.orderings import fill_reducing_levels, group_pairs

STAGED = {
    "nested": "y ~ x + (1|region/district/school)",  # no fill: every term a stage, no tail
    "obs_level": "y ~ x + (1|obs) + (1|a) + (1|b)",  # obs and a are stages; b (filled by a) the tail
    "crossed": "y ~ x + (1|a) + (1|b) + (1|region)",  # a stage, b and region the tail
    "crossed_two": "y ~ x + (1|a) + (1|b)",
}


@pytest.fixture(params=["dense", "scattered"])
def any_coupling(request, monkeypatch):
    """Stages for crossed terms of any coupling (by default a sparse one keeps the compiled
    kernels, faster there), the last stage's tail block laid out dense where it is dense enough
    (the default) or never: the staged numbers must hold for every layout, a tail included."""
    monkeypatch.setattr(sparsity, "STAGE_LEVEL_PAIRS", 10**9)
    if request.param == "scattered":
        monkeypatch.setattr(stages, "DENSE_STAGE_SHARE", np.inf)
    return request.param


def _plans(formula, data=None, weights=None, monkeypatch=None):
    """(design, staged plan, the compiled kernels' plan, blocks of each)."""
    d = build_design(formula, _data() if data is None else data, weights=weights)
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, d.weights)
    staged = FactorPlan(d.terms, cp)
    with monkeypatch.context() as mp:
        compiled_plans(mp)
        compiled = FactorPlan(d.terms, cp)
    return d, staged, compiled, staged.load(cp), compiled.load(cp)


def test_group_pairs_against_every_pair():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, 30)
    starts = np.cumsum(counts) - counts
    want = {"plain": set(), "diagonal": set(), "ordered": set()}
    for s, c in zip(starts, counts):
        for a in range(s, s + c):
            for b in range(s, s + c):
                want["ordered"].add((a, b))
                if a <= b:
                    want["diagonal"].add((a, b))
                if a < b:
                    want["plain"].add((a, b))
    for kind, kw in [("plain", {}), ("diagonal", {"diagonal": True}), ("ordered", {"ordered": True})]:
        first, second = group_pairs(counts, **kw)
        got = list(zip(first.tolist(), second.tolist()))
        assert len(got) == len(set(got)) and set(got) == want[kind]


def test_nested_observation_level_and_densely_crossed_terms_are_staged(monkeypatch):
    """By default: nested terms and an observation-level term beside its groups, nested or
    crossed, are staged (1-4 products per level eliminated, scattered); crossed terms too when
    each level of the first meets many levels of the tail (the last stage's block of tail rows
    dense, one BLAS product); a sparse crossing of many products per level keeps the compiled
    kernels."""
    for formula, layout, dense in [
        (STAGED["nested"], (3, 0), False),
        ("y ~ x + (1|obs) + (1|school) + (1|district)", (3, 0), False),
        (STAGED["obs_level"], (2, 15), True),  # obs scattered; a (crossed with b) dense
        (STAGED["crossed"], (1, 19), True),
        (STAGED["crossed_two"], (1, 15), True),
    ]:
        d = build_design(formula, _data())
        plan = FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y))
        assert (None if plan.stages is None else (plan.split, plan.qt)) == layout, formula
        assert (plan.stages.stages[-1].dense is not None) == dense, formula
    # 400 × 150 levels met in 6,000 rows: ~14 items a subject (105 products a level, a tenth of
    # the dense block); and the same rows with the dense layout never chosen
    rng = np.random.default_rng(1)
    sparse = pd.DataFrame(
        {"x": rng.normal(size=6000), "a": rng.integers(0, 400, 6000), "b": rng.integers(0, 150, 6000)}
    )
    sparse["y"] = rng.normal(size=6000)
    d = build_design("y ~ x + (1|a) + (1|b)", sparse)
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    assert FactorPlan(d.terms, cp).stages is None
    monkeypatch.setattr(stages, "DENSE_STAGE_SHARE", np.inf)
    d = build_design(STAGED["crossed_two"], _data())
    assert FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y)).stages is None


def test_dense_last_stage_rule():
    """A quarter of the levels × tail block stored, and at most DENSE_STAGE_ENTRIES entries."""
    assert stages.dense_last_stage(316, 24, 316 * 24)  # VerbAgg: every person meets every item
    assert stages.dense_last_stage(100, 40, 1000) and not stages.dense_last_stage(100, 40, 999)
    assert not stages.dense_last_stage(0, 40, 0) and not stages.dense_last_stage(100, 0, 0)
    big = stages.DENSE_STAGE_ENTRIES // 100 + 1
    assert not stages.dense_last_stage(big, 100, big * 100)


@pytest.mark.parametrize(
    "name, split, qt",
    [("nested", 3, 0), ("obs_level", 2, 15), ("crossed", 1, 19), ("crossed_two", 1, 15)],
)
def test_models_of_random_intercepts_are_staged(name, split, qt, monkeypatch, any_coupling):
    _, staged, compiled, _, _ = _plans(STAGED[name], monkeypatch=monkeypatch)
    assert staged.stages is not None and compiled.stages is None
    assert (staged.split, staged.qt) == (split, qt)
    # the staged pattern is a valid layout of the compiled kernels: where the split is the same,
    # it is the symbolic analysis' pattern
    if compiled.split == staged.split:
        assert np.array_equal(compiled.colptr, staged.colptr) and np.array_equal(compiled.rowidx, staged.rowidx)


@pytest.mark.parametrize("name", ["vector", "nested_slopes", "crossed_vector_tail"])
def test_terms_of_several_columns_keep_the_compiled_plan(name):
    d = build_design(FORMULAS[name], _data())
    assert FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y)).stages is None


def test_a_large_tail_or_many_products_keep_the_compiled_plan(monkeypatch, any_coupling):
    """A tail over STAGE_TAIL levels (STAGE_TAIL_DENSE after a dense last stage), or more than
    STAGE_PAIRS products by scattered sums: the compiled plan; a dense last stage forms none of
    its products (its block, one BLAS product), so only the tail's size bounds it."""
    d = build_design(STAGED["crossed"], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    monkeypatch.setattr(sparsity, "STAGE_TAIL", 18)  # the tail holds 19
    assert (FactorPlan(d.terms, cp).stages is not None) == (any_coupling == "dense")
    monkeypatch.setattr(sparsity, "STAGE_TAIL_DENSE", 18)
    assert FactorPlan(d.terms, cp).stages is None
    monkeypatch.setattr(sparsity, "STAGE_TAIL", 200)
    monkeypatch.setattr(sparsity, "STAGE_TAIL_DENSE", 2000)
    monkeypatch.setattr(sparsity, "STAGE_PAIRS", 100)  # a's 40 levels form ~2,000 products
    plan = FactorPlan(d.terms, cp)
    assert (plan.stages is not None) == (any_coupling == "dense")


@pytest.mark.parametrize("name", list(STAGED))
@pytest.mark.parametrize("weighted", [False, True])
def test_staged_factor_equals_dense_algebra(name, weighted, any_coupling):
    df = _data(seed=2)
    df["w"] = np.random.default_rng(2).uniform(0.2, 3.0, len(df))
    d = build_design(STAGED[name], df, weights="w" if weighted else None)
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, d.weights)
    plan = FactorPlan(d.terms, cp)
    assert plan.stages is not None
    tm = ThetaMap(d.terms)
    w = d.weights if weighted else None
    for seed in (1, 2, 3):
        lams = tm.lams(_theta(tm, seed))
        F = Factor(plan, plan.load(cp), lams)
        _check_against_dense(d, F, lams, w)
        M = _dense(d, lams, w)[0]
        x = np.random.default_rng(seed).normal(size=(plan.q, 3))
        assert F.solve(x) == pytest.approx(np.linalg.solve(M, x), rel=1e-8, abs=1e-10)
        # the selected inverse at every stored position of the sparse part, and the tail's block
        Z, Zt = F.selected_inverse()
        Minv = np.linalg.inv(M)
        col_of = np.repeat(np.arange(plan.Ns), np.diff(plan.colptr))
        assert Z == pytest.approx(Minv[plan.rowidx, col_of], rel=1e-8, abs=1e-12)
        assert Zt == pytest.approx(Minv[plan.qs :, plan.qs :], rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("name", list(STAGED))
def test_staged_and_compiled_plans_give_the_same_numbers(name, monkeypatch, any_coupling):
    """The quantities every caller reads, whatever the layout: log-determinants, the solution,
    conditional variances, the gradient's blocks (GΛS)_ll and Z'WZ products, the LMM gradient."""
    df = _data(seed=3)
    df["w"] = np.random.default_rng(3).uniform(0.2, 3.0, len(df))
    d, staged, compiled, bs, bc = _plans(STAGED[name], df, "w", monkeypatch)
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm, 4))
    Fs, Fc = Factor(staged, bs, lams), Factor(compiled, bc, lams)
    assert Fs.logdet_Z == pytest.approx(Fc.logdet_Z, rel=1e-12)
    assert Fs.pwrss == pytest.approx(Fc.pwrss, rel=1e-10)
    beta = Fc.beta()
    assert Fs.beta() == pytest.approx(beta, rel=1e-10, abs=1e-12)
    assert Fs.u_flat(beta) == pytest.approx(Fc.u_flat(beta), rel=1e-10, abs=1e-12)
    for a, b in zip(Fs.condvar_blocks(), Fc.condvar_blocks()):
        assert a == pytest.approx(b, rel=1e-10, abs=1e-14)
    Ds, Dc = _logdet_blocks(Fs, *Fs.selected_inverse())[0], _logdet_blocks(Fc, *Fc.selected_inverse())[0]
    assert Ds == pytest.approx(Dc, rel=1e-10, abs=1e-13)
    V = np.random.default_rng(5).normal(size=(staged.q, 2))
    G = _dense(d, [np.eye(t.p) for t in d.terms], d.weights)[0] - np.eye(staged.q)
    assert staged.stages.symmetric_product(bs.A, V) == pytest.approx(G @ V, rel=1e-10, abs=1e-10)
    crit_s, _ = lmm_criterion(d, True, dense=False)
    assert crit_s.plan.stages is not None
    theta = _theta(crit_s.tmap, 6)
    with monkeypatch.context() as mp:
        compiled_plans(mp)
        crit_c, _ = lmm_criterion(d, True, dense=False)
        assert crit_c.plan.stages is None
        vc, gc = profiled_gradient(crit_c, theta)
    vs, gs = profiled_gradient(crit_s, theta)
    assert vs == pytest.approx(vc, rel=1e-12) and gs == pytest.approx(gc, rel=1e-8, abs=1e-9)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(20, 300),
    levels=st.tuples(st.integers(2, 80), st.integers(2, 30), st.integers(2, 8)),
    shape=st.sampled_from(["nested", "crossed", "mixed", "obs", "slope"]),
    seed=st.integers(0, 10_000),
    dense=st.booleans(),
)
def test_staged_factor_on_random_designs(n, levels, shape, seed, dense):
    """Hypothesis: any rows, level counts and nesting or crossing of up to three intercepts, or two
    and a term with slopes (a level may hold one row, a term may meet another in one row):
    whatever plan the model gets (staged for any coupling here), its factor, and a staged one's
    selected inverse, are the dense algebra's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sparsity, "STAGE_LEVEL_PAIRS", 10**9)
        if not dense:  # the last stage's tail block never dense (else where dense enough)
            mp.setattr(stages, "DENSE_STAGE_SHARE", np.inf)
        _random_design(n, levels, shape, seed)


def _random_design(n, levels, shape, seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, levels[0], n)
    h = g % levels[1] if shape in ("nested", "mixed", "slope") else rng.integers(0, levels[1], n)
    k = h % levels[2] if shape in ("nested", "slope") else rng.integers(0, levels[2], n)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": g, "h": h, "k": k, "obs": np.arange(n)})
    df["y"] = df.x + rng.normal(size=n)
    formula = {
        "obs": "y ~ x + (1|obs) + (1|g) + (1|h)",
        "slope": "y ~ x + (1|g) + (1|h) + (x|k)",  # not staged: the compiled plan against the same algebra
    }.get(shape, "y ~ x + (1|g) + (1|h) + (1|k)")
    d = build_design(formula, df)
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm, seed % 7))
    F = Factor(plan, plan.load(cp), lams)
    _check_against_dense(d, F, lams)
    if plan.stages is not None:
        Z, Zt = F.selected_inverse()
        Minv = np.linalg.inv(_dense(d, lams)[0])
        col_of = np.repeat(np.arange(plan.Ns), np.diff(plan.colptr))
        assert Z == pytest.approx(Minv[plan.rowidx, col_of], rel=1e-8, abs=1e-12)
        assert Zt == pytest.approx(Minv[plan.qs :, plan.qs :], rel=1e-8, abs=1e-12)


class _NoKernels:
    """Stands for the compiled factor kernels' module: any use of it is an error."""

    def __getattr__(self, name):
        raise AssertionError(f"a compiled factor kernel was called: kernels.{name}")


def _nested_data(seed=7):
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(30), 24)
    cls = np.repeat(np.arange(120), 6)
    x = rng.normal(size=len(school))
    eta = 0.3 * x + rng.normal(0, 0.8, 30)[school] + rng.normal(0, 0.5, 120)[cls]
    return pd.DataFrame(
        {
            "x": x,
            "school": school.astype(str),
            "cls": cls.astype(str),
            "y": eta + rng.normal(size=len(x)),
            "count": rng.poisson(np.exp(0.5 + eta * 0.6)),
        }
    )


def _crossed_data(seed=9, people=260, items=18):
    """VerbAgg's shape, smaller: every person answers every item (a binary response)."""
    rng = np.random.default_rng(seed)
    person, item = np.repeat(np.arange(people), items), np.tile(np.arange(items), people)
    x = rng.normal(size=len(person))
    eta = -0.3 + 0.5 * x + rng.normal(0, 1.2, people)[person] + rng.normal(0, 0.5, items)[item]
    y = eta + rng.normal(size=len(x))
    return pd.DataFrame(
        {
            "x": x,
            "person": person,
            "item": item,
            "y": y,
            "r": (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-eta))).astype(float),
        }
    )


@pytest.mark.parametrize(
    "data, formula, family",
    [
        (_nested_data, "y ~ x + (1|school/cls)", "gaussian"),
        (_nested_data, "count ~ x + (1|school/cls)", "poisson"),
        (_crossed_data, "r ~ x + (1|person) + (1|item)", "binomial"),  # the dense last stage
        (_crossed_data, "y ~ x + (1|person) + (1|item)", "gaussian"),
    ],
)
def test_staged_fits_call_no_factor_kernel_and_equal_the_compiled_fits(data, formula, family, monkeypatch):
    """Schools and classes (150 random effects: above the all-dense plan), and 260 people who
    each answer 18 items (278: above the crossed LMM's all-dense plan too), fit, report and
    predict without a compiled factor kernel or ordering, to the compiled plan's optimum,
    standard errors and conditional modes and variances."""
    df = data()
    if family == "gaussian":
        plan = lmm_criterion(build_design(formula, df), True)[0].plan
    else:
        m = MixedModel.from_formula(formula, df, family=family)
        plan = GLMMProblem(m.design, m.family).plan
    assert plan.stages is not None
    with monkeypatch.context() as mp:
        for module in (factor_module, gradient_module, sparsity, orderings):
            mp.setattr(module, "kernels", _NoKernels())
        fast = MixedModel.from_formula(formula, df, family=family).fit()
        fast_re = fast.ranef(condvar=True)
        fast.summary()
        fast.predict(df)
    compiled_plans(monkeypatch)
    slow = MixedModel.from_formula(formula, df, family=family).fit()
    assert fast.llf == pytest.approx(slow.llf, rel=1e-10, abs=1e-8)
    assert np.allclose(fast.theta, slow.theta, rtol=1e-5, atol=1e-6)
    assert np.allclose(fast.params, slow.params, rtol=1e-6, atol=1e-6 * slow.bse.min())
    assert np.allclose(fast.bse, slow.bse, rtol=1e-5)
    slow_re = slow.ranef(condvar=True)
    assert fast_re["grp"].tolist() == slow_re["grp"].tolist()
    assert np.allclose(fast_re[["condval", "condsd"]].to_numpy(), slow_re[["condval", "condsd"]].to_numpy(), atol=1e-5)


@pytest.mark.parametrize("formula", [STAGED["crossed_two"], STAGED["crossed"]])
@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("rows", ["weighted", "counted", "balanced"])
def test_staged_system_equals_the_factor(formula, REML, rows):
    """An LMM of crossed intercepts on one dense stage and its tail (one or two tail terms)
    evaluates θ by the StagedSystem: its log-determinants and r² are the factor's at any θ, a
    variance at zero included, with each level's products (weighted rows) or grouped by the
    levels' row counts (a few distinct counts; one, balanced)."""
    df = _data(seed=5)
    weights = None
    if rows == "weighted":
        df["w"] = np.random.default_rng(5).uniform(0.2, 3.0, len(df))
        weights = "w"
    elif rows == "balanced":  # every level of the stage's term the same number of rows
        first = formula.split("(1|")[1].split(")")[0]
        df = df.groupby(first).head(int(df.groupby(first).size().min()))
    crit, _ = lmm_criterion(build_design(formula, df, weights=weights), REML, dense=False)
    assert crit._takes_stages
    grouped = crit._staged_system().grouped
    assert (grouped is None) == (rows == "weighted")
    assert rows != "balanced" or len(grouped[0]) == 1
    rng = np.random.default_rng(6)
    thetas = [rng.uniform(0.05, 3.0, len(crit.tmap)) for _ in range(4)]
    thetas += [np.r_[0.0, thetas[0][1:]], np.r_[thetas[0][:-1], 0.0]]
    for theta in thetas:
        got = crit._staged_system().logdets(crit.tmap.lams(theta))
        L = crit.factor(theta)
        assert got == pytest.approx((L.logdet_Z, L.logdet_X, L.pwrss), rel=1e-12, abs=1e-12)
        assert crit(theta) == pytest.approx(crit.from_factor(L), rel=1e-13)


@pytest.mark.parametrize("schools", [30, 200])
def test_a_glmm_is_staged_as_an_lmm_is(schools):
    """Schools and classes of 150 and 1,000 random effects: the Poisson GLMM's plan and the LMM's
    are staged at both sizes (no compiled factor kernel on a first fit)."""
    rng = np.random.default_rng(8)
    school = np.repeat(np.arange(schools), 24)
    cls = np.repeat(np.arange(4 * schools), 6)
    df = pd.DataFrame({"x": rng.normal(size=len(school)), "school": school, "cls": cls})
    df["count"] = rng.poisson(np.exp(0.3 + rng.normal(0, 0.5, schools)[school] + rng.normal(0, 0.4, 4 * schools)[cls]))
    m = MixedModel.from_formula("count ~ x + (1|school/cls)", df, family="poisson")
    assert GLMMProblem(m.design, m.family).plan.stages is not None
    lmm, _ = lmm_criterion(build_design("count ~ x + (1|school/cls)", df), True)
    assert lmm.plan.stages is not None


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(5, 400),
    levels=st.tuples(st.integers(1, 60), st.integers(1, 25), st.integers(1, 6)),
    shape=st.sampled_from(["nested", "crossed", "mixed", "obs", "band"]),
    seed=st.integers(0, 10_000),
)
def test_ordering_shortcuts_give_the_general_orders(n, levels, shape, seed):
    """Hypothesis: the fill-reducing orders with the exact shortcuts (every earlier term nested,
    the first term's singleton components, a clique past the dense threshold) equal the general
    path's, on nested, crossed, partly nested, observation-level and banded designs of 2-3 terms
    (a level may be missing from a term's codes)."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, levels[0], n)
    if shape == "band":  # each level of g meets a window of consecutive h levels
        h = (g + rng.integers(0, 3, n)) % max(levels[1], 1)
    else:
        h = g % levels[1] if shape in ("nested", "mixed") else rng.integers(0, levels[1], n)
    k = h % levels[2] if shape == "nested" else rng.integers(0, levels[2], n)
    sets = {"obs": [np.arange(n), g, h]}.get(shape, [g, h, k])
    for codes in (sets, sets[:2]):
        nlevels = [int(c.max()) + 1 + int(rng.integers(0, 2)) for c in codes]  # maybe an unused level
        codes = [c.astype(np.int64) for c in codes]
        fast = fill_reducing_levels(codes, nlevels)
        slow = fill_reducing_levels(codes, nlevels, shortcuts=False)
        assert [None if o is None else o.tolist() for o in fast] == [None if o is None else o.tolist() for o in slow]


def test_ordering_shortcuts_skip_nested_and_dense_terms(monkeypatch):
    """Nested terms and a fully crossed one (VerbAgg's shape) build no clique and call no kernel;
    the banded design is still ordered."""
    monkeypatch.setattr(orderings, "kernels", _NoKernels())
    df = _nested_data()
    codes = [pd.factorize(df[c], sort=True)[0].astype(np.int64) for c in ("cls", "school")]
    assert fill_reducing_levels(codes, [120, 30]) == [None, None]
    people, items = np.repeat(np.arange(300), 24), np.tile(np.arange(24), 300)
    assert fill_reducing_levels([people, items], [300, 24]) == [None, None]
    monkeypatch.setattr(orderings, "NUMPY_CLIQUE_PAIRS", 10**9)  # the banded design's cliques by numpy
    df = _banded(300, 120)
    orders = fill_reducing_levels([df["sub"].to_numpy(), df["item"].to_numpy()], [300, 120])
    assert orders[0] is None and orders[1] is not None


def test_numpy_cliques_order_the_levels_as_the_compiled_kernel(monkeypatch):
    """The fill-reducing order's cliques by numpy (few pairs) and by the compiled kernel: the same
    orders on a banded design and on a crossed one."""
    for df, cols in [(_banded(300, 120), ("sub", "item")), (_data(seed=1), ("a", "b"))]:
        codes = [pd.factorize(df[c])[0].astype(np.int64) for c in cols]
        nlevels = [int(c.max()) + 1 for c in codes]
        with monkeypatch.context() as mp:
            mp.setattr(orderings, "NUMPY_CLIQUE_PAIRS", 10**9)
            fast = fill_reducing_levels(codes, nlevels)
        with monkeypatch.context() as mp:
            mp.setattr(orderings, "NUMPY_CLIQUE_PAIRS", -1)
            slow = fill_reducing_levels(codes, nlevels)
        assert [None if o is None else o.tolist() for o in fast] == [None if o is None else o.tolist() for o in slow]
        if cols[0] == "sub":
            assert fast[1] is not None  # the band was found
