"""PIRLS, Laplace and AGQ on cases with a known answer."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import integrate, special

from midas_glmm import MixedModel, datasets
from midas_glmm.engine.pirls import GLMMProblem
from midas_glmm.errors import FitError
from midas_glmm.families import resolve_family


def poisson_data(seed=2, groups=12, per=6):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.uniform(0, 1, g.size)
    y = rng.poisson(np.exp(0.3 + 0.6 * x + rng.normal(0, 0.5, groups)[g]))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g]})


def problem(formula, df, family):
    m = MixedModel.from_formula(formula, df, family=family)
    return m, GLMMProblem(m.design, m.family)


def test_theta_zero_gives_the_glm():
    """With no random-effect variance, joint PIRLS is IRLS: statsmodels' GLM estimates."""
    cb = datasets.load("cbpp")
    m, prob = problem("cbind(incidence, size - incidence) ~ C(period) + (1|herd)", cb, "binomial")
    st = prob.pirls(np.array([0.0]), np.zeros(4), joint=True)
    d = m.design
    glm = sm.GLM(d.y, d.X, family=sm.families.Binomial(), var_weights=d.weights).fit()
    assert np.allclose(st.beta, glm.params, atol=1e-9)
    # and the Laplace deviance is then exactly −2 × the binomial log-likelihood
    assert prob.laplace(st) == pytest.approx(-2 * st.loglik_cond, abs=1e-9)


def test_modes_solve_the_penalised_score_equations():
    """At û: Λ'Z'(y − μ) − u = 0 for a canonical link (the gradient of the penalised log-likelihood)."""
    df = poisson_data()
    m, prob = problem("y ~ x + (1|g)", df, "poisson")
    theta, beta = np.array([0.7]), np.array([0.2, 0.5])
    st = prob.pirls(theta, beta)
    t = m.design.terms[0]
    mu = np.exp(prob.rows.block.eta(beta, prob.tmap.lams(theta), st.u))
    score = theta[0] * np.bincount(t.codes, weights=df["y"] - mu) - st.u[0]
    assert np.max(np.abs(score)) < 1e-8


def test_laplace_and_agq_against_numerical_integration():
    """For one scalar term the likelihood is a product of 1-D integrals: compare with quadrature."""
    df = poisson_data(groups=5, per=4)
    m, prob = problem("y ~ x + (1|g)", df, "poisson")
    theta, beta = np.array([0.8]), np.array([0.25, 0.4])
    d, t = m.design, m.design.terms[0]
    exact = 0.0
    for j in range(t.nlevels):
        rows = t.codes == j
        eta0 = d.X[rows] @ beta

        def integrand(u, eta0=eta0, rows=rows):
            mu = np.exp(eta0 + theta[0] * u)
            yj = d.y[rows]
            return np.exp(np.sum(yj * np.log(mu) - mu - special.gammaln(yj + 1)) - u * u / 2) / np.sqrt(2 * np.pi)

        exact += np.log(integrate.quad(integrand, -12, 12, epsabs=0, epsrel=1e-13, limit=200)[0])
    st = prob.pirls(theta, beta)
    agq25 = prob.agq(st, theta, 1.0, 25)
    assert agq25 == pytest.approx(-2 * exact, abs=1e-8)
    # one node is the Laplace approximation, close but not equal
    assert prob.agq(st, theta, 1.0, 1) == pytest.approx(prob.laplace(st), abs=1e-10)
    assert abs(prob.laplace(st) + 2 * exact) > 1e-6


def test_step_halving_recovers_from_a_wild_start():
    df = poisson_data()
    m, prob = problem("y ~ x + (1|g)", df, "poisson")
    prob._u = [np.full(m.design.terms[0].q, 40.0)]  # a hopeless warm start: exp(40) means
    st = prob.pirls(np.array([1.0]), np.array([0.0, 0.0]))
    prob2 = GLMMProblem(m.design, m.family)
    st2 = prob2.pirls(np.array([1.0]), np.array([0.0, 0.0]))
    assert st.converged and np.allclose(st.u[0], st2.u[0], atol=1e-8)


def test_fast_is_lme4_nagq0_and_not_worse_than_it_should_be():
    cb = datasets.load("cbpp")
    m = MixedModel.from_formula("cbind(incidence, size - incidence) ~ C(period) + (1|herd)", cb, family="binomial")
    fast, full = m.fit(fast=True), m.fit()
    assert fast.method == "nAGQ=0" and full.method == "Laplace"
    assert full.llf >= fast.llf - 1e-8  # the joint optimum cannot be below the profiled one
    assert np.all(np.abs(fast.params - full.params) < 0.5 * full.bse)  # close, but a different estimator
    assert not np.allclose(fast.params, full.params, atol=1e-4)


def test_family_forms_are_equivalent():
    cb = datasets.load("cbpp")
    f = "cbind(incidence, size - incidence) ~ C(period) + (1|herd)"
    a = MixedModel.from_formula(f, cb, family="binomial").fit()
    b = MixedModel.from_formula(f, cb, family=sm.families.Binomial()).fit()
    prop = cb.assign(p=cb["incidence"] / cb["size"])
    c = MixedModel.from_formula("p ~ C(period) + (1|herd)", prop, family="binomial", weights="size").fit()
    for r in (b, c):
        assert r.llf == pytest.approx(a.llf, abs=1e-7)
        assert np.allclose(r.params, a.params, atol=1e-6)


def test_offset_argument_equals_offset_in_formula():
    df = poisson_data().assign(t=lambda d: 1 + d.index % 3)
    a = MixedModel.from_formula("y ~ x + offset(np.log(t)) + (1|g)", df, family="poisson").fit()
    b = MixedModel.from_formula("y ~ x + (1|g)", df, family="poisson", offset=np.log(df["t"])).fit()
    assert a.llf == pytest.approx(b.llf, abs=1e-8)
    assert np.allclose(a.params, b.params, atol=1e-7)
    new = pd.DataFrame({"x": [0.5], "g": ["g01"], "t": [2.0]})
    assert a.predict(new, kind="link")[0] == pytest.approx(
        a.params.iloc[0] + 0.5 * a.params.iloc[1] + np.log(2) + a.ranef()["g"].loc["g01"].iloc[0]
    )


def test_agq_needs_a_single_scalar_term():
    df = poisson_data()
    m = MixedModel.from_formula("y ~ x + (x|g)", df, family="poisson")
    with pytest.raises(FitError, match="single,? scalar"):
        m.fit(nAGQ=5)


def test_gamma_dispersion_is_a_likelihood_parameter():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(15), 10)
    mu = np.exp(1 + rng.normal(0, 0.4, 15)[g])
    y = rng.gamma(shape=5.0, scale=mu / 5.0)
    df = pd.DataFrame({"y": y, "g": g})
    fam = sm.families.Gamma(sm.families.links.Log())
    res = MixedModel.from_formula("y ~ 1 + (1|g)", df, family=fam).fit()
    assert 0.1 < res.dispersion < 0.35  # true φ = 1/shape = 0.2
    prob = GLMMProblem(res.design, resolve_family(fam))
    # the fitted φ maximises the Laplace likelihood given θ and β
    vals = [prob.objective(res.theta, res.params.to_numpy(), res.dispersion * f) for f in (0.97, 1.0, 1.03)]
    assert vals[1] < vals[0] and vals[1] < vals[2]


def test_gamma_inverse_link_steps_outside_the_domain_are_rejected_not_fatal():
    """With the inverse link, steps to μ ≤ 0 occur; PIRLS rejects them and the fit still reaches
    the optimum Nelder–Mead finds (BOBYQA is restarted when the gradient check fails)."""
    import warnings

    rng = np.random.default_rng(5)
    n = 600
    df = pd.DataFrame({"g": rng.integers(0, 20, n).astype(str), "x": rng.normal(size=n)})
    df["y"] = np.exp(0.5 + 0.2 * df.x + rng.normal(0, 0.3, 20)[df.g.astype(int)]) * rng.gamma(5, 1 / 5, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MixedModel.from_formula("y ~ x + (1|g)", df, family="gamma")
        default, nm = m.fit(), m.fit(optimizer="nelder-mead")
    assert m.family.link_name == "inverse"
    assert default.llf >= nm.llf - 1e-4
    assert default.converged


@pytest.mark.parametrize("name", ["binomial", "poisson"])
def test_canonical_link_shortcuts_equal_statsmodels(name):
    """μ, dμ/dη and the working weights from μ alone (logit, log) equal statsmodels' link."""

    fam = resolve_family(name)
    smfam = {"binomial": sm.families.Binomial(), "poisson": sm.families.Poisson()}[name]
    eta = np.linspace(-8, 8, 41)
    mu = fam.linkinv(eta)
    assert np.allclose(mu, smfam.link.inverse(eta), rtol=1e-13, atol=1e-300)
    assert np.allclose(fam.mu_eta(eta, mu), smfam.link.inverse_deriv(eta), rtol=1e-12)
    prior = np.full_like(eta, 2.0)
    general = prior * smfam.link.inverse_deriv(eta) ** 2 / smfam.variance(mu)
    assert np.allclose(fam.weights(np.zeros_like(eta), mu, eta, prior), general, rtol=1e-12)


def test_gaussian_family_with_a_log_link_equals_glmmtmb():
    """glmer fits a Gaussian GLMM with a non-identity link; its Laplace is glmmTMB's (observed
    information), which midas_glmm follows (tests/reference/links/make_links.R)."""
    import json
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "reference" / "links"
    ref = json.loads((here / "gaussian_log_tmb.json").read_text())
    df = pd.read_csv(here / ref["data"])
    fam = sm.families.Gaussian(sm.families.links.Log())
    res = MixedModel.from_formula(ref["formula_py"], df, family=fam).fit()
    se = np.array(ref["fixef_se"])
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-3)
    assert np.all(np.abs(res.params.to_numpy() - ref["fixef"]) <= 5e-3 * se)
    assert res.bse.to_numpy() == pytest.approx(se, rel=5e-3)
    assert res.sigma == pytest.approx(ref["sigma"], rel=5e-3)
    assert np.sqrt(res.varcorr()["vcov"].iloc[0]) == pytest.approx(ref["sd_g"], rel=5e-3)


def test_perfect_separation_is_reported_not_converged():
    rng = np.random.default_rng(0)
    n = 300
    x, g = rng.normal(size=n), rng.integers(0, 15, n)
    df = pd.DataFrame({"y": (x > 0).astype(float), "x": x, "g": g})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial").fit()
    assert not res.converged
    assert any("numerically 0 or 1" in str(w.message) for w in caught)
    # numpy's overflow warnings of rejected PIRLS steps do not reach the user
    assert not any(issubclass(w.category, RuntimeWarning) for w in caught)


def test_zero_trial_rows_contribute_nothing():
    """cbind(0, 0) rows (and zero prior weights) carry no information: the fit equals the fit
    without them, as in lme4."""
    rng = np.random.default_rng(5)
    n = 400
    g, x = rng.integers(0, 20, n), rng.normal(size=n)
    s = rng.binomial(6, 1 / (1 + np.exp(-(0.3 * x + rng.normal(0, 0.7, 20)[g]))))
    df = pd.DataFrame({"s": s, "f": 6 - s, "x": x, "g": g})
    empty = df.sample(30, random_state=1).index
    with_empty = df.copy()
    with_empty.loc[empty, ["s", "f"]] = 0
    a = MixedModel.from_formula("cbind(s, f) ~ x + (1|g)", with_empty, family="binomial").fit()
    b = MixedModel.from_formula("cbind(s, f) ~ x + (1|g)", df.drop(empty), family="binomial").fit()
    assert a.llf == pytest.approx(b.llf, abs=1e-6)
    assert a.params.to_numpy() == pytest.approx(b.params.to_numpy(), abs=1e-5)
    assert a.theta == pytest.approx(b.theta, abs=1e-5)


@pytest.mark.parametrize("how", ["proportion", "weights", "cbind"])
def test_non_integer_successes_warn_and_fit_one_objective(how):
    """Every group identical, so θ = 0 and the GLMM is the GLM: β equals statsmodels' GLM on the
    same real-valued counts (the likelihood used to round y·n while PIRLS used y: β −1.80 vs −0.48)."""
    from midas_glmm import NonIntegerSuccessesWarning

    rng = np.random.default_rng(2)
    G, m = 10, 30
    x = np.tile(rng.normal(size=m), G)
    p = 1 / (1 + np.exp(-(-0.5 + 0.8 * x)))
    trials = np.tile(rng.integers(2, 9, m), G).astype(float)
    succ = np.round(p * trials * 1.0 + 0.37, 2).clip(0, trials)  # not whole numbers
    df = pd.DataFrame({"x": x, "g": np.repeat(np.arange(G), m), "s": succ, "f": trials - succ, "n": trials})
    df["prop"] = df["s"] / df["n"]
    if how == "proportion":
        formula, kw, var_w = "prop ~ x + (1|g)", {}, np.ones(len(df))
    elif how == "weights":
        formula, kw, var_w = "prop ~ x + (1|g)", {"weights": "n"}, trials
    else:
        formula, kw, var_w = "cbind(s, f) ~ x + (1|g)", {}, trials
    with pytest.warns(NonIntegerSuccessesWarning, match="non-integer #successes"):
        model = MixedModel.from_formula(formula, df, family="binomial", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit()
    glm = sm.GLM(df["prop"], sm.add_constant(df["x"]), family=sm.families.Binomial(), var_weights=var_w).fit()
    assert res.theta[0] == pytest.approx(0.0, abs=1e-3)
    assert res.params.to_numpy() == pytest.approx(glm.params.to_numpy(), abs=2e-4)


def test_probit_with_a_quasi_separated_covariate_fits():
    """A non-canonical link with a covariate that all but separates the outcomes: a fit (or a
    library warning), never an internal AttributeError from a failed PIRLS start."""
    rng = np.random.default_rng(0)
    n = 300
    x, g = rng.normal(size=n), rng.integers(0, 15, n)
    y = (rng.uniform(size=n) < 0.5).astype(float)
    y[x > 1.5] = 1.0
    df = pd.DataFrame({"y": y, "x": np.where(x > 1.5, 10 * x, x), "g": g})
    fam = sm.families.Binomial(sm.families.links.Probit())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ x + (1|g)", df, family=fam).fit()
    assert np.all(np.isfinite(res.params)) and np.all(np.isfinite(res.bse))


def _fit_watching_the_bound(m):
    """(the default fit with the straight search from θ₀, the derivative-free one, what each bound
    check of the first saw: None or the way down from a saddle on θ's bound). θ₀, not the working
    moments: from the moments (closer) these searches do not run onto the bound, which the tests
    below need to see handled; the default fit (from the moments) must reach the same optimum."""
    import midas_glmm.engine.pirls as pirls_module

    seen = []
    real, moments = pirls_module._descent_from_bound, pirls_module._working_moments

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pirls_module._descent_from_bound = spy
        pirls_module._working_moments = lambda *a: None
        try:
            res = m.fit()
        finally:
            pirls_module._descent_from_bound, pirls_module._working_moments = real, moments
        slow = m.fit(optimizer="bobyqa")
        default = m.fit()
    assert default.llf >= slow.llf - 1e-7
    return res, slow, seen


def test_a_theta_run_onto_its_bound_is_searched_again():
    """Stage 2 from θ₀ on the analytic gradient can run a scalar θ onto 0, where the deviance's
    gradient vanishes by symmetry though it falls away from 0: the fit notices (a θ at 0 with
    negative curvature) and searches again (from a step inside, then if need be the long way:
    stage 1 then stage 2), reaching the derivative-free optimum."""
    rng = np.random.default_rng(11)
    n, a, b = 6000, 240, 70
    d = pd.DataFrame({"s": rng.integers(0, a, n), "i": rng.integers(0, b, n), "x": rng.normal(size=n)})
    rng.normal(size=n)  # draws kept from the data where this was first seen (test_iterative.py)
    u0, v = rng.normal(0, 0.9, a), rng.normal(0, 0.6, b)
    eta = 0.4 + 0.5 * d.x + u0[d.s] + v[d.i]
    rng.normal(0, 1.0, n), rng.uniform(0.5, 2.0, n), rng.normal(0, 0.3, n)
    d["yb"] = (rng.random(n) < 1 / (1 + np.exp(-(eta - 0.4)))).astype(float)
    r5 = np.random.default_rng(5)
    d["n"] = r5.integers(1, 6, n)
    d["k"] = r5.binomial(d["n"], 1 / (1 + np.exp(-(0.3 * d.x + 0.5 * (d.yb - 0.5)))))
    m = MixedModel.from_formula("cbind(k, n - k) ~ x + (1|s) + (1|i)", d, family="binomial")
    res, slow, seen = _fit_watching_the_bound(m)
    assert seen[0] is not None  # the straight search did stop on the bound
    assert seen[-1] is None  # and the last search at a minimum
    assert np.all(res.theta > 0.05)
    assert res.llf == pytest.approx(slow.llf, abs=1e-5)
    assert res.llf >= slow.llf - 1e-7


@pytest.mark.parametrize(
    "theta,lower,g,H,falls",
    [
        # a scalar θ at 0, its gradient 0 by symmetry: the deviance's curvature decides
        ([0.0], [0.0], [0.0], [[-2.0]], True),
        ([0.0], [0.0], [0.0], [[2.0]], False),
        # pushed onto the bound by the data (a clearly positive gradient): a minimum, left alone
        ([0.0], [0.0], [3.0], [[-2.0]], False),
        # (x|g) as (λ11, λ21, λ22) after a scalar θ: the slope's λ22 at 0 falls away
        ([0.8, 0.3, 0.0, 0.5], [0, -np.inf, 0, 0], [1e-6, -1e-6, 0.0, 2e-6], np.diag([5.0, 4.0, -1.0, 3.0]), True),
        # λ's first column (λ11, λ21) at 0 together: even in the pair, each curvature positive
        # but the pair's block indefinite: a descent direction the diagonal alone misses
        ([0.0, 0.0, 0.7], [0, -np.inf, 0], [0.0, 0.0, 1e-7], [[1.0, 3.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 2.0]], True),
        (
            [0.0, 0.0, 0.7],
            [0, -np.inf, 0],
            [0.0, 0.0, 1e-7],
            [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 2.0]],
            False,
        ),
        # λ11 at 0 beside a non-zero λ21: no symmetry holds its gradient at 0; a positive one is a
        # Karush-Kuhn-Tucker point whatever the curvature
        (
            [0.0, 0.4, 0.7],
            [0, -np.inf, 0],
            [2.5, 0.0, 0.0],
            [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]],
            False,
        ),
        # only an unbounded θ at 0 (a correlation's λ21): nothing on a bound
        ([0.9, 0.0, 0.7], [0, -np.inf, 0], [0.0, 0.0, 0.0], np.diag([1.0, -1.0, 2.0]), False),
    ],
)
def test_descent_from_bound_reads_the_block_of_the_thetas_at_zero(theta, lower, g, H, falls):
    from midas_glmm.engine.pirls import _descent_from_bound

    args = (np.array(theta), np.array(lower, dtype=float), np.array(g), np.array(H, dtype=float))
    down = _descent_from_bound(*args)
    assert (down is not None) is falls
    if falls:  # a unit direction that keeps the bounded θ at or above 0 and descends
        bounded = args[1] == 0
        assert np.linalg.norm(down) == pytest.approx(1.0) and np.all(down[bounded] >= 0)
        assert down @ args[3] @ down < 0


def test_a_slope_run_onto_its_bound_is_searched_again_from_inside():
    """(x|g): the straight search can stop with the slope's λ22 at 0, a saddle (the deviance is
    even in it); the fit steps inside along the way down and searches again, ending where the
    derivative-free long way ends (or higher) with the slope's SD off 0."""
    rng = np.random.default_rng(0)
    n, G = 3000, 60
    d = pd.DataFrame({"g": rng.integers(0, G, n), "x": rng.normal(size=n)})
    eta = 0.2 + 0.4 * d.x + rng.normal(0, 0.7, G)[d.g]
    rng.poisson(np.exp(eta))  # draws kept from the data where this was first seen
    d["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    m = MixedModel.from_formula("y ~ x + (x|g)", d, family="binomial")
    res, slow, seen = _fit_watching_the_bound(m)
    assert seen[0] is not None and seen[0][2] > 0.99  # stopped on the slope's bound: the way down is λ22
    assert len(seen) == 2 and seen[1] is None  # the search from inside ended at a minimum
    assert res.theta[2] > 0.05 and not res.singular
    assert res.llf >= slow.llf - 1e-7
    assert np.allclose(res.theta, slow.theta, atol=2e-3)


def test_glm_start_takes_least_squares_for_near_collinear_columns():
    """The GLM start's normal equations square X's condition number: with two columns equal to
    1e-7 it takes lstsq, and the coefficients match a QR solve (the normal equations' would be
    off in their leading digits)."""
    from midas_glmm.engine.glm import _weighted_least_squares

    rng = np.random.default_rng(2)
    x = rng.normal(size=500)
    X = np.column_stack([np.ones(500), x, x + 1e-7 * rng.normal(size=500)])
    z = X @ np.array([0.5, 2.0, -1.0]) + 0.01 * rng.normal(size=500)
    qr = np.linalg.lstsq(X, z, rcond=None)[0]
    assert np.allclose(_weighted_least_squares(X, z), qr, rtol=1e-6, atol=1e-6)
    well = X[:, :2]  # well conditioned: the normal equations, equal to QR
    assert np.allclose(_weighted_least_squares(well, z), np.linalg.lstsq(well, z, rcond=None)[0], rtol=1e-10)
