"""The fused row pass of a canonical GLMM (rowkernels.working_system) against the step by step
one (the log-likelihood, W and z row by row, then the weighted cross-products), and against numpy."""

import numpy as np
import pandas as pd
import pytest

from midas_glmm import MixedModel
from midas_glmm.design.blocks import CrossProducts
from midas_glmm.engine.pirls import GLMMProblem
from midas_glmm.linalg import rowkernels


def rows(seed=3, n=700):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    h = rng.integers(0, 9, n)
    x = rng.normal(size=n)
    eta = 0.2 + 0.8 * x + rng.normal(0, 0.7, 25)[g] + rng.normal(0, 0.4, 9)[h]
    trials = rng.integers(1, 6, n)
    return pd.DataFrame(
        {
            "k": rng.binomial(trials, 1 / (1 + np.exp(-eta))),
            "n": trials,
            "c": rng.poisson(np.exp(eta)),
            "x": x,
            "x2": rng.uniform(size=n),
            "o": rng.normal(0, 0.1, n),
            "g": [f"g{i}" for i in g],
            "h": [f"h{i}" for i in h],
            "f": rng.choice(["a", "b", "c"], n),
        }
    )


def stepwise(block, plan, beta_raw, lams, us, joint, shift, scale):
    """The pass in separate steps: η, then Σ log f, W and z (rowkernels.canonical_working), then
    the blocks by the sparse cross-products of the Dask path (CrossProducts.from_rows) put in the
    plan's layout — an implementation of its own."""
    eta = block.eta(beta_raw, lams, us)
    W, z = np.empty_like(eta), np.empty_like(eta)
    ll = rowkernels.canonical_working(block._link, eta, *block._rows, W, z)
    if joint:
        cp = CrossProducts.from_rows(block.terms, block.X, z, W, shift, scale)
    else:
        cp = CrossProducts.from_rows(block.terms, block.X[:, :0], z - block.X @ beta_raw, W)
    return ll, plan.load(cp), eta, W, z


FORMULAS = {
    "scalar": "+ (1|g)",  # one column: the kernel's scalar path
    "slope": "+ (x|g)",  # two columns, three products: every product
    "crossed": "+ (1|g) + (1|h)",  # two scalar terms: every product
    "wide": "+ (x|g) + (1|h)",  # six products per row, every column nonzero: every product
    "indicators": "+ (0 + f|g) + (1|h)",  # ten products, a row's two nonzero columns: the path over them
}


@pytest.mark.parametrize("response,family", [("cbind(k, n - k)", "binomial"), ("c", "poisson")])
@pytest.mark.parametrize("terms", sorted(FORMULAS))
@pytest.mark.parametrize("joint", [True, False])
def test_fused_pass_equals_the_steps(response, family, terms, joint):
    df = rows()
    m = MixedModel.from_formula(f"{response} ~ x + x2 {FORMULAS[terms]}", df, family=family, offset="o")
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=False)
    block = prob.rows.block
    assert block.compiled
    assert block.rowmap.every_pair == (terms != "indicators")
    rng = np.random.default_rng(1)
    theta = prob.tmap.start * 0.8
    lams = prob.tmap.lams(theta)
    us = [rng.normal(0, 0.5, t.q) for t in m.design.terms]
    beta_raw = np.array([0.1, 0.7, -0.3])
    ll, cp = block.evaluate(beta_raw, lams, us, 1.0, joint, prob.shift, prob.scale)
    ll0, cp0, eta, W, z = stepwise(block, prob.plan, beta_raw, lams, us, joint, prob.shift, prob.scale)
    assert ll == pytest.approx(ll0, rel=1e-13)
    for part in ("A", "XZ", "XX"):
        a, b = getattr(cp, part), getattr(cp0, part)
        assert a.shape == b.shape
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    # [X_s c]'W[X_s c] by numpy: c = z (joint) or z − Xβ
    Xs = (m.design.X - prob.shift) / prob.scale
    col = z if joint else z - m.design.X @ beta_raw
    M = np.column_stack([Xs, col]) if joint else col[:, None]
    assert np.allclose(cp.XX, (M * W[:, None]).T @ M, rtol=1e-11)


def test_the_kept_pass_arguments_follow_the_standardisation_and_the_system():
    """The compiled pass keeps X's shift and 1/scale, and its scratch per width of [X_s c], from
    one pass to the next: passes alternating two standardisations (new arrays of other values)
    and the systems in u and in (β, u) give each the blocks of its own, as on a fresh block."""
    df = rows(seed=5, n=400)
    m = MixedModel.from_formula("cbind(k, n - k) ~ x + x2 + (x|g)", df, family="binomial")
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=False)
    block = prob.rows.block
    lams = prob.tmap.lams(prob.tmap.start * 0.7)
    us = [np.random.default_rng(2).normal(0, 0.4, m.design.terms[0].q)]
    beta = np.array([0.2, 0.5, -0.4])
    plain = (np.zeros(3), np.ones(3))
    for shift, scale in [(prob.shift, prob.scale), plain, (prob.shift.copy(), prob.scale.copy()), plain]:
        for joint in (True, False, True):
            ll, cp = block.evaluate(beta, lams, us, 1.0, joint, shift, scale)
            ll0, cp0, *_ = stepwise(block, prob.plan, beta, lams, us, joint, shift, scale)
            assert ll == pytest.approx(ll0, rel=1e-13)
            assert cp.XZ.shape[1] == (4 if joint else 1)
            for part in ("A", "XZ", "XX"):
                a, b = getattr(cp, part), getattr(cp0, part)
                assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max()), (part, joint)


def test_fused_pass_in_the_tails_and_outside_the_domain():
    """μ held inside (0, 1) far in the logit's tails, as the step by step pass; an overflowing
    log-link η is a step to reject (−∞), not a crash."""
    df = rows(seed=4, n=300)
    m = MixedModel.from_formula("cbind(k, n - k) ~ x + (1|g)", df, family="binomial")
    prob = GLMMProblem(m.design, m.family, dense=False)
    block = prob.rows.block
    lams = prob.tmap.lams(np.array([1.0]))
    us = [np.linspace(-45, 45, m.design.terms[0].q)]  # η beyond ±36: μ at its clip
    beta = np.array([0.0, 2.0])
    ll, cp = block.evaluate(beta, lams, us, 1.0, True, prob.shift, prob.scale)
    ll0, cp0, *_ = stepwise(block, prob.plan, beta, lams, us, True, prob.shift, prob.scale)
    assert np.isfinite(ll) and ll == pytest.approx(ll0, rel=1e-12)
    assert np.allclose(cp.A, cp0.A, rtol=1e-12)
    mp = MixedModel.from_formula("c ~ x + (1|g)", df, family="poisson")
    pp = GLMMProblem(mp.design, mp.family, dense=False)
    ll, cp = pp.rows.block.evaluate(np.array([800.0, 0.0]), lams, [np.zeros(25)], 1.0, True, pp.shift, pp.scale)
    assert ll == -np.inf and cp is None


def _ulps(got, ref):
    """|got − ref| in units of ref's last place (where ref is a normal double)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(got - ref) / (np.abs(ref) * np.finfo(float).eps)


def test_link_terms_equal_numpy_to_a_few_units_in_the_last_place():
    """The vectorised e^(−|η|), log(1 + e^(−|η|)) and e^η of the canonical pass against numpy's
    libm, over every range of η a pass meets (and beyond), with its limits: 0 where numpy's is
    subnormal, ∞ where numpy's overflows, NaN kept."""
    rng = np.random.default_rng(11)
    edges = [0.0, -0.0, 1e-300, -1e-20, 0.3465735902799726, 36.0, -706.9, 708.9, 709.7, 709.77]
    eta = np.concatenate([rng.normal(0, 3, 20_000), rng.uniform(-40, 40, 20_000), rng.uniform(-720, 720, 5_000), edges])
    t, lt = np.empty_like(eta), np.empty_like(eta)
    rowkernels.logit_terms(eta, t, lt)
    ref_t = np.exp(-np.abs(eta))
    normal = ref_t > 1e-300
    assert _ulps(t, ref_t)[normal].max() <= 1.5
    assert _ulps(lt, np.log1p(ref_t))[normal & (ref_t > 0)].max() <= 3.0
    assert np.all(t[~normal] <= 1e-300) and np.all(lt[~normal] <= 1e-300)
    e, scratch = np.empty_like(eta), np.empty_like(eta)
    rowkernels.exp_terms(eta, e, scratch)
    with np.errstate(over="ignore"):
        ref_e = np.exp(eta)
    inside = (ref_e > 1e-300) & np.isfinite(ref_e)
    assert _ulps(e, ref_e)[inside].max() <= 1.5
    assert np.array_equal(np.isinf(e), np.isinf(ref_e)) and np.all(e[ref_e <= 1e-300] <= 1e-300)
    special = np.array([np.nan, np.inf, -np.inf, 707.0, -707.0, 709.78, 800.0])
    t, lt, e = (np.empty_like(special) for _ in range(3))
    rowkernels.logit_terms(special, t, lt)
    rowkernels.exp_terms(special, e, np.empty_like(special))
    assert np.isnan(t[0]) and np.isnan(lt[0]) and np.isnan(e[0])
    assert np.all(t[1:] == 0.0) and np.all(lt[1:] == 0.0)
    assert e[1] == np.inf and e[2] == 0.0 and e[4] == 0.0 and e[5] == e[6] == np.inf
    assert e[3] == pytest.approx(np.exp(707.0), rel=4e-16)


@pytest.mark.parametrize("family,response", [("gamma", "g2"), ("nbinom2", "c"), ("binomial", "cbind(k, n - k)")])
@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("dense", [False, True])
def test_given_weights_pass_equals_the_sparse_cross_products(family, response, joint, dense):
    """Given W and z: the blocks by the compiled pass (GIVEN mode), in the sparse plan's layout or
    the all-dense one of a small model — equal to the sparse cross-products of the Dask path."""
    df = rows().assign(g2=lambda d: np.exp(0.3 * d.x) * np.random.default_rng(2).gamma(2.0, 0.5, len(d)))
    m = MixedModel.from_formula(f"{response} ~ x + x2 + (x|g) + (1|h)", df, family=family)
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=dense)
    block = prob.rows.block
    assert (prob.plan.Ns == 0) == dense and block.compiled == (family == "binomial")
    rng = np.random.default_rng(3)
    W, z = rng.uniform(0.2, 3.0, len(df)), rng.normal(size=len(df))
    beta_raw = np.array([0.2, -0.4, 0.1])
    got = block.system(W, z, beta_raw, joint, prob.shift, prob.scale)
    if joint:
        cp = CrossProducts.from_rows(block.terms, block.X, z, W, prob.shift, prob.scale)
    else:
        cp = CrossProducts.from_rows(block.terms, block.X[:, :0], z - block.X @ beta_raw, W)
    want = prob.plan.load(cp)
    for part in ("A", "XZ", "XX"):
        a, b = getattr(got, part), getattr(want, part)
        assert a.shape == b.shape
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


FIT_CASES = {
    "binomial": ("cbind(k, n - k) ~ x + x2 + (1|g) + (1|h)", {}),
    "poisson": ("c ~ x + (x|g)", {"offset": "o"}),  # 50 random effects: dense only when asked
    "gamma": ("g2 ~ x + (1|g) + (1|h)", {}),
    "nbinom2": ("c ~ x + x2 + (x|h)", {}),
}


def test_one_random_intercept_takes_the_diagonal_plan():
    """A small GLMM takes the all-dense plan, except one random intercept: its diagonal factor."""
    df = rows()
    one = MixedModel.from_formula("cbind(k, n - k) ~ x + (1|h)", df, family="binomial")
    two = MixedModel.from_formula("cbind(k, n - k) ~ x + (x|h)", df, family="binomial")
    assert GLMMProblem(one.design, one.family).plan.diagonal
    assert GLMMProblem(two.design, two.family).plan.Ns == 0


@pytest.mark.parametrize("family", sorted(FIT_CASES))
def test_dense_plan_fits_as_the_sparse_one(family, monkeypatch):
    """A fit on the all-dense plan of a small model (one LAPACK factor of Λ'Z'WZΛ + I, and its
    dense gradient) reaches the sparse plan's optimum: deviance, θ, β and standard errors."""
    import midas_glmm.engine.pirls as pirls

    df = rows(seed=5, n=600)
    rng = np.random.default_rng(4)
    level = dict(zip(sorted(set(df.g)), rng.normal(0, 0.5, 25)))
    df["g2"] = np.exp(0.3 * df.x + df.g.map(level)) * rng.gamma(3.0, 0.5, len(df))
    formula, kw = FIT_CASES[family]
    real, seen = pirls.GLMMProblem.__init__, []

    def spy(self, *a, **k):
        real(self, *a, **k)
        seen.append(self.plan.Ns == 0)

    monkeypatch.setattr(pirls.GLMMProblem, "__init__", spy)
    fits = {}
    for dense in (True, False):
        monkeypatch.setattr(pirls, "small_model", lambda terms, dense=dense: dense)
        seen.clear()
        fits[dense] = MixedModel.from_formula(formula, df, family=family, **kw).fit()
        assert seen and all(s == dense for s in seen)
    a, b = fits[True], fits[False]
    assert a.llf == pytest.approx(b.llf, rel=1e-9, abs=1e-7)
    assert np.allclose(a.theta, b.theta, rtol=1e-4, atol=1e-5)
    assert np.allclose(a.params, b.params, rtol=1e-5, atol=1e-6)
    assert np.allclose(a.bse, b.bse, rtol=1e-4)


@pytest.mark.parametrize("response,family", [("cbind(k, n - k)", "binomial"), ("c", "poisson")])
def test_gradient_sums_reuse_the_last_pass_only_at_its_point(response, family):
    """The Laplace gradient's row sums read η and e^(∓η) from the last PIRLS pass when it was at
    the same (β, Λu), and compute them otherwise: after a pass at another point, and after a pass
    at this one, the sums equal a fresh block's."""
    from midas_glmm.engine.factor import Factor

    df = rows(seed=8)
    m = MixedModel.from_formula(f"{response} ~ x + x2 + (x|g) + (1|h)", df, family=family, offset="o")
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=False)
    rng = np.random.default_rng(2)
    theta = prob.tmap.start * 0.7
    lams = prob.tmap.lams(theta)
    us = [rng.normal(0, 0.4, t.q) for t in m.design.terms]
    beta_raw = np.array([0.2, 0.5, -0.1])
    _, cp = prob.rows.block.evaluate(beta_raw, lams, us, 1.0, False, prob.shift, prob.scale)
    L = Factor(prob.plan, cp, lams)
    Z, Zt = L.selected_inverse()
    S_data = Z if not prob.plan.qt else np.concatenate([Z, Zt[prob.plan.tail_entries()]])

    def sums(block, beta):
        return block.laplace_gradient_sums(beta, lams, us, L, S_data)[:4]

    fresh = GLMMProblem(m.design, m.family, standardize_X=True, dense=False).rows.block
    for beta in (beta_raw, beta_raw + [0.05, -0.02, 0.01]):
        fresh._last_pass = None
        for got, want in zip(sums(prob.rows.block, beta), sums(fresh, beta)):
            assert np.allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    other = sums(prob.rows.block, beta_raw + [0.05, -0.02, 0.01])
    assert not np.allclose(other[2], sums(prob.rows.block, beta_raw)[2])
    # a block outside LocalRows (a Dask partition's) keeps no row-sized arrays after its passes
    assert prob.rows.block._last_pass is not None
    fresh.keep_last_pass, fresh._last_pass = False, None
    fresh.evaluate(beta_raw, lams, us, 1.0, False, prob.shift, prob.scale)
    assert fresh._last_pass is None


@pytest.mark.parametrize("response,family", [("cbind(k, n - k)", "binomial"), ("c", "poisson")])
def test_fits_on_the_link_kernels_equal_fits_on_numpys_exp_and_log(response, family, monkeypatch):
    """Above LINK_KERNEL_ROWS rows the passes take the vectorised link kernels, below numpy's
    exp and log: the same fit either way."""
    import midas_glmm.engine.glmmrows as glmmrows

    m = MixedModel.from_formula(f"{response} ~ x + (1|g) + (1|h)", rows(seed=9, n=2000), family=family)
    monkeypatch.setattr(glmmrows, "LINK_KERNEL_ROWS", 0)
    kernels = m.fit()
    monkeypatch.setattr(glmmrows, "LINK_KERNEL_ROWS", 10**9)
    plain = m.fit()
    assert kernels.llf == pytest.approx(plain.llf, abs=1e-8)
    assert np.allclose(kernels.params, plain.params, atol=1e-6 * plain.bse.min())
    assert np.allclose(kernels.bse, plain.bse, rtol=1e-6)


@pytest.mark.parametrize("terms", ["wide", "indicators"])
def test_every_product_and_the_nonzero_columns_give_the_same_sums(terms):
    """The pass's two layouts for many products (RowMap.every_pair: every product of every row,
    or those of a row's nonzero columns) sum the same numbers in the same order: equal to the bit,
    on rows whose columns are all nonzero and on rows of indicators."""
    m = MixedModel.from_formula(f"c ~ x + x2 {FORMULAS[terms]}", rows(), family="poisson")
    prob = GLMMProblem(m.design, m.family, standardize_X=True, dense=False)
    block = prob.rows.block
    lams = prob.tmap.lams(prob.tmap.start * 0.8)
    us = [np.random.default_rng(2).normal(0, 0.5, t.q) for t in m.design.terms]
    beta_raw = np.array([0.1, 0.7, -0.3])
    out = []
    for every in (True, False):
        block.rowmap.every_pair = every
        out.append(block.evaluate(beta_raw, lams, us, 1.0, True, prob.shift, prob.scale))
    (ll1, b1), (ll2, b2) = out
    assert ll1 == ll2
    for part in ("A", "XZ", "XX"):
        assert np.array_equal(getattr(b1, part), getattr(b2, part))


def _node_sums_numpy(block, beta_raw, lam, u, s, nodes):
    """Σ log f per group and node as the canonical pass defines it (μ held inside (1e-15, 1 − 1e-15),
    e^η at its floor 1e-300, log f then from the held μ), in numpy with libm's exp and log1p."""
    t = block.terms[0]
    y, prior, off, const, a, b = block.canonical_rows
    out = np.empty((len(nodes), t.nlevels))
    for k, tk in enumerate(nodes):
        eta = off + block.X @ beta_raw + lam * t.Zcols[:, 0] * (u + s * tk)[t.codes]
        if block._link == rowkernels.LOGIT:
            e = np.exp(-np.abs(eta))
            mu = np.where(eta >= 0, 1.0, e) / (1.0 + e)
            logmu, log1mu = np.minimum(eta, 0) - np.log1p(e), -np.maximum(eta, 0) - np.log1p(e)
            tail = (mu < 1e-15) | (mu > 1 - 1e-15)
            held = np.clip(mu, 1e-15, 1 - 1e-15)
            logmu, log1mu = np.where(tail, np.log(held), logmu), np.where(tail, np.log1p(-held), log1mu)
            rows_ = const + a * logmu + b * log1mu
        else:
            mu = np.exp(eta)
            low = mu < 1e-300
            rows_ = const + a * np.where(low, np.log(1e-300), eta) - b * np.where(low, 1e-300, mu)
        out[k] = np.bincount(t.codes, weights=rows_, minlength=t.nlevels)
    return out


@pytest.mark.parametrize("response,family", [("cbind(k, n - k)", "binomial"), ("c", "poisson")])
# nodes near the modes; far in the tails (μ held in its range); beyond e^η's floor
@pytest.mark.parametrize("scale, intercept", [(1.0, 0.3), (60.0, 0.3), (60.0, -500.0)])
def test_quadrature_node_sums_equal_numpys(response, family, scale, intercept):
    """Adaptive quadrature's per-group log-likelihood at each node (the compiled pass on the
    vectorised exp / log(1 + t)) against numpy's libm; where no μ is held (nodes near the modes)
    against the family's own rows too (the other families' path)."""
    m = MixedModel.from_formula(f"{response} ~ x + (1|g)", rows(), family=family)
    block = GLMMProblem(m.design, m.family, True).rows.block
    rng = np.random.default_rng(2)
    levels = m.design.terms[0].nlevels
    u, s = rng.normal(size=levels), scale * rng.uniform(0.2, 1.0, levels)
    nodes = np.polynomial.hermite_e.hermegauss(9)[0]
    beta_raw = np.array([intercept, -0.5])
    compiled = block.agq_terms(beta_raw, 0.9, u, s, nodes, 1.0)
    reference = _node_sums_numpy(block, beta_raw, 0.9, u, s, nodes)
    assert np.all(np.isfinite(reference))
    assert np.allclose(compiled, reference, rtol=1e-13, atol=1e-10)
    if scale == 1.0:
        block._link = None  # the family's rows
        assert np.allclose(compiled, block.agq_terms(beta_raw, 0.9, u, s, nodes, 1.0), rtol=1e-12)
