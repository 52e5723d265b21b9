"""The factor's structure (sparsity.FactorPlan) and numbers (factor.Factor) against dense algebra.

Each design exercises one storage shape: scalar and vector blocks per level, nested factors (no
fill-in: block-sparse only), crossed factors (a dense tail), vector terms in the tail, an
observation-level term. The block-sparse path and the dense path must give the same numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import midas_glmm.design.design as design_module
from midas_glmm.design.blocks import CrossProducts
from midas_glmm.design.design import build_design
from midas_glmm.design.reterms import ThetaMap
from midas_glmm.engine import sparsity
from midas_glmm.engine.factor import DenseSystem, Factor, LevelSystem
from midas_glmm.engine.lmm import LMMCriterion
from midas_glmm.engine.sparsity import FactorPlan, PlanBlocks, RowMap
from midas_glmm.errors import FewGroupsWarning


def _data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 4, n)
    district = region * 5 + rng.integers(0, 5, n)  # nested in region
    school = district * 6 + rng.integers(0, 6, n)  # nested in district
    a, b = rng.integers(0, 40, n), rng.integers(0, 15, n)  # crossed
    x, x2 = rng.normal(size=n), rng.normal(size=n)
    y = x + rng.normal(0, 1, 120)[school] + rng.normal(0, 1, 40)[a] + rng.normal(0, 1, 15)[b] + rng.normal(size=n)
    return pd.DataFrame(
        {
            "y": y,
            "x": x,
            "x2": x2,
            "region": region,
            "district": district,
            "school": school,
            "a": a,
            "b": b,
            "obs": np.arange(n),
        }
    )


FORMULAS = {
    "scalar": "y ~ x + (1|school)",
    "vector": "y ~ x + (x|school)",
    "nested": "y ~ x + (1|region/district/school)",
    "nested_slopes": "y ~ x + (x|district) + (1|school) + (0 + x2|region)",
    "crossed": "y ~ x + (1|a) + (1|b) + (1|region)",
    "crossed_vector_tail": "y ~ x + (1|a) + (x|b)",
    "obs_level": "y ~ x + (1|obs) + (1|a) + (1|b)",
}


def _theta(tm: ThetaMap, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    th = tm.start + rng.uniform(0.2, 1.2, len(tm)) * np.where(np.isfinite(tm.lower), 1.0, 0.0)
    return th + np.where(np.isfinite(tm.lower), 0.0, rng.normal(0, 0.3, len(tm)))


def _dense(d, lams, w=None):
    """Λ'Z'WZΛ + I, Λ'Z'W[X y] and [X y]'W[X y] by dense algebra."""
    Z = np.hstack([t.sparse_Z().toarray() for t in d.terms])
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for t, lam in zip(d.terms, lams):
        for _ in range(t.nlevels):
            Lam[o : o + t.p, o : o + t.p] = lam
            o += t.p
    w = np.ones(len(d.y)) if w is None else w
    ZL = Z @ Lam
    Xy = np.column_stack([d.X, d.y])
    M = ZL.T @ (w[:, None] * ZL) + np.eye(Z.shape[1])
    return M, ZL.T @ (w[:, None] * Xy), Xy.T @ (w[:, None] * Xy), Lam


def _check_against_dense(d, F, lams, w=None):
    M, ZXy, XX, Lam = _dense(d, lams, w)
    assert F.logdet_Z == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-10)
    # the Schur complement of [X y]
    S = XX - ZXy.T @ np.linalg.solve(M, ZXy)
    p = d.X.shape[1]
    beta = np.linalg.solve(S[:p, :p], S[:p, p])
    assert F.beta() == pytest.approx(beta, rel=1e-8, abs=1e-10)
    assert F.pwrss == pytest.approx(S[p, p] - S[p, :p] @ beta, rel=1e-8)
    u = np.linalg.solve(M, ZXy[:, p] - ZXy[:, :p] @ beta)
    assert np.concatenate(F.u(beta)) == pytest.approx(u, rel=1e-8, abs=1e-10)
    V = Lam @ np.linalg.inv(M) @ Lam.T
    o = 0
    for t, blocks in zip(d.terms, F.condvar_blocks()):
        for level in range(t.nlevels):
            assert blocks[level] == pytest.approx(V[o : o + t.p, o : o + t.p], rel=1e-8, abs=1e-12)
            o += t.p


@pytest.mark.parametrize("name", list(FORMULAS))
def test_factor_equals_dense_algebra(name):
    d = build_design(FORMULAS[name], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    tm = ThetaMap(d.terms)
    for seed in (1, 2):
        lams = tm.lams(_theta(tm, seed))
        _check_against_dense(d, Factor(plan, plan.load(cp), lams), lams)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_diagonal_blocks_are_found_at_each_columns_first_entry(name):
    """plan.diagonal_positions (each term's own rows: RowMap's first products, load's diagonal
    blocks) reads a node's own block at its column's first entry: where the general search of the
    sorted keys (plan.positions) finds it, sparse part and tail."""
    d = build_design(FORMULAS[name], _data())
    plan = FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y))
    nodes = np.random.default_rng(3).integers(0, plan.N, 500)
    assert (nodes < plan.Ns).any()
    assert np.array_equal(plan.diagonal_positions(nodes), plan.positions(nodes, nodes))


@pytest.mark.parametrize("name", list(FORMULAS))
def test_the_all_dense_plan_equals_dense_algebra(name):
    """A small model's plan (every random effect in the dense tail, no compiled kernels): the
    same numbers, the first term's diagonal blocks of L and the selected inverse included."""
    d = build_design(FORMULAS[name], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp, dense=True)
    assert plan.Ns == 0 and plan.qt == plan.q
    sparse_plan = FactorPlan(d.terms, cp)
    tm = ThetaMap(d.terms)
    for seed in (1, 2):
        lams = tm.lams(_theta(tm, seed))
        F = Factor(plan, plan.load(cp), lams)
        _check_against_dense(d, F, lams)
        G = Factor(sparse_plan, sparse_plan.load(cp), lams)
        assert F.L00 == pytest.approx(G.L00, rel=1e-9, abs=1e-12)
        rhs = np.random.default_rng(seed).normal(size=plan.q)
        assert F.solve(rhs) == pytest.approx(G.solve(rhs), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_the_dense_systems_log_determinants_equal_dense_algebra(name, weighted):
    """The optimizer's shortcut on the all-dense plan (DenseSystem): log|L_Z|², log|R_X|² and
    r² from one Cholesky of D'AD + diag(1, 0) equal dense algebra and the factor's."""
    data = _data(n=300)
    d = build_design(FORMULAS[name].replace("(x|b)", "(x|region)"), data)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(d.y)) if weighted else None
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, w)
    plan = FactorPlan(d.terms, cp, dense=True)
    blocks = plan.load(cp)
    tm = ThetaMap(d.terms)
    system = DenseSystem(plan, blocks, tm.jacobian)
    for seed in (1, 2):
        theta = _theta(tm, seed)
        lams = tm.lams(theta)
        M, ZXy, XX, _ = _dense(d, lams, w)
        S = XX - ZXy.T @ np.linalg.solve(M, ZXy)
        p = d.X.shape[1]
        ld_Z, ld_X, r2 = system.logdets(theta)
        assert ld_Z == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-10)
        assert ld_X == pytest.approx(np.linalg.slogdet(S[:p, :p])[1], rel=1e-9)
        assert r2 == pytest.approx(S[p, p] - S[p, :p] @ np.linalg.solve(S[:p, :p], S[p, :p]), rel=1e-8)
        F = Factor(plan, blocks, lams)
        assert (ld_Z, ld_X, r2) == pytest.approx((F.logdet_Z, F.logdet_X, F.pwrss), rel=1e-10)


@pytest.mark.parametrize("name", list(FORMULAS))
def test_the_dense_systems_polynomial_in_theta_equals_scaling_by_lambda(name, monkeypatch):
    """K = D'AD + diag(1, 0) from its coefficients as a quadratic in θ equals K formed by
    scaling A's columns and rows by each term's λ, at θ inside and with the variances on their
    bound 0; a system whose coefficients would be too large takes the scaling."""
    d = build_design(FORMULAS[name].replace("(x|b)", "(x|region)"), _data(n=300))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp, dense=True)
    tm = ThetaMap(d.terms)
    for limit in ("POLY_MAX", "POLY_MAX_CLOSED_FORM"):
        monkeypatch.setattr(DenseSystem, limit, 10**8)
    system = DenseSystem(plan, plan.load(cp), tm.jacobian)
    for limit in ("POLY_MAX", "POLY_MAX_CLOSED_FORM"):
        monkeypatch.setattr(DenseSystem, limit, 0)
    scaled = DenseSystem(plan, plan.load(cp), tm.jacobian)
    assert system.poly is not None and scaled.poly is None
    for theta in (_theta(tm, 1), _theta(tm, 2), np.where(tm.lower == 0, 0.0, 0.7)):
        K, K0 = system.system(theta), scaled.system(theta)
        assert np.allclose(K, K0, rtol=1e-13, atol=1e-13 * np.abs(K0).max())


@pytest.mark.parametrize("REML", [True, False])
def test_the_criterion_on_the_dense_system_equals_the_factors(REML):
    """LMMCriterion takes the DenseSystem on a small model; the value is the factor's, and an
    [X y] block that is not positive definite still gives +inf by the general path."""
    d = build_design("y ~ x + (x|region) + (1|b)", _data(n=300))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    crit = LMMCriterion(d.terms, cp, REML, dense=True)
    theta = _theta(crit.tmap)
    assert crit._dense_system() is not None
    assert crit(theta) == pytest.approx(crit.from_factor(crit.factor(theta)), rel=1e-12)
    B = crit.blocks
    XX = B.XX.copy()
    XX[-1, -1] = -1.0  # r² < 0: no Cholesky factor of [X y]
    crit.blocks = PlanBlocks(B.A, B.XZ, XX, B.n)
    assert crit._dense_system().logdets(theta) is None
    assert crit(theta) == np.inf


ONE_TERM = {
    "intercept": "y ~ x + (1|school)",
    "slope": "y ~ x + x2 + (x|school)",
    "slope_only": "y ~ x + (0 + x|school)",
    "two_columns": "y ~ x + (0 + x + x2|school)",
}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", list(ONE_TERM))
def test_the_level_systems_log_determinants_equal_dense_algebra(name, weighted):
    """The optimizer's shortcut on a one-term plan of one or two columns per level
    (LevelSystem): log|L_Z|², log|R_X|² and r² from the closed-form 2 × 2 (or scalar) factors of
    the levels equal dense algebra and the factor's, inside the bounds and on them (a variance
    0, a correlation ±1: λ's second diagonal 0)."""
    data = _data(n=400)
    d = build_design(ONE_TERM[name], data)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(d.y)) if weighted else None
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, w)
    plan = FactorPlan(d.terms, cp)
    assert plan.Ns and (plan.diagonal or plan.blockdiag)
    blocks = plan.load(cp)
    tm = ThetaMap(d.terms)
    system = LevelSystem(plan, blocks)
    boundary = np.where(np.isfinite(tm.lower), 0.0, 0.5)
    boundary[0] = 0.8  # the first variance positive, the others on their bound
    for theta in (_theta(tm, 1), _theta(tm, 2), boundary, np.zeros(len(tm))):
        lams = tm.lams(theta)
        M, ZXy, XX, _ = _dense(d, lams, w)
        S = XX - ZXy.T @ np.linalg.solve(M, ZXy)
        p = d.X.shape[1]
        ld_Z, ld_X, r2 = system.logdets(lams[0])
        assert ld_Z == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-10, abs=1e-10)
        assert ld_X == pytest.approx(np.linalg.slogdet(S[:p, :p])[1], rel=1e-9)
        assert r2 == pytest.approx(S[p, p] - S[p, :p] @ np.linalg.solve(S[:p, :p], S[p, :p]), rel=1e-8)
        F = Factor(plan, blocks, lams)
        assert (ld_Z, ld_X, r2) == pytest.approx((F.logdet_Z, F.logdet_X, F.pwrss), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("name", list(ONE_TERM))
def test_the_criterion_on_the_level_system_equals_the_factors(name, REML):
    """LMMCriterion takes the LevelSystem on a one-term model of one or two columns; the value
    is the factor's, and an [X y] block that is not positive definite still gives +inf by the
    general path."""
    d = build_design(ONE_TERM[name], _data(n=400))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    crit = LMMCriterion(d.terms, cp, REML)
    assert crit._takes_levels and not crit._takes_system
    for seed in (1, 2):
        theta = _theta(crit.tmap, seed)
        assert crit(theta) == pytest.approx(crit.from_factor(crit.factor(theta)), rel=1e-12)
    B = crit.blocks
    XX = B.XX.copy()
    XX[-1, -1] = -1.0  # r² < 0: no Cholesky factor of [X y]
    crit.blocks = PlanBlocks(B.A, B.XZ, XX, B.n)
    assert crit._level_system().logdets(crit.tmap.lams(theta)[0]) is None
    assert crit(theta) == np.inf


@pytest.mark.parametrize("name", ["slope", "two_columns"])
def test_closed_form_pairs_equal_the_level_kernels(name):
    """An LMM's plan (closed_pairs) factors, solves and inverts 2 × 2 blocks by numpy in closed
    form: the same factor, solves both ways, log-determinants, inverse blocks and conditional
    variances as the level kernels'; a
    block that is not positive definite is reported by its node as the kernels report it."""
    d = build_design(ONE_TERM[name], _data(n=400))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    closed, kernel = FactorPlan(d.terms, cp, closed_pairs=True), FactorPlan(d.terms, cp)
    assert closed.closed_pairs and not kernel.closed_pairs
    tm = ThetaMap(d.terms)
    rng = np.random.default_rng(4)
    for theta in (_theta(tm, 1), np.where(np.isfinite(tm.lower), 0.0, 0.3)):
        lams = tm.lams(theta)
        F, G = Factor(closed, closed.load(cp), lams), Factor(kernel, kernel.load(cp), lams)
        assert np.allclose(F.L, G.L, rtol=1e-12, atol=1e-14)
        assert (F.logdet_Z, F.logdet_X, F.pwrss) == pytest.approx((G.logdet_Z, G.logdet_X, G.pwrss), rel=1e-12)
        for rhs in (rng.normal(size=closed.q), rng.normal(size=(closed.q, 3))):
            assert np.allclose(F.solve(rhs), G.solve(rhs), rtol=1e-10, atol=1e-12)
            assert np.allclose(F.solve_Zt(rhs), G.solve_Zt(rhs), rtol=1e-10, atol=1e-12)
        assert np.allclose(F.selected_inverse()[0], G.selected_inverse()[0], rtol=1e-10, atol=1e-14)
        for a, b in zip(F.condvar_blocks(), G.condvar_blocks()):
            assert np.allclose(a, b, rtol=1e-10, atol=1e-14)
    blocks = closed.load(cp)
    blocks.A[closed.diagpos[5]] = -1e12  # random effect 5: level 2's second column
    with pytest.raises(np.linalg.LinAlgError, match="node 2 is not positive definite"):
        Factor(closed, blocks, tm.lams(tm.start))


@pytest.mark.parametrize(
    "formula", ["y ~ x + (x + x2|school)", "y ~ x + (1|school) + (1|a)", "y ~ x + (x||school)", "y ~ x + (1|region)"]
)
def test_which_models_take_the_level_system(formula):
    """Three columns per level, two terms (``||`` makes two) or a plan small enough to be all
    dense do not take the LevelSystem."""
    d = build_design(formula, _data(n=400))
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True)
    assert not crit._takes_levels


def compiled_plans(mp) -> None:
    """Every plan the compiled kernels' (no staged elimination, dense last stage or not)."""
    mp.setattr(sparsity, "STAGE_TAIL", -1)
    mp.setattr(sparsity, "STAGE_TAIL_DENSE", -1)


def _small_terms_data(a_levels: int) -> pd.DataFrame:
    """_data with a crossed factor ``a2`` of ``a_levels`` levels (each in ~7 rows) and classes
    ``cls`` nested in the 20 districts (60 levels)."""
    df = _data(n=600)
    rng = np.random.default_rng(7)
    df["a2"] = np.arange(len(df)) % a_levels
    df["cls"] = df.district * 3 + rng.integers(0, 3, len(df))
    df["y"] += rng.normal(0, 0.8, a_levels)[df.a2] + rng.normal(0, 0.6, 60)[df.cls]
    df["yb"] = (df.y > df.y.median()).astype(float)
    return df


@pytest.mark.filterwarnings("ignore::midas_glmm.errors.LaplaceAccuracyWarning")  # ~7 rows a level
@pytest.mark.parametrize("family", [None, "binomial"])
@pytest.mark.parametrize(
    "formula,a_levels,q,dense_lmm,dense_glmm",
    [
        ("~ x + (1|a2) + (1|b)", 85, 85 + 15, True, True),  # crossed, 100 random effects
        ("~ x + (1|district/cls)", 85, 20 + 60, True, True),  # nested, 80
        ("~ x + (1|a2) + (1|b)", 86, 86 + 15, True, False),  # crossed, 101: an LMM up to 250
        ("~ x + (1|a2) + (1|b)", 235, 235 + 15, True, False),  # crossed, 250
        ("~ x + (1|a2) + (1|b)", 236, 236 + 15, False, False),  # crossed, 251
        ("~ x + (1|district/school)", 85, 20 + 120, False, False),  # nested, 140
    ],
)
def test_several_terms_of_few_random_effects_are_factored_densely(
    formula, a_levels, q, dense_lmm, dense_glmm, family, monkeypatch
):
    """A model of several terms with at most SMALL_Q_TERMS (100) random effects takes the all-
    dense plan (no block kernels to compile; its levels are not reordered, order does not matter
    to a dense factor), LMM and GLMM alike; an LMM of crossed terms up to SMALL_Q_CROSSED (250)
    too, where its sparse factor would have a dense tail; above, and nested, the sparse plan.
    The fit is the sparse plan's: log-likelihood, θ, β, their standard errors and the
    conditional variances of the random effects."""
    from midas_glmm import MixedModel
    from midas_glmm.engine import lmm, pirls

    dense = dense_glmm if family else dense_lmm
    df = _small_terms_data(a_levels)
    response = "yb" if family else "y"
    kw = {"family": family} if family else {}
    sought = []
    order = design_module.fill_reducing_levels
    monkeypatch.setattr(design_module, "fill_reducing_levels", lambda *a: sought.append(1) or order(*a))
    model = MixedModel.from_formula(response + formula, df, **kw)
    monkeypatch.undo()
    assert sum(t.q for t in model.design.terms) == q
    assert bool(sought) == (q > 100 if family else not dense_lmm)  # an order is sought for sparse factors
    d = model.design
    if family:
        plan = pirls.GLMMProblem(d, model.family).plan
    else:
        plan = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True).plan
    assert (plan.Ns == 0) == dense
    fit = model.fit()
    monkeypatch.setattr(lmm, "small_model", lambda terms: False)
    monkeypatch.setattr(lmm, "small_crossed", lambda terms: False)  # (the same levels' order: the same model)
    monkeypatch.setattr(pirls, "small_model", lambda terms: False)
    sparse = MixedModel.from_formula(response + formula, df, **kw).fit()
    assert fit.llf == pytest.approx(sparse.llf, abs=1e-7)
    assert np.allclose(fit.theta, sparse.theta, rtol=1e-4, atol=1e-5)
    assert np.allclose(fit.params, sparse.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(fit.bse, sparse.bse, rtol=1e-4)
    a, b = fit.ranef(condvar=True), sparse.ranef(condvar=True)
    assert list(a.grp) == list(b.grp)
    assert np.allclose(a.condval, b.condval, rtol=1e-4, atol=1e-5)
    assert np.allclose(a.condsd, b.condsd, rtol=1e-4)


@pytest.mark.parametrize("struct", ["cs", "ar1", "toep"])
def test_crossed_lmm_of_a_structured_term_is_factored_densely(struct, monkeypatch):
    """An LMM of crossed terms up to SMALL_Q_CROSSED with a covariance structure whose λ is not
    linear in θ (cs, ar1, toep; L-BFGS-B on the analytic gradient) takes the all-dense plan as a
    linear one does (the sparse block kernels took 13-17 s to compile on a first fit), to the
    sparse plan's fit: log-likelihood, θ, β and their standard errors, conditional modes and SDs
    (25 subjects × 3 conditions + 40 items: 115 random effects)."""
    from midas_glmm import MixedModel
    from midas_glmm.engine import lmm

    rng = np.random.default_rng(11)
    subj, item = np.repeat(np.arange(25), 40), np.tile(np.arange(40), 25)
    cond = np.array(["A", "B", "C"])[(subj + item) % 3]
    u = rng.normal(size=(25, 3)) @ np.linalg.cholesky(0.5 + 0.5 * np.eye(3)).T
    y = 0.6 * rng.normal(size=1000) + u[subj, (subj + item) % 3] + rng.normal(0, 0.6, 40)[item]
    df = pd.DataFrame({"subj": subj, "item": item, "cond": cond, "x": rng.normal(size=1000)})
    df["y"] = y + 0.5 * df.x + rng.normal(size=1000)
    formula = f"y ~ cond + x + {struct}(0 + cond | subj) + (1 | item)"
    model = MixedModel.from_formula(formula, df)
    d = model.design
    assert not ThetaMap(d.terms).linear
    assert LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), False).plan.Ns == 0
    fit = model.fit(method="ML")
    monkeypatch.setattr(lmm, "small_crossed", lambda terms: False)
    sparse = MixedModel.from_formula(formula, df).fit(method="ML")
    assert fit.llf == pytest.approx(sparse.llf, abs=1e-7)
    assert np.allclose(fit.theta, sparse.theta, rtol=1e-4, atol=1e-5)
    assert np.allclose(fit.params, sparse.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(fit.bse, sparse.bse, rtol=1e-4)
    a, b = fit.ranef(condvar=True), sparse.ranef(condvar=True)
    assert np.allclose(a.condval, b.condval, rtol=1e-4, atol=1e-5)
    assert np.allclose(a.condsd, b.condsd, rtol=1e-4)


@pytest.mark.parametrize(
    "formula,crossed,dense",
    [
        ("y ~ x + (x|a3) + (x|b)", True, True),  # crossed slopes, 6 θ, 2 × 10 + 2 × 15 random effects
        ("y ~ x + (x|district) + (x|region)", False, True),  # nested slopes, 6 θ, 2 × 20 + 2 × 4: ≤ 60
        ("y ~ x + (x|region) + (1|district)", False, True),  # 4 θ: district first (lme4's order), 28
        ("y ~ x + (x|a3) + (1|region)", True, True),  # crossed, 4 θ
        ("y ~ x + (x|district) + (1|cls)", False, False),  # nested, 4 θ, 60 + 2 × 20 = 100: above 60
    ],
)
def test_an_lmm_of_four_theta_or_more_is_dense_when_crossed_or_small(formula, crossed, dense):
    """With four θ or more, a small LMM takes the dense plan (BOBYQA on the DenseSystem) when its
    terms are crossed or hold at most DENSE_MANY_THETA_Q (60) random effects; nested and larger,
    the sparse plan has no fill and keeps its analytic gradient. The criterion is the same either
    way."""
    from midas_glmm import MixedModel
    from midas_glmm.design.reterms import dense_tail
    from midas_glmm.engine.lmm import uses_gradient

    df = _data(n=600)
    df["a3"] = df.a % 10
    df["cls"] = df.district * 3 + np.random.default_rng(8).integers(0, 3, len(df))  # 60, nested in districts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewGroupsWarning)  # region's 4 levels
        model = MixedModel.from_formula(formula, df)
    d = model.design
    assert (dense_tail(d.terms) > 0) == crossed  # crossed: the sparse factor would have a dense tail
    assert len(ThetaMap(d.terms)) >= 4
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True)
    assert (crit.plan.Ns == 0) == dense and crit._takes_system == dense
    assert uses_gradient(crit, None) != dense
    other = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True, dense=not dense)
    theta = _theta(crit.tmap)
    assert crit(theta) == pytest.approx(other(theta), rel=1e-11)


def test_a_one_term_lmm_of_many_theta_is_dense_when_small():
    """One term of three columns (six θ): up to SMALL_Q (40) random effects the dense plan
    (nothing to compile: the level kernels otherwise), to the same optimum as the level plan."""
    from midas_glmm import MixedModel

    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 25)
    df = pd.DataFrame({"g": g, "x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    U = rng.normal(size=(12, 3))
    df["y"] = U[g, 0] + U[g, 1] * df.x1 + U[g, 2] * df.x2 + df.x1 + rng.normal(size=300)
    model = MixedModel.from_formula("y ~ x1 + x2 + (x1 + x2|g)", df)
    d = model.design
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True)
    assert crit.plan.Ns == 0
    fit = model.fit()
    level = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True, dense=False)
    assert level.plan.blockdiag
    assert fit.llf == pytest.approx(-0.5 * level(np.asarray(fit.theta)), rel=1e-10)


@pytest.mark.parametrize("name", ["nested", "nested_slopes", "crossed", "crossed_vector_tail", "obs_level"])
@pytest.mark.parametrize("density", [0.0, 2.0])  # all dense after the first term / no dense tail
def test_sparse_and_dense_paths_agree(name, density, monkeypatch):
    d = build_design(FORMULAS[name], _data(seed=3))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm))
    auto = Factor(plan := FactorPlan(d.terms, cp), plan.load(cp), lams)  # staged where it can be
    compiled_plans(monkeypatch)  # the compiled kernels' layouts
    monkeypatch.setattr(sparsity, "DENSE_TAIL_DENSITY", density)
    forced_plan = FactorPlan(d.terms, cp)
    assert forced_plan.split == (1 if density == 0.0 else len(d.terms))
    forced = Factor(forced_plan, forced_plan.load(cp), lams)
    assert forced.logdet_Z == pytest.approx(auto.logdet_Z, rel=1e-10)
    assert forced.pwrss == pytest.approx(auto.pwrss, rel=1e-8)
    beta = auto.beta()
    assert forced.beta() == pytest.approx(beta, rel=1e-8, abs=1e-10)
    assert np.concatenate(forced.u(beta)) == pytest.approx(np.concatenate(auto.u(beta)), rel=1e-8, abs=1e-10)
    for a, b in zip(forced.condvar_blocks(), auto.condvar_blocks()):
        assert a == pytest.approx(b, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize(
    "formula", ["y ~ x + (1|school) + (1|a) + (1|district) + (1|b)", "y ~ x + (x|a) + (1|b) + (1|region)"]
)
def test_a_tail_after_two_sparse_terms_equals_dense_algebra(formula, monkeypatch):
    """Sparse columns with rows both in the sparse part and in the tail (the split after the
    second term): every update kind of the block-sparse elimination."""
    d = build_design(formula, _data(seed=4))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    compiled_plans(monkeypatch)  # the compiled kernels' layout
    monkeypatch.setattr(FactorPlan, "_choose_split", lambda self, colptr: 2)
    monkeypatch.setattr(FactorPlan, "_tail_after_first_term", lambda self, rows, cols: False)  # the symbolic analysis's
    plan = FactorPlan(d.terms, cp)
    assert plan.split == 2 and plan.qt > 0 and plan.Ns > d.terms[0].nlevels
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm, 5))
    _check_against_dense(d, Factor(plan, plan.load(cp), lams), lams)


def _banded(nsub=400, nitem=150, per=10, seed=2):
    """Subjects each see a window of ``per`` consecutive items, whose labels are shuffled."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, nitem - per, nsub)
    item = np.repeat(start, per) + np.tile(np.arange(per), nsub)
    df = pd.DataFrame({"sub": np.repeat(np.arange(nsub), per), "item": rng.permutation(nitem)[item]})
    df["x"] = rng.normal(size=len(df))
    eta = df.x + rng.normal(size=nsub)[df["sub"]] + rng.normal(size=nitem)[item]
    df["y"] = eta + rng.normal(size=len(df))
    df["yb"] = (rng.uniform(size=len(df)) < 1 / (1 + np.exp(-eta))).astype(float)
    return df


def test_banded_coupling_hidden_by_labels_is_ordered_into_a_band(monkeypatch):
    """In label order the items' factor fills in (a dense tail); in the fill-reducing order it
    is a band (the compiled kernels' layout: the staged one would put the filled items in its
    dense tail)."""
    compiled_plans(monkeypatch)
    nsub, nitem = 400, 150
    df = _banded(nsub, nitem)
    d = build_design("y ~ x + (1|sub) + (1|item)", df)
    assert d.terms[1].display is not None  # the items were reordered
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    item_blocks = plan.colptr[-1] - plan.colptr[nsub]  # the items' columns of the factor
    assert plan.qt == 0 and item_blocks < 0.15 * nitem**2 / 2
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm, 1))
    _check_against_dense(d, Factor(plan, plan.load(cp), lams), lams)
    # in the labels' order the same design needs a dense tail
    with monkeypatch.context() as mp:
        mp.setattr(design_module, "fill_reducing_levels", lambda codes, nlevels: [None] * len(codes))
        natural = build_design("y ~ x + (1|sub) + (1|item)", df)
    assert natural.terms[1].display is None
    assert (
        FactorPlan(natural.terms, CrossProducts.from_rows(natural.terms, natural.X, natural.y)).qt
        == natural.terms[1].nlevels
    )


def test_nested_factors_have_no_fill_in_and_no_dense_block():
    d = build_design(FORMULAS["nested"], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    assert plan.qt == 0 and plan.split == len(d.terms)
    # each school column holds itself, its district and its region: nothing more
    schools = d.terms[0].nlevels
    assert np.all(np.diff(plan.colptr)[:schools] == 3)


def test_crossed_factors_get_a_dense_tail():
    d = build_design(FORMULAS["crossed"], _data())
    plan = FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y))
    assert plan.split == 1 and plan.qt == d.terms[1].q + d.terms[2].q


@pytest.mark.parametrize("name", list(FORMULAS))
def test_row_map_equals_the_data_pass(name):
    """A weighted pass straight into the factor's layout equals loading the CrossProducts."""
    d = build_design(FORMULAS[name], _data())
    w = np.random.default_rng(4).uniform(0.1, 2.0, len(d.y))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, w)
    plan = FactorPlan(d.terms, cp)
    direct = RowMap(plan, d.terms).blocks(w, d.X, d.y)
    loaded = plan.load(cp)
    assert direct.A == pytest.approx(loaded.A, rel=1e-12, abs=1e-12)
    assert direct.XZ == pytest.approx(loaded.XZ, rel=1e-12, abs=1e-12)
    assert direct.XX == pytest.approx(loaded.XX, rel=1e-12)
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm))
    _check_against_dense(d, Factor(plan, direct, lams), lams, w)


@pytest.mark.parametrize(
    "formula,shortcut",
    [
        (FORMULAS["scalar"], "diagonal"),
        ("y ~ x + x2 + (1|a)", "diagonal"),
        (FORMULAS["vector"], "blockdiag"),
        ("y ~ x + (x + x2|school)", "blockdiag"),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_one_term_plans_equal_the_general_kernels(formula, shortcut, weighted):
    """One term: a random intercept's factor is diagonal (numpy, no compiled kernel), a vector
    term's a p × p block per level (the small level_* kernels). Factor, solves, inverse and the
    log-determinant gradient blocks equal the general block-sparse kernels' on the same layout."""
    from midas_glmm.engine.gradient import _logdet_blocks

    d = build_design(formula, _data())
    w = np.random.default_rng(4).uniform(0.2, 3.0, len(d.y)) if weighted else None
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, w)
    plan = FactorPlan(d.terms, cp)
    assert getattr(plan, shortcut) and plan.diagonal + plan.blockdiag == 1 and plan.qt == 0
    tm = ThetaMap(d.terms)
    blocks = plan.load(cp)
    for seed in (1, 2):
        lams = tm.lams(_theta(tm, seed))
        rhs = np.random.default_rng(seed).normal(size=(plan.q, 3))
        got = []
        for on in (True, False):
            setattr(plan, shortcut, on)
            F = Factor(plan, blocks, lams)
            Z, Zt = F.selected_inverse()
            got.append((F.L, F.LX, F.LXX, F.logdet_Z, F.solve(rhs), F.solve_Zt(rhs), Z, _logdet_blocks(F, Z, Zt)[0]))
        setattr(plan, shortcut, True)
        for a, b in zip(*got):
            assert np.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_multi_term_plans_take_the_general_kernels():
    for name in ("nested", "crossed", "nested_slopes"):
        d = build_design(FORMULAS[name], _data())
        plan = FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y))
        assert not plan.diagonal and not plan.blockdiag


@pytest.mark.parametrize("name", ["scalar", "vector"])
def test_one_term_plan_raises_on_a_negative_block(name):
    d = build_design(FORMULAS[name], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    blocks = plan.load(cp)
    blocks.A[plan.diagpos[3]] = -1e12  # random effect 3: the level 3 // p
    with pytest.raises(np.linalg.LinAlgError, match=f"node {3 // plan.p_term[0]} is not positive definite"):
        Factor(plan, blocks, ThetaMap(d.terms).lams(ThetaMap(d.terms).start))


def test_a_singular_working_system_raises_linalg_error():
    d = build_design(FORMULAS["crossed"], _data())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    blocks = plan.load(cp)
    blocks.A[plan.diagpos[0]] = -1e12  # a negative "count": no Cholesky factor exists
    with pytest.raises(np.linalg.LinAlgError):
        Factor(plan, blocks, ThetaMap(d.terms).lams(np.ones(3)))


@pytest.mark.parametrize("family, response", [("gaussian", "y"), ("binomial", "yb")])
def test_reordered_levels_give_the_same_fit_reported_in_label_order(family, response, monkeypatch):
    from midas_glmm import MixedModel

    df = _banded(nsub=200, nitem=60, per=6, seed=3)  # 260 random effects: an LMM's sparse factor too
    formula = f"{response} ~ x + (1|sub) + (1|item)"
    ordered = MixedModel.from_formula(formula, df, family=family)
    assert ordered.design.terms[1].display is not None
    fit = ordered.fit()
    monkeypatch.setattr(design_module, "fill_reducing_levels", lambda codes, nlevels: [None] * len(codes))
    plain = MixedModel.from_formula(formula, df, family=family).fit()
    assert fit.llf == pytest.approx(plain.llf, abs=1e-7)
    assert np.allclose(fit.params, plain.params, atol=1e-4 * plain.bse.min())
    for name in ("sub", "item"):
        a, b = fit.ranef()[name], plain.ranef()[name]
        assert list(a.index) == list(b.index) == sorted(b.index, key=lambda v: int(v))
        assert np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-4)
    long_a, long_b = fit.ranef(condvar=True), plain.ranef(condvar=True)
    assert list(long_a.grp) == list(long_b.grp)
    assert np.allclose(long_a.condsd, long_b.condsd, rtol=1e-4)
    assert np.allclose(fit.predict(df.iloc[:50]), plain.predict(df.iloc[:50]), atol=1e-4)


@pytest.mark.parametrize("name", ["crossed", "two_crossed", "crossed_slopes", "vector_tail"])
@pytest.mark.parametrize("panel_rows", [None, 8])  # one panel (kept for the solves) / several
def test_dense_panel_updates_of_the_tail_equal_dense_algebra(name, panel_rows, monkeypatch):
    """Crossed factors fill the tail rows of the first term's columns densely: their update of
    the tail is a BLAS rank-k update by panels (and, with one panel, the forward solves' tail
    update a product), for nodes of any size (random slopes: a panel row per random effect);
    the numbers must be the dense algebra's."""
    formula = {
        "two_crossed": "y ~ x + (1|a) + (1|b)",
        "crossed_slopes": "y ~ x + (1 + x|a) + (1 + x|b)",
        "vector_tail": "y ~ x + (1|a) + (x|b)",
    }.get(name, FORMULAS.get(name))
    compiled_plans(monkeypatch)  # the compiled kernels' updates of the tail
    if panel_rows is not None:
        monkeypatch.setattr(sparsity, "PANEL_ENTRIES", panel_rows)
        monkeypatch.setattr(sparsity, "PANEL_MIN_ROWS", panel_rows)
    d = build_design(formula, _data(seed=4))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    assert plan.panels is not None and (len(plan.panels) > 1) == (panel_rows is not None)
    tm = ThetaMap(d.terms)
    lams = tm.lams(_theta(tm))
    F = Factor(plan, plan.load(cp), lams)
    assert (F._panel is not None) == (panel_rows is None)
    _check_against_dense(d, F, lams)
    x = np.random.default_rng(0).normal(size=(plan.q, 2))
    M = _dense(d, lams)[0]
    assert F.solve(x) == pytest.approx(np.linalg.solve(M, x), rel=1e-8, abs=1e-10)


def test_sparse_coupling_keeps_the_scattered_updates():
    """A tail the first term meets sparsely (an observation-level term: each row's level sees one
    level of a and one of b) keeps the scattered updates: a dense panel would multiply zeros."""
    d = build_design(FORMULAS["obs_level"], _data())
    plan = FactorPlan(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y))
    assert plan.qt > 0 and plan.panels is None


def test_heapsort_sorts_the_slice_only():
    """The symbolic step's sort of a column's rows (kernels._heapsort) against numpy's."""
    from midas_glmm.linalg import kernels

    rng = np.random.default_rng(4)
    for n in (0, 1, 2, 3, 8, 33, 500):
        a = rng.integers(0, 40, n + 4).astype(np.int64)
        got, want = a.copy(), a.copy()
        kernels._heapsort(got, 2, n + 2)
        want[2 : n + 2].sort()
        assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["vector", "nested_slopes", "crossed_vector_tail"])
def test_lambda_products_equal_the_dense_block_diagonal_lambda(name):
    """Λ'M and ΛM by the factor's per-term products (two-column terms by λ's entries, the others
    by scaling or einsum) against Λ as a dense block-diagonal array, on matrices and vectors."""
    d = build_design(FORMULAS[name], _data(seed=3))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    plan = FactorPlan(d.terms, cp)
    rng = np.random.default_rng(7)
    lams = [np.tril(rng.uniform(0.3, 1.5, (t.p, t.p))) for t in d.terms]
    L = Factor(plan, plan.load(cp), lams)
    dense = np.zeros((plan.q, plan.q))
    for t, lam in enumerate(lams):
        a = plan.term_off[t]
        for level in range(d.terms[t].nlevels):
            o = a + level * lam.shape[0]
            dense[o : o + lam.shape[0], o : o + lam.shape[0]] = lam
    M, v = rng.normal(size=(plan.q, 5)), rng.normal(size=plan.q)
    assert np.allclose(L.lam_t(M), dense.T @ M, rtol=1e-14, atol=1e-14)
    assert np.allclose(L.lam(M), dense @ M, rtol=1e-14, atol=1e-14)
    assert np.allclose(L.lam_t(v), dense.T @ v, rtol=1e-14, atol=1e-14)
    assert np.allclose(L.lam(v), dense @ v, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "formula", ["y ~ x + (x|a) + (x|b)", "y ~ x + (x|school) + (x|a)", "y ~ x + (x + x2|school) + (x|a) + (1|b)"]
)
def test_two_by_two_blocks_are_scaled_as_the_general_product_does(formula):
    """scale_blocks and scatter_tail write λ_i'A_ijλ_j of a 2 × 2 block out in full (_lam_pair):
    every entry the general block product's (_lam_product) to the bit, beside 3 × 2, 1 × 2 and
    scalar blocks, on the diagonal (mirrored) and off it, in the sparse part and the tail."""
    from midas_glmm.engine.factor import lam_flat
    from midas_glmm.linalg import kernels

    d = build_design(formula, _data(seed=5))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    P = FactorPlan(d.terms, cp)
    assert P.Ns and P.qt
    rng = np.random.default_rng(8)
    lam, lamoff = lam_flat([np.tril(rng.uniform(-1.5, 1.5, (t.p, t.p))) for t in d.terms])
    A = P.load(cp).A
    A = A + rng.normal(scale=1e-3, size=A.shape) * (A != 0)  # no exact sums to hide an order
    out = np.empty(P.nsparse)
    kernels.scale_blocks(A, out, P.colptr, P.rowidx, P.blkoff, P.nsize, P.nterm, lam, lamoff, P.Ns)
    T = np.zeros((P.qt, P.qt))
    kernels.scatter_tail(A[P.nsparse :], P.brow, P.bcol, P.boff, P.nsize, P.nterm, lam, lamoff, P.tailoff, T)
    want, scratch, pairs = np.empty(P.nsparse), np.empty(9), 0
    for j in range(P.Ns):
        for e in range(P.colptr[j], P.colptr[j + 1]):
            i, o = P.rowidx[e], P.blkoff[e]
            pi, pj = P.nsize[i], P.nsize[j]
            pairs += pi == pj == 2
            li, lj = lamoff[P.nterm[i]], lamoff[P.nterm[j]]
            kernels._lam_product(A, o, pi, pj, lam, li, lj, want, o, pj, scratch, bool(i == j))
        o = P.blkoff[P.colptr[j]]
        want[o : o + P.nsize[j] ** 2 : P.nsize[j] + 1] += 1.0
    assert np.array_equal(out, want)
    flat = np.zeros(P.qt * P.qt)
    for e in range(len(P.brow)):
        i, j = P.brow[e], P.bcol[e]
        pairs += P.nsize[i] == P.nsize[j] == 2
        oo = P.tailoff[i] * P.qt + P.tailoff[j]
        li, lj = lamoff[P.nterm[i]], lamoff[P.nterm[j]]
        kernels._lam_product(A[P.nsparse :], P.boff[e], P.nsize[i], P.nsize[j], lam, li, lj, flat, oo, P.qt, scratch)
    assert pairs and np.array_equal(T, flat.reshape(P.qt, P.qt))


@pytest.mark.parametrize("name", list(FORMULAS))
def test_the_dense_factor_from_the_criterions_system_equals_dense_algebra(name):
    """LMMCriterion.factor on the all-dense plan factors DenseSystem's K (the system the
    evaluations factor): the same numbers as dense algebra and as the factor that forms K itself,
    and its penalised residual sum of squares is the evaluations' to the bit (the same Cholesky of
    the same K: the estimates report what the optimizer saw)."""
    d = build_design(FORMULAS[name].replace("(x|b)", "(x|region)"), _data(n=300))
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    crit = LMMCriterion(d.terms, cp, True, dense=True)
    assert crit._takes_system
    tm = crit.tmap
    for seed in (1, 2):
        theta = _theta(tm, seed)
        lams = tm.lams(theta)
        F = crit.factor(theta)
        _check_against_dense(d, F, lams)
        own = Factor(crit.plan, crit.blocks, lams)  # K formed by the factor
        assert F.vcov_beta_unscaled() == pytest.approx(own.vcov_beta_unscaled(), rel=1e-9)
        assert F.pwrss == crit._dense_system().logdets(theta)[2]
        assert crit.from_factor(F) == pytest.approx(crit(theta), rel=1e-14)


@pytest.mark.parametrize("order", ["C", "F", "slice"])
@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_lower_inverse_is_scipys_triangular_solve_to_the_bit(k, order):
    """factor.lower_inverse calls LAPACK's trtrs as scipy's solve_triangular(R, I, lower=True)
    does, for either memory order (a slice of the [X y] factor, as R_X is, is neither)."""
    import scipy.linalg as sla

    from midas_glmm.engine.factor import lower_inverse

    A = np.random.default_rng(k).normal(size=(k + 1, k + 1))
    L = np.linalg.cholesky(A @ A.T + np.eye(k + 1))
    R = {"C": np.ascontiguousarray(L[:k, :k]), "F": np.asfortranarray(L[:k, :k]), "slice": L[:k, :k]}[order]
    expected = sla.solve_triangular(R, np.eye(k), lower=True) if k else np.zeros((0, 0))
    assert np.array_equal(lower_inverse(R), expected)


@pytest.mark.parametrize("k", [1, 3, 64, 65, 130])
def test_from_lower_mirrors_the_lower_triangle_and_ignores_the_upper(k):
    from midas_glmm.linalg.gram import from_lower

    M = np.random.default_rng(k).normal(size=(k, k))
    expected = np.tril(M) + np.tril(M, -1).T
    out = from_lower(M)
    assert out is not M and np.array_equal(out, expected) and np.array_equal(out, out.T)
    M[np.triu_indices(k, 1)] = np.nan  # the upper triangle is never read
    assert np.array_equal(from_lower(M), expected)


def test_the_ols_fit_kept_on_the_cross_products_is_their_own():
    """lmm.ols_fit is kept on the CrossProducts it was asked of: another response's blocks (a
    new CrossProducts) get their own fit, equal to a least-squares fit of the rows."""
    from midas_glmm.engine.lmm import ols_fit

    d = build_design("y ~ x + x2 + (1|school)", _data())
    for y in (d.y, d.y[::-1] * 2.0 + 1.0):
        cp = CrossProducts.from_rows(d.terms, d.X, y)
        beta, rss = ols_fit(cp)
        b, res = np.linalg.lstsq(d.X, y, rcond=None)[:2]
        assert beta == pytest.approx(b, rel=1e-9) and rss == pytest.approx(float(res[0]), rel=1e-9)


@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (x|district)",
        "y ~ x + x2 + (x|district) + (0 + x2|region)",
        "y ~ x + (1|a) + (x|region)",
        "y ~ x + (1|district) + (1|region)",
    ],
)
def test_the_dense_criterions_closed_form_derivatives_equal_its_differences(formula, weighted, REML):
    """LMMCriterion.dense_derivatives (K's polynomial: traces of K_s⁻¹ ∂K_s and of its
    products) against central differences of the criterion, REML and ML, with prior weights:
    vector terms, a slope alone, crossed and nested terms."""
    from midas_glmm.engine.optimize import fd_derivatives

    d = build_design(formula, _data(n=300))
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(d.y)) if weighted else None
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, w)
    ldW = float(np.sum(np.log(w))) if weighted else 0.0
    crit = LMMCriterion(d.terms, cp, REML, ldW, dense=True)
    for seed in (1, 2):
        theta = _theta(crit.tmap, seed)
        g, H = crit.dense_derivatives(theta)
        g_fd, H_fd = fd_derivatives(crit, theta)
        assert g == pytest.approx(g_fd, rel=1e-6, abs=1e-6 * np.max(np.abs(g)))
        assert H == pytest.approx(H_fd, rel=1e-3, abs=1e-4 * np.max(np.abs(H)))
        assert np.array_equal(H, H.T)


def test_the_checks_derivatives_are_exact_where_the_dense_plan_has_them_and_differences_elsewhere():
    """lmm.criterion_derivatives: the closed form from three θ on the all-dense plan (no
    evaluation spent; the polynomial kept up to POLY_MAX_CLOSED_FORM numbers then), central
    differences below three θ, on a dense system too large for its polynomial, and on the sparse
    plan (their 2k + k(k − 1) evaluations)."""
    from midas_glmm.engine.lmm import criterion_derivatives

    data = _data(n=300)
    four = 4 * 2 + 4 * 3  # the stencil of four θ
    # (formula, dense plan, whether the dense system has its polynomial, evaluations spent)
    for formula, dense, poly, spent in [
        ("y ~ x + (x|district) + (0 + x2|region)", True, True, 0),
        ("y ~ x + (1|district)", True, True, 2),
        ("y ~ x + (x|district) + (0 + x2|region)", False, None, four),
        ("y ~ x + (1|school) + (x|region)", True, True, 0),  # 257,415 numbers: past POLY_MAX, four θ
        ("y ~ x + (x|school) + (x2|region)", True, False, 6 * 2 + 6 * 5),  # 248 random effects, six θ
    ]:
        d = build_design(formula, data)
        crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True, dense=dense)
        if poly is not None:
            assert (crit._dense_system().poly is not None) == poly
        theta = _theta(crit.tmap, 1)
        g, H, used = criterion_derivatives(crit, theta, crit(theta))
        assert used == spent
        assert g.shape == (len(theta),) and H.shape == (len(theta), len(theta))
