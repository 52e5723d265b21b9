"""The LMM engine against independent computations: dense algebra, the marginal likelihood,
the seed's BLUP formula, and invariances a bug would break."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from midas_glmm import MixedModel, datasets
from midas_glmm.design.blocks import CrossProducts
from midas_glmm.design.design import build_design
from midas_glmm.engine.lmm import LMMCriterion


def simulated(seed=1, n=240):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 8, n)
    b = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    y = (
        1
        + 0.5 * x
        + rng.normal(0, 1, 8)[a]
        + rng.normal(0, 0.7, 8)[a] * x
        + rng.normal(0, 0.8, 5)[b]
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b], "c": (a + b) % 3})


def dense_criterion(design, theta, REML):
    """−2ℓ from dense Z, Λ and the penalised least-squares normal equations (small data only)."""
    Zs, Ls = [], []
    off = 0
    for t in design.terms:
        Z = np.zeros((design.nobs, t.q))
        for a in range(t.p):
            Z[np.arange(design.nobs), t.codes * t.p + a] = t.Zcols[:, a]
        Zs.append(Z)
        lam = t.lam(theta[off : off + t.n_theta])
        off += t.n_theta
        Ls.append(np.kron(np.eye(t.nlevels), lam))
    Z = np.hstack(Zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    i = 0
    for L in Ls:
        Lam[i : i + L.shape[0], i : i + L.shape[0]] = L
        i += L.shape[0]
    X, y = design.X, design.y
    ZL = Z @ Lam
    A = np.block([[ZL.T @ ZL + np.eye(ZL.shape[1]), ZL.T @ X], [X.T @ ZL, X.T @ X]])
    sol = np.linalg.solve(A, np.concatenate([ZL.T @ y, X.T @ y]))
    u, beta = sol[: ZL.shape[1]], sol[ZL.shape[1] :]
    r2 = np.sum((y - X @ beta - ZL @ u) ** 2) + u @ u
    ldL = np.linalg.slogdet(ZL.T @ ZL + np.eye(ZL.shape[1]))[1]
    n, p = X.shape
    if REML:
        Sx = A[ZL.shape[1] :, ZL.shape[1] :] - A[ZL.shape[1] :, : ZL.shape[1]] @ np.linalg.solve(
            A[: ZL.shape[1], : ZL.shape[1]], A[: ZL.shape[1], ZL.shape[1] :]
        )
        return ldL + np.linalg.slogdet(Sx)[1] + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
    return ldL + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (x|a) + (1|b)",  # correlated slope crossed with an intercept
        "y ~ x + (1|a/b)",  # nested
        "y ~ x + (x||a) + (1|b) + (1|c)",  # uncorrelated, three factors
        "y ~ C(c) + (1 + x|b) + (0 + x|a)",
    ],
)
@pytest.mark.parametrize("REML", [True, False])
def test_blocked_factor_equals_dense_algebra(formula, REML):
    d = build_design(formula, simulated())
    cp = CrossProducts.from_rows(d.terms, d.X, d.y, chunk_rows=97)  # several chunks, summed
    crit = LMMCriterion(d.terms, cp, REML)
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = crit.tmap.start + rng.uniform(-0.4, 0.6, len(crit.tmap)) * np.where(
            np.isfinite(crit.tmap.lower), 1, 0.5
        )
        theta = np.maximum(theta, crit.tmap.lower)
        assert crit(theta) == pytest.approx(dense_criterion(d, theta, REML), rel=1e-10)


def test_ml_deviance_is_the_marginal_gaussian_likelihood():
    df = simulated(3)
    res = MixedModel.from_formula("y ~ x + (x|a) + (1|b)", df).fit(method="ML")
    d = res.design
    V = res.sigma**2 * np.eye(d.nobs)
    for t, Sig in zip(d.terms, res.term_covariances()):
        Z = np.zeros((d.nobs, t.q))
        for a in range(t.p):
            Z[np.arange(d.nobs), t.codes * t.p + a] = t.Zcols[:, a]
        V += Z @ np.kron(np.eye(t.nlevels), Sig) @ Z.T
    ll = stats.multivariate_normal(d.X @ res.params.to_numpy(), V).logpdf(d.y)
    assert res.llf == pytest.approx(ll, abs=1e-8)
    # and the GLS estimate of β at that V is β̂
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(d.X.T @ Vi @ d.X, d.X.T @ Vi @ d.y)
    assert np.allclose(beta, res.params, atol=1e-8)
    assert np.allclose(np.linalg.inv(d.X.T @ Vi @ d.X), res.vcov(), rtol=1e-6)


def test_blups_follow_the_seeds_shrinkage_formula():
    res = MixedModel.from_formula("score ~ hours + (1|school)", datasets.load("schools")).fit()
    d = res.design
    resid = d.y - d.X @ res.params.to_numpy()
    t = d.terms[0]
    n_j = np.bincount(t.codes)
    rbar = np.bincount(t.codes, weights=resid) / n_j
    sigma_u2 = res.varcorr()["vcov"].iloc[0]
    shrunk = n_j / (n_j + res.sigma**2 / sigma_u2) * rbar
    assert np.allclose(res.ranef()["school"]["(Intercept)"].to_numpy(), shrunk, atol=1e-8)


def test_optimizers_and_standardisation_reach_the_same_optimum():
    df = datasets.load("sleepstudy")
    m = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", df)
    base = m.fit()
    for kw in ({"optimizer": "nelder-mead"}, {"optimizer": "powell"}, {"standardize": False}):
        other = m.fit(**kw)
        assert other.reml_criterion == pytest.approx(base.reml_criterion, abs=1e-6)
        assert np.allclose(other.params, base.params, rtol=1e-6)


def test_array_constructor_equals_formula():
    df = datasets.load("sleepstudy")
    res_f = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", df).fit()
    X = np.column_stack([np.ones(len(df)), df["Days"]])
    res_a = MixedModel(
        df["Reaction"], X, groups={"Subject": df["Subject"]}, exog_re={"Subject": X}, exog_names=["(Intercept)", "Days"]
    ).fit()
    assert res_a.reml_criterion == pytest.approx(res_f.reml_criterion, abs=1e-8)
    assert np.allclose(res_a.params, res_f.params)
    assert np.allclose(res_a.theta, res_f.theta, atol=1e-6)


def test_model_is_not_changed_by_fitting_and_results_are_separate():
    m = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", datasets.load("sleepstudy"))
    r1 = m.fit(method="REML")
    r2 = m.fit(method="ML")
    assert r1.method == "REML" and r2.method == "ML"
    assert r1.llf != r2.llf and r1.reml_criterion is not None and r2.reml_criterion is None


def test_singular_fit_is_detected_and_warned():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"g": np.repeat(np.arange(20), 6), "x": rng.normal(size=120)})
    e = rng.normal(size=120)
    df["y"] = df["x"] + e - pd.Series(e).groupby(df["g"]).transform("mean")  # no between-group variation
    with pytest.warns(Warning, match="singular"):
        res = MixedModel.from_formula("y ~ x + (1|g)", df).fit()
    assert res.singular and res.theta[0] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not MixedModel.from_formula("Reaction ~ Days + (1|Subject)", datasets.load("sleepstudy")).fit().singular


def test_the_criterion_keeps_nothing_row_sized():
    """After the data pass the per-theta work sees only level-sized blocks: O(q), not O(n)."""
    rng = np.random.default_rng(2)
    n, G = 100_000, 500
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "g": rng.integers(0, G, n)})
    d = build_design("y ~ x + (1|g)", df)
    cp = CrossProducts.from_rows(d.terms, d.X, d.y)
    crit = LMMCriterion(d.terms, cp, REML=True)
    arrays = cp.ZtZ + cp.XytZ + [cp.XytXy]
    assert max(a.size for a in arrays) <= 3 * G
    L = crit.factor(np.array([0.7]))
    assert L.L00.shape == (G, 1, 1) and L.LX.shape == (G, 3)
    assert L.L.size == G and L.Ltail.size == 0  # one scalar per level, no dense block


def crossed(seed=11, n=6000, na=300, nb=90):
    """Students-by-lecturers shape with lecturers nested in departments (σ = 0.5, 0.8, 0.3; σ_e = 1)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, na, n), rng.integers(0, nb, n)
    dept = rng.integers(0, 6, nb)[b]
    x = rng.normal(size=n)
    y = (
        1
        + 0.4 * x
        + rng.normal(0, 0.5, na)[a]
        + rng.normal(0, 0.8, nb)[b]
        + rng.normal(0, 0.3, 6)[dept]
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "dept": dept})


@pytest.mark.parametrize("REML", [True, False])
def test_dense_fill_in_blocks_equal_dense_algebra(REML):
    """Crossed factors large enough that the fill-in block goes through LAPACK's dpotrf."""
    d = build_design("y ~ x + (1|a) + (1|b) + (1|dept)", crossed(n=2500))
    assert d.terms[1].nlevels >= 64
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y, chunk_rows=700), REML)
    for theta in ([0.5, 0.8, 0.3], [1.3, 0.05, 2.0], [0.0, 0.6, 0.0]):
        assert crit(np.array(theta)) == pytest.approx(dense_criterion(d, np.array(theta), REML), rel=1e-10)


def test_moment_start_is_near_the_optimum_and_does_not_change_it():
    from midas_glmm.engine.lmm import moment_start
    from midas_glmm.engine.optimize import minimize_bounded

    d = build_design("y ~ x + (1|a) + (1|b) + (1|dept)", crossed())
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), REML=True)
    res = MixedModel.from_formula("y ~ x + (1|a) + (1|b) + (1|dept)", crossed()).fit()
    start = moment_start(crit.cp, crit.tmap)
    # the two crossed factors' moments land within 15% of the REML θ (lme4's start is 1)
    assert np.allclose(start[:2], res.theta[:2], rtol=0.15)
    assert crit(start) < crit(crit.tmap.start)
    # from lme4's own start the optimizer finds the same optimum
    other = minimize_bounded(crit, crit.tmap.start, crit.tmap.lower, step=0.75)
    assert res.reml_criterion == pytest.approx(other.fun, abs=1e-6)
    assert np.allclose(res.theta, other.x, atol=1e-4)


def test_moment_start_with_a_known_residual_gives_the_components_own_sds():
    """With σ² known (``residual``) λ is σ̂_a/σ: a response scaled by c scales those λ by c (above
    the floor), while the default's σ̂_a/σ̂ does not change."""
    from midas_glmm.engine.lmm import moment_start

    d = build_design("y ~ x + (1|a) + (1|b) + (1|dept)", crossed())
    base = CrossProducts.from_rows(d.terms, d.X, d.y)
    scaled = CrossProducts.from_rows(d.terms, d.X, 3.0 * d.y)
    tm = LMMCriterion(d.terms, base, REML=True).tmap
    known, known3 = moment_start(base, tm, residual=1.0), moment_start(scaled, tm, residual=1.0)
    above = known3 > 0.1
    assert above[:2].all() and np.allclose(known3[above], 3.0 * known[above], rtol=1e-10)
    assert np.allclose(moment_start(scaled, tm), moment_start(base, tm), rtol=1e-10)


@pytest.mark.parametrize("REML", [True, False])
def test_the_unprofiled_criterion_is_the_factors_on_every_plan(REML):
    """crit.unprofiled(θ, σ) (the profile's and the dispersion model's criterion) takes its
    log-determinants and r² from the plan's own system where it has one (all-dense, one term's
    levels, staged): the same number as from the general Factor, on each plan."""
    rng = np.random.default_rng(4)
    n = 3000
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "a": rng.integers(0, 300, n),
            "b": rng.integers(0, 20, n),
            "s": rng.integers(0, 12, n),
        }
    )
    df["y"] = df.x + rng.normal(size=300)[df.a] + rng.normal(size=20)[df.b] + rng.normal(size=n)
    designs = {
        "dense": ("y ~ x + (x|s)", df.iloc[:400]),
        "levels": ("y ~ x + (x|a)", df),
        "staged": ("y ~ x + (1|a) + (1|b)", df),
        "general": ("y ~ x + (x|a) + (x|b)", df),
    }
    for plan, (formula, data) in designs.items():
        d = build_design(formula, data)
        crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), REML=REML)
        paths = {"dense": crit._takes_system, "levels": crit._takes_levels, "staged": crit._takes_stages}
        assert [k for k, v in paths.items() if v] == ([] if plan == "general" else [plan])
        m = crit.n - crit.p if REML else crit.n
        for _ in range(3):
            theta = rng.normal(size=len(crit.tmap))
            theta = np.where(crit.tmap.lower == 0, np.abs(theta), theta)  # the diagonal at or above 0
            sigma = rng.uniform(0.5, 2.0)
            L = crit.factor(theta)
            expected = (
                L.logdet_Z + (L.logdet_X if REML else 0.0) + m * np.log(2 * np.pi * sigma**2) + L.pwrss / sigma**2
            ) - crit.ldW
            assert crit.unprofiled(theta, sigma) == pytest.approx(expected, rel=1e-11), plan


def _uncorrelated_data(seed: int = 3, n: int = 400, levels: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g, x = rng.integers(0, levels, n), rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 1, levels)[g] + rng.normal(0, 0.6, levels)[g] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": np.array([f"s{i:02d}" for i in range(levels)])[g]})


def _levels_regressions_start(df: pd.DataFrame) -> np.ndarray:
    """(σ̂_1/σ̂, σ̂_x/σ̂) of y ~ x + (x || g) by hand from the rows: each level's own regression of
    the OLS residuals on (1, x), σ̂² within them, the SDs the diagonal of the coefficients'
    covariance less their sampling variance."""
    X = np.column_stack([np.ones(len(df)), df["x"]])
    r = df["y"].to_numpy() - X @ np.linalg.lstsq(X, df["y"].to_numpy(), rcond=None)[0]
    bs, ginv, fitted = [], [], 0.0
    for _, rows in df.groupby("g").indices.items():
        Z = X[rows]
        G = np.linalg.inv(Z.T @ Z)
        b = G @ Z.T @ r[rows]
        bs.append(b)
        ginv.append(G)
        fitted += b @ (Z.T @ r[rows])
    bs = np.array(bs)
    within = (r @ r - fitted) / (len(df) - 2 * len(bs))
    cov = np.cov(bs.T) - within * np.mean(ginv, axis=0)
    return np.maximum(np.sqrt(np.maximum(np.diag(cov), 0.0) / within), 0.1)


@pytest.mark.parametrize("formula", ["y ~ x + (x || g)", "y ~ x + (1 | g) + (0 + x | g)"])
def test_uncorrelated_columns_of_one_factor_start_from_their_joint_levels_regressions(formula):
    """(x || g) and its two scalar terms: each column's SD from the levels' regressions on both
    columns (each column's own ANOVA sees the other's variance: the
    sleepstudy start was 1.80 for 0.98), computed here from the rows."""
    from midas_glmm.engine.lmm import moment_start

    df = _uncorrelated_data()
    d = build_design(formula, df)
    crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), REML=True)
    assert np.allclose(moment_start(crit.cp, crit.tmap), _levels_regressions_start(df), rtol=1e-10)


def test_the_joint_start_of_two_scalar_terms_follows_each_terms_own_level_order():
    """The second term's levels in another order (the fill-reducing order a later term may get):
    the same start, each level's columns paired by label."""
    from midas_glmm.engine.lmm import moment_start

    df = _uncorrelated_data(seed=5)
    d = build_design("y ~ x + (x || g)", df)
    perm = np.random.default_rng(1).permutation(d.terms[1].nlevels)
    terms = [d.terms[0], d.terms[1].reordered(perm)]
    assert not (terms[0].levels == terms[1].levels).all()
    crits = [LMMCriterion(ts, CrossProducts.from_rows(ts, d.X, d.y), REML=True) for ts in (d.terms, terms)]
    starts = [moment_start(c.cp, c.tmap) for c in crits]
    assert np.allclose(starts[0], starts[1], rtol=1e-12)
    assert np.allclose(starts[0], _levels_regressions_start(df), rtol=1e-10)


def test_sleepstudys_uncorrelated_start_is_the_diagonal_of_the_correlated_one():
    """Balanced: the joint levels' regressions of (Days || Subject) are those of (Days | Subject),
    whose start is REML's optimum; the uncorrelated start is the SDs of that λλ'."""
    from midas_glmm.engine.lmm import moment_start

    ss = datasets.load("sleepstudy")
    starts = []
    for formula in ("Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (Days || Subject)"):
        d = build_design(formula, ss)
        crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), REML=True)
        starts.append(moment_start(crit.cp, crit.tmap))
    lam = np.array([[starts[0][0], 0.0], [starts[0][1], starts[0][2]]])
    assert np.allclose(starts[1], np.sqrt(np.diag(lam @ lam.T)), rtol=1e-10)


def test_a_response_far_from_zero_loses_no_precision():
    """Shifting y by a constant changes only the intercept. y − X b_OLS is what the blocks hold,
    so the penalised residual sum of squares is not the difference of two numbers of size y'y
    (with y'y it was: at a shift of 1e6, θ was 0.70 instead of 0.50)."""
    rng = np.random.default_rng(0)
    n, G = 20000, 200
    g, x = rng.integers(0, G, n), rng.normal(size=n)
    y = x + rng.normal(0, 0.5, G)[g] + rng.normal(size=n)
    base = MixedModel.from_formula("y ~ x + (1|g)", pd.DataFrame({"y": y, "x": x, "g": g})).fit()
    for shift in (1e6, 1e8):
        res = MixedModel.from_formula("y ~ x + (1|g)", pd.DataFrame({"y": y + shift, "x": x, "g": g})).fit()
        assert res.theta == pytest.approx(base.theta, abs=1e-6)
        assert res.llf == pytest.approx(base.llf, abs=1e-5)
        assert res.params["x"] == pytest.approx(base.params["x"], abs=1e-8)
        assert res.params["(Intercept)"] - shift == pytest.approx(base.params["(Intercept)"], abs=1e-6)
        assert res.bse.to_numpy() == pytest.approx(base.bse.to_numpy(), rel=1e-6)


def test_a_response_constant_within_groups_says_so():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 15, 300)
    df = pd.DataFrame({"y": rng.normal(size=15)[g], "g": g})
    with pytest.warns(Warning, match="residual variance is \\(near\\) zero"):
        res = MixedModel.from_formula("y ~ 1 + (1|g)", df).fit()
    assert not res.converged


def _balanced(seed=2, levels=24, times=6, slope_sd=0.4):
    """A balanced repeated-measures design: every level the same times, a group covariate."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(levels), times)
    t = np.tile(np.arange(times, dtype=float), levels)
    trt = (g % 2).astype(float)
    y = 1 + 0.5 * t + 0.8 * trt + rng.normal(0, 1, levels)[g] + rng.normal(0, slope_sd, levels)[g] * t
    y += rng.normal(0, 0.7, levels * times)
    return pd.DataFrame({"y": y, "t": t, "trt": trt, "g": [f"s{i}" for i in g]})


@pytest.mark.parametrize(
    "name,formula",
    [
        ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
        ("dyestuff", "Yield ~ 1 + (1|Batch)"),
        (None, "y ~ t + (t|g)"),
        (None, "y ~ t * trt + (t|g)"),  # (1, t) times a group covariate: 2 of the levels' df
        (None, "y ~ trt + (1|g)"),
        ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),  # crossed in balance
    ],
)
def test_a_balanced_designs_moment_start_is_the_reml_optimum(name, formula):
    """On a balanced design whose fixed effects lie in the terms' columns, the moments (the levels'
    own regressions, or the main-effects ANOVA of crossed intercepts: the balanced ANOVA) give
    REML's optimum: the start equals BOBYQA's end, and the fit takes it after the convergence
    check's derivatives confirm it, with BOBYQA's answer."""
    from midas_glmm.engine.lmm import balanced_span, moment_start

    data = datasets.load(name) if name else _balanced()
    model = MixedModel.from_formula(formula, data)
    crit = LMMCriterion(
        model.design.terms, CrossProducts.from_rows(model.design.terms, model.design.X, model.design.y), True
    )
    searched = model.fit(optimizer="bobyqa")
    assert balanced_span(crit)
    assert moment_start(crit.cp, crit.tmap) == pytest.approx(searched.theta, rel=1e-6, abs=1e-8)
    fit = model.fit()
    assert fit.estimates.opt.optimizer == "moments"
    assert fit.llf == pytest.approx(searched.llf, abs=1e-9)
    assert fit.theta == pytest.approx(searched.theta, rel=1e-6, abs=1e-8)
    assert fit.bse.to_numpy() == pytest.approx(searched.bse.to_numpy(), rel=1e-6)


@pytest.mark.parametrize(
    "formula,method,kwargs",
    [
        ("y ~ t + trt + (t|g)", "REML", {}),  # a group covariate on the intercept, not the slope
        ("y ~ t + (1|g)", "REML", {}),  # a within covariate the term does not have
        ("y ~ t + (t|g)", "ML", {}),  # ML's optimum is not the balanced ANOVA's
        ("y ~ t + (t|g)", "REML", {"slope_sd": 0.0}),  # the slope's variance on its bound
    ],
)
def test_a_start_that_is_not_the_optimum_is_searched(formula, method, kwargs):
    """Where the moment start is not REML's optimum (or is on the boundary) the fit searches from
    it as before, and ends where BOBYQA asked for by name ends."""
    model = MixedModel.from_formula(formula, _balanced(**kwargs))
    fit, searched = model.fit(method=method), model.fit(method=method, optimizer="bobyqa")
    assert fit.estimates.opt.optimizer != "moments"
    assert fit.llf == pytest.approx(searched.llf, abs=1e-8)


def test_level_regressions_equal_the_two_stage_estimate():
    """cov(b_l) − s² mean((Z_l'Z_l)⁻¹) from each level's own least squares (numpy's lstsq), on an
    unbalanced design with a level too small to have its own regression; responses in a batch
    get the same numbers, bit for bit, as alone."""
    from midas_glmm.engine.lmm import level_regressions

    rng = np.random.default_rng(4)
    sizes = [1, *rng.integers(3, 12, 30)]
    g = np.repeat(np.arange(len(sizes)), sizes)
    n = len(g)
    Z = np.column_stack([np.ones(n), rng.normal(size=n)])
    R = rng.normal(size=(3, n))  # three residual vectors
    ZtZ = np.stack([Z[g == i].T @ Z[g == i] for i in range(len(sizes))])
    Zr = np.stack([np.stack([Z[g == i].T @ r[g == i] for i in range(len(sizes))]) for r in R])
    rss = np.einsum("kn,kn->k", R, R)
    cov, within = level_regressions(ZtZ, Zr, rss, n)
    for k, r in enumerate(R):
        b = np.array([np.linalg.lstsq(Z[g == i], r[g == i], rcond=None)[0] for i in range(1, len(sizes))])
        resid = sum(np.sum((r[g == i] - Z[g == i] @ b[i - 1]) ** 2) for i in range(1, len(sizes)))
        s2 = (resid + r[g == 0] @ r[g == 0]) / (n - 2 * (len(sizes) - 1))
        expected = np.cov(b.T) - s2 * np.mean([np.linalg.inv(ZtZ[i]) for i in range(1, len(sizes))], axis=0)
        assert within[k] == pytest.approx(s2, rel=1e-10)
        assert cov[k] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        alone = level_regressions(ZtZ, Zr[k : k + 1], rss[k : k + 1], n)
        assert np.array_equal(alone[0][0], cov[k]) and alone[1][0] == within[k]


def test_which_crossed_designs_count_as_balanced():
    """Penicillin's plates and samples (every cell once) are crossed in balance; a cell missing,
    a cell twice, or nested levels are not, and such fits search as before."""
    from midas_glmm.engine.lmm import balanced_crossed

    pen = datasets.load("penicillin")
    formula = "diameter ~ 1 + (1|plate) + (1|sample)"

    def crossed_balance(data):
        d = build_design(formula, data)
        crit = LMMCriterion(d.terms, CrossProducts.from_rows(d.terms, d.X, d.y), True)
        return balanced_crossed(crit.cp, crit.tmap)

    assert crossed_balance(pen)
    assert not crossed_balance(pen.iloc[1:])  # a cell missing
    assert not crossed_balance(pd.concat([pen, pen.iloc[:1]]))  # a cell twice
    assert not crossed_balance(pen.assign(sample=(pen.plate.map(ord) // 4).astype(str)))  # plates nested in six groups
    for data, f in ((pen.iloc[1:], formula), (pen.assign(x=np.arange(len(pen)) % 3), formula.replace("1 +", "x +", 1))):
        model = MixedModel.from_formula(f, data)
        fit, searched = model.fit(), model.fit(optimizer="bobyqa")
        assert fit.estimates.opt.optimizer != "moments"
        assert fit.llf == pytest.approx(searched.llf, abs=1e-8)


@pytest.mark.parametrize(
    "formula,q",
    [
        ("y ~ t + (t|g)", 1),
        ("y ~ t * trt + (t|g)", 2),
        ("y ~ trt + (1|g)", 2),
        ("y ~ t + trt + (t|g)", None),  # trt moves the intercept only: not (1, t) times covariates
        ("y ~ t + (1|g)", None),  # t varies within the levels, outside (1)'s span
    ],
)
def test_level_span_finds_the_fixed_effects_as_the_terms_columns_times_level_covariates(formula, q):
    """X_l = Z_l A_l in every level, the A_l spanning q dimensions with p q fixed effects: the
    fixed effects then take q of the levels' degrees of freedom (the divisor ℓ − q)."""
    from midas_glmm.engine.lmm import level_span

    d = build_design(formula, _balanced())
    assert level_span(CrossProducts.from_rows(d.terms, d.X, d.y), 0) == q


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.floats(-1e150, 1e150, allow_nan=False) for _ in range(4)]),
        min_size=1,
        max_size=8,
    )
)
@example([(6.0e-145, 0.0, 0.0, 6.0e-145)])  # Hypothesis' find: a determinant of 1e-577 underflowed
@example([(3.0e150, 1.0e150, -2.0e150, 5.0e149)])  # ... and one of 1e600 would overflow
def test_two_by_two_blocks_in_closed_form_equal_lapack(rows):
    """The moment start's 2 × 2 eigenvalues and inverses in closed form against LAPACK's, on
    Gram blocks of random pairs of rows, rank one and zero blocks among them, at any scale."""
    from midas_glmm.engine.lmm import pair_eigenvalues, pair_inverse

    Z = np.array(rows, dtype=float).reshape(-1, 2, 2)  # each level: two rows of two columns
    G = np.einsum("lia,lib->lab", Z, Z)
    G = np.concatenate([G, G[:1] * 0.0, np.ones((1, 2, 2))])  # a zero block, a rank-one block
    ev = np.linalg.eigvalsh(G)
    scale = np.maximum(np.abs(ev).max(axis=1), 1e-300)
    assert np.all(np.abs(pair_eigenvalues(G) - ev) <= 1e-12 * scale[:, None])
    cond = ev[:, 0] > 1e-6 * scale
    if cond.any():
        inv = np.linalg.inv(G[cond])
        assert pair_inverse(G[cond]) == pytest.approx(inv, rel=1e-8, abs=1e-8 * np.abs(inv).max())
