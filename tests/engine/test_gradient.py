"""The analytic gradients (midas_glmm.engine.gradient) against finite differences: the profiled LMM
criterion on every storage shape of the factor, REML and ML, with and without prior weights, at
interior and boundary θ; the Laplace deviance of canonical binomial and Poisson GLMMs (slopes,
nested, crossed, trials, offsets). And the fits that use them against the derivative-free ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from test_factor import FORMULAS, _data, compiled_plans

from midas_glmm import MixedModel
from midas_glmm.design.design import build_design
from midas_glmm.engine import sparsity
from midas_glmm.engine.gradient import laplace_gradient, profiled_gradient
from midas_glmm.engine.lmm import lmm_criterion, uses_gradient
from midas_glmm.engine.pirls import GLMMProblem


def _richardson(f, x, i, h):
    """∂f/∂x_i by central differences at h and h/2, extrapolated (error O(h⁴))."""

    def central(s):
        e = np.zeros_like(x)
        e[i] = s
        return (f(x + e) - f(x - e)) / (2 * s)

    return (4 * central(h / 2) - central(h)) / 3


def _check(design, theta, REML, dense=False):
    crit, _ = lmm_criterion(design, REML, dense=dense)
    value, grad = profiled_gradient(crit, theta)
    assert value == pytest.approx(crit(theta), rel=1e-12)
    numeric = np.array([_richardson(crit, theta, i, 1e-3 * max(1.0, abs(theta[i]))) for i in range(len(theta))])
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(numeric).max()))


def _theta(crit_tmap, seed):
    rng = np.random.default_rng(seed)
    bounded = np.isfinite(crit_tmap.lower)
    return crit_tmap.start * rng.uniform(0.3, 1.5, len(crit_tmap)) + np.where(bounded, 0.0, rng.normal(0, 0.3))


@pytest.mark.parametrize("dense", [False, True])  # the block-sparse plan / a small model's all-dense one
@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_gradient_equals_finite_differences(name, REML, dense):
    d = build_design(FORMULAS[name], _data())
    crit, _ = lmm_criterion(d, REML)
    _check(d, _theta(crit.tmap, 2), REML, dense)


@pytest.mark.parametrize("name", ["crossed", "crossed_vector_tail", "nested_slopes"])
def test_gradient_with_prior_weights_and_a_forced_sparse_path(name, monkeypatch):
    data = _data(seed=5)
    data["w"] = np.random.default_rng(5).uniform(0.3, 3.0, len(data))
    monkeypatch.setattr(sparsity, "DENSE_TAIL_DENSITY", 2.0)  # no dense tail: all block-sparse
    compiled_plans(monkeypatch)  # by the compiled kernels
    d = build_design(FORMULAS[name], data, weights="w")
    crit, _ = lmm_criterion(d, True, dense=False)
    assert crit.plan.qt == 0
    _check(d, _theta(crit.tmap, 3), True)


def test_gradient_on_the_boundary_is_one_sided_exact():
    """θ with a variance at zero (a singular fit's point): the gradient is the right derivative."""
    d = build_design(FORMULAS["nested_slopes"], _data())
    crit, _ = lmm_criterion(d, False)
    theta = _theta(crit.tmap, 4)
    theta[0] = 0.0
    value, grad = profiled_gradient(crit, theta)
    h = 1e-6
    e = np.zeros_like(theta)
    e[0] = h
    forward = (-3 * value + 4 * crit(theta + e) - crit(theta + 2 * e)) / (2 * h)
    assert grad[0] == pytest.approx(forward, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (x|district) + (1|school) + (0 + x2|region)",
        "y ~ x + (x + x2|district)",
        "y ~ x + (x|school) + (x|region)",
    ],
)
def test_gradient_fits_reach_bobyqas_optimum(formula):
    m = MixedModel.from_formula(formula, _data(seed=7))
    for method in ("REML", "ML"):
        fast, slow = m.fit(method=method), m.fit(method=method, optimizer="bobyqa")
        crit, _ = lmm_criterion(m.design, method == "REML")
        assert uses_gradient(crit, None) and fast.estimates.opt.optimizer == "lbfgsb"
        assert slow.estimates.opt.optimizer.startswith("bobyqa")
        assert fast.llf >= slow.llf - 1e-7  # as good, usually slightly better
        assert np.allclose(fast.params, slow.params, rtol=1e-4, atol=1e-4 * fast.bse.min())


def test_crossed_models_keep_bobyqa_by_default():
    d = build_design(FORMULAS["crossed"], _data())
    crit, _ = lmm_criterion(d, True)
    assert crit.plan.qt > 0 and not uses_gradient(crit, None) and uses_gradient(crit, "lbfgsb")


# ---------------------------------------------------------------- Laplace (GLMM) gradient
def _glmm_data(seed=1, n=700):
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 35, n), rng.integers(0, 10, n)
    x = rng.normal(size=n)
    eta = -0.3 + 0.7 * x + rng.normal(size=35)[g] + 0.5 * rng.normal(size=10)[h] + 0.4 * x * rng.normal(size=35)[g]
    trials = rng.integers(1, 6, n)
    succ = rng.binomial(trials, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame(
        {
            "x": x,
            "g": g,
            "h": h,
            "k": g // 5,
            "yb": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float),
            "yc": rng.poisson(np.exp(0.5 * eta)),
            "yp": succ / trials,
            "n": trials,
        }
    )


GLMM_CASES = [
    ("binomial", "yb ~ x + (x|g) + (1|h)", {}),
    ("binomial", "yp ~ x + (1|k/g)", {"weights": "n"}),
    ("poisson", "yc ~ x + (1|g) + (1|h)", {}),
    ("poisson", "yc ~ x + (x||g) + (1|h)", {"offset": "x"}),
]


@pytest.mark.parametrize("family, formula, kw", GLMM_CASES)
def test_laplace_gradient_equals_finite_differences(family, formula, kw):
    m = MixedModel.from_formula(formula, _glmm_data(), family=family, **kw)
    prob = GLMMProblem(m.design, m.family, True)
    assert prob.has_gradient
    k, p = len(prob.tmap), prob.S.shape[0]
    x = np.concatenate([prob.tmap.start * 0.6 + 0.05, np.linspace(-0.3, 0.4, p)])

    def f(z):
        return prob.objective(z[:k], z[k:], 1.0)

    value, grad = laplace_gradient(prob, x[:k], x[k:])
    assert value == pytest.approx(f(x), rel=1e-10)
    numeric = np.array([_richardson(f, x, i, 1e-3) for i in range(len(x))])
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


@pytest.mark.parametrize("family, formula, kw", GLMM_CASES[:3])
def test_gradient_glmm_fits_equal_the_derivative_free_fit(family, formula, kw):
    """Default fits (L-BFGS-B on the gradient, Hessian from it) against BOBYQA with
    finite-difference Hessians: same optimum and standard errors."""
    m = MixedModel.from_formula(formula, _glmm_data(seed=2), family=family, **kw)
    fast, slow = m.fit(), m.fit(optimizer="bobyqa")
    assert fast.estimates.opt.optimizer == "lbfgsb" and slow.estimates.opt.optimizer.startswith("bobyqa")
    assert fast.llf >= slow.llf - 1e-6
    assert np.allclose(fast.params, slow.params, atol=2e-3 * slow.bse.min())
    assert np.allclose(fast.bse, slow.bse, rtol=2e-3)


def test_families_without_the_gradient_keep_finite_differences():
    d = _glmm_data()
    d["yg"] = np.exp(0.3 * d.x) * np.random.default_rng(0).gamma(2.0, 0.5, len(d))
    m = MixedModel.from_formula("yg ~ x + (1|g)", d, family="gamma")
    assert not GLMMProblem(m.design, m.family, True).has_gradient
    probit = MixedModel.from_formula("yb ~ x + (1|g)", d, family=sm.families.Binomial(sm.families.links.Probit()))
    assert not GLMMProblem(probit.design, probit.family, True).has_gradient


def _count_data():
    d = _glmm_data(seed=3)
    rng = np.random.default_rng(4)
    d["yz"] = np.where(rng.uniform(size=len(d)) < 1 / (1 + np.exp(1 - d.x)), 0, d.yc)
    mu = 1 / (1 + np.exp(-(0.2 + 0.5 * d.x)))
    d["yr"] = np.clip(rng.beta(mu * 8, (1 - mu) * 8), 1e-6, 1 - 1e-6)
    d["yg"] = np.exp(0.3 * d.x) * rng.gamma(2.0, 0.5, len(d))
    return d


OBSERVED_CASES = [  # (family, link, formula, ziformula): the observed-information gradient
    ("nbinom2", None, "yc ~ x + (1|g) + (1|h)", None),
    ("nbinom1", None, "yc ~ x + (x||g)", None),
    ("beta", "probit", "yr ~ x + (1|g)", None),
    ("gamma", "log", "yg ~ x + (1|g)", None),
    ("poisson", None, "yz ~ x + (1|g)", "~ x"),
    ("nbinom1", None, "yz ~ x + (1|g) + (1|h)", "~ 1"),
]


@pytest.mark.parametrize("family, link, formula, zi", OBSERVED_CASES)
def test_observed_information_gradient_equals_finite_differences(family, link, formula, zi):
    """The Laplace gradient of the families whose log-determinant takes the observed
    information, in (θ, β, log φ, γ): w' and the log φ and ζ channels come from differences row
    by row, the rest is the canonical case's formula."""
    from midas_glmm.engine.pirls import _laplace_fun_grad
    from midas_glmm.families import family as make_family

    m = MixedModel.from_formula(formula, _count_data(), family=make_family(family, link), ziformula=zi)
    prob = GLMMProblem(m.design, m.family, True)
    assert prob.has_gradient
    k, p = len(prob.tmap), prob.S.shape[0]
    nd, nz = int(m.family.has_dispersion), 0 if zi is None else m.design.zi.X.shape[1]

    def split(z):
        return z[:k], z[k : k + p], float(np.exp(z[k + p])) if nd else 1.0, z[k + p + nd :]

    def f(z):
        th, b, phi, gamma = split(z)
        if nz:
            prob.set_zero_inflation(gamma)
        return prob.objective(th, b, phi)

    x = np.concatenate([prob.tmap.start * 0.6 + 0.05, np.linspace(-0.3, 0.4, p), [0.4] * nd, [-0.8] * nz])
    value, grad = _laplace_fun_grad(prob, split)(x)
    assert value == pytest.approx(f(x), rel=1e-9)
    numeric = np.array([_richardson(f, x, i, 1e-3) for i in range(len(x))])
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-5 * np.abs(numeric).max())


@pytest.mark.parametrize("family, zi", [("nbinom1", None), ("poisson", "~ x")])
def test_observed_information_gradient_fits_equal_the_derivative_free_fit(family, zi):
    m = MixedModel.from_formula("yz ~ x + (1|g)", _count_data(), family=family, ziformula=zi)
    fast, slow = m.fit(), m.fit(optimizer="bobyqa")
    assert fast.estimates.opt.optimizer == "lbfgsb" and slow.estimates.opt.optimizer.startswith("bobyqa")
    assert fast.llf >= slow.llf - 1e-6
    assert np.allclose(fast.params, slow.params, atol=5e-3 * slow.bse.min())
    assert np.allclose(fast.bse, slow.bse, rtol=5e-3)


def _units_data(seed=5, n=6000):
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 150, n), rng.integers(0, 40, n)
    x = rng.normal(size=n)
    eta = -0.3 + 0.7 * x + rng.normal(size=150)[g] + 0.5 * rng.normal(size=40)[h]
    return pd.DataFrame(
        {
            "x": x,
            "x2": rng.normal(size=n),
            "g": g,
            "h": h,
            "yb": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float),
            "yc": rng.poisson(np.exp(0.5 * eta)),
        }
    )


UNITS_CASES = [
    ("binomial", "yb ~ x + x2 + (1|g)"),
    ("binomial", "yb ~ x + (1|g) + (1|h)"),
    ("poisson", "yc ~ x + x2 + (1|g) + (1|h)"),
]


def test_search_units_are_the_curvatures_of_beta_at_the_start():
    """The joint search's units for β are the reciprocal square roots of the deviance's
    curvatures at its start (central differences of the analytic gradient); θ's are positive,
    extra coordinates are left open, and there are none where a term is not scalar."""
    from midas_glmm.engine.pirls import _search_units

    df = _units_data()
    for family, formula in UNITS_CASES:
        m = MixedModel.from_formula(formula, df, family=family)
        prob = GLMMProblem(m.design, m.family, True)
        theta = prob.tmap.start
        st = prob.pirls(theta, np.zeros(prob.S.shape[0]), 1.0, joint=True)
        units = _search_units(prob, st, theta, 0)
        x0, k = np.concatenate([theta, st.beta]), len(theta)
        for i in range(k, len(x0)):
            e = np.zeros(len(x0))
            e[i] = 1e-4
            up, down = laplace_gradient(prob, *np.split(x0 + e, [k])), laplace_gradient(prob, *np.split(x0 - e, [k]))
            curv = (up[1][i] - down[1][i]) / 2e-4
            assert units[i] ** 2 * curv == pytest.approx(1.0, abs=0.05)
        assert np.all(np.isfinite(units[:k]) & (units[:k] > 0))
        open_ = _search_units(prob, st, theta, 2)  # log φ or thresholds: left to the probes
        assert np.array_equal(open_[:-2], units) and np.isnan(open_[-2:]).all()
    ms = MixedModel.from_formula("yb ~ x + (x|g)", df, family="binomial")
    slope = GLMMProblem(ms.design, ms.family, True)
    th = slope.tmap.start
    assert _search_units(slope, slope.pirls(th, np.zeros(2), 1.0, joint=True), th, 0) is None


def test_probes_measure_the_open_units_and_end_at_the_start():
    """A coordinate left open gets the reciprocal square root of its curvature (1 where the
    curvature is not positive), the others are kept, and the last gradient asked for is at the
    start, so that the search's first evaluation finds it kept."""
    from midas_glmm.engine.pirls import _probe_units

    curv = np.array([4.0, 1e4, -2.0])
    x = np.array([0.3, -1.0, 2.0])
    calls = []

    def fun_grad(z):
        calls.append(np.array(z))
        return float(0.5 * curv @ z**2), curv * z

    units = _probe_units(fun_grad, x, np.array([0.7, np.nan, np.nan]))
    assert units[0] == 0.7 and units[1] == pytest.approx(0.01, rel=1e-9) and units[2] == 1.0
    assert np.array_equal(calls[-1], x)
    assert _probe_units(fun_grad, x, None) is None


def test_glmm_search_in_units_reaches_the_same_optimum_in_fewer_steps(monkeypatch):
    """With and without the units: the same optimum, estimates and standard errors, and fewer
    gradient evaluations over the models (a single random intercept: a third fewer at least),
    NB2's log φ measured by a probe."""
    import midas_glmm.engine.pirls as pirls

    df = _units_data()
    evals = {True: [], False: []}
    for family, formula in [*UNITS_CASES, ("nbinom2", "yc ~ x + x2 + (1|g)")]:
        m = MixedModel.from_formula(formula, df, family=family)
        with_units = m.fit()
        monkeypatch.setattr(pirls, "_search_units", lambda *a: None)
        plain = m.fit()
        monkeypatch.undo()
        assert with_units.llf == pytest.approx(plain.llf, abs=1e-7)
        assert np.allclose(with_units.params, plain.params, atol=1e-4 * plain.bse.min())
        assert np.allclose(with_units.bse, plain.bse, rtol=1e-5)
        evals[True].append(with_units.estimates.opt.nfev)
        evals[False].append(plain.estimates.opt.nfev)
    assert evals[True][0] <= evals[False][0] / 1.5 and sum(evals[True]) < sum(evals[False])


@pytest.mark.parametrize("family, formula, kw", GLMM_CASES[:3])
def test_glmm_search_stopped_at_its_gain_reaches_the_optimum_of_a_tight_search(family, formula, kw, monkeypatch):
    """Stage 2's L-BFGS-B stops at relative gains below STAGE2_FTOL (glmmTMB's 1e-10); the Newton
    steps on the convergence check's derivatives then complete the optimum: the fit equals one
    searched to 1e-13 (log-likelihood, estimates, standard errors) with fewer gradients. Stopped
    far earlier (1e-5, where the check fails) the Newton rescues still reach it, with no
    convergence warning."""
    import warnings

    import midas_glmm.engine.pirls as pirls
    from midas_glmm.errors import ConvergenceWarning

    m = MixedModel.from_formula(formula, _glmm_data(seed=2), family=family, **kw)
    fits, searched, default = {}, {}, pirls.STAGE2_FTOL
    minimize = pirls.minimize_bounded

    def counted(*a, **kw_):  # the gradients of the searches (the Newton steps after them not counted:
        opt = minimize(*a, **kw_)  # at the optimum a step's gain is at rounding level, taken or not)
        searched[ftol] = searched.get(ftol, 0) + opt.nfev
        return opt

    monkeypatch.setattr(pirls, "minimize_bounded", counted)
    for ftol in (1e-13, default, 1e-5):
        monkeypatch.setattr(pirls, "STAGE2_FTOL", ftol)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            fits[ftol] = m.fit()
    tight = fits[1e-13]
    for res in fits.values():
        assert res.llf == pytest.approx(tight.llf, abs=1e-9)
        assert np.allclose(res.params, tight.params, atol=1e-5 * tight.bse.min())
        assert np.allclose(res.bse, tight.bse, rtol=2e-4)
    assert searched[default] < searched[1e-13]


def test_glmm_search_starts_from_the_working_moments_unless_theta0_is_better(monkeypatch):
    """The straight search starts from the moments of the GLM's working response (σ² = 1; the
    first step of penalised quasi-likelihood) where its Laplace deviance is below θ₀'s: the same
    optimum as from θ₀ in fewer gradients over the models (the Poisson ones' moments within 0.05
    of θ̂); a binomial model of one θ starts at θ₀. Moments worse than θ₀ (1e5, where the
    deviance is flat and a search from it stalls) are left for θ₀, and the fit is the same."""
    import midas_glmm.engine.pirls as pirls

    own = pirls._working_moments
    cases = [(_glmm_data(seed=2), f, fo, kw) for f, fo, kw in GLMM_CASES]
    cases += [(_units_data(), f, fo, {}) for f, fo in UNITS_CASES]
    evals = {"moments": 0, "theta0": 0}
    for data, family, formula, kw in cases:
        m = MixedModel.from_formula(formula, data, family=family, **kw)
        seen = []
        monkeypatch.setattr(pirls, "_working_moments", lambda *a, seen=seen: seen.append(own(*a)) or seen[-1])
        fit = m.fit()
        monkeypatch.setattr(pirls, "_working_moments", lambda *a: None)
        plain = m.fit()
        far = np.full(len(plain.theta), 1e5)
        monkeypatch.setattr(pirls, "_working_moments", lambda *a, far=far: far)
        flat = m.fit()
        monkeypatch.undo()
        for res in (fit, flat):
            assert res.llf == pytest.approx(plain.llf, abs=1e-8)
            assert np.allclose(res.params, plain.params, atol=1e-4 * plain.bse.min())
        if family == "binomial" and len(plain.theta) == 1:  # one θ of a binomial: θ₀, no moments
            assert not seen
            continue
        assert len(seen) == 1 and seen[0] is not None
        if family == "poisson":
            assert np.allclose(seen[0], plain.theta, atol=0.05) or "||" in formula
        evals["moments"] += fit.estimates.opt.nfev
        evals["theta0"] += plain.estimates.opt.nfev
    assert evals["moments"] < 0.75 * evals["theta0"]


@pytest.mark.parametrize("formula, kw", [("yb ~ x + (1|g) + (1|h)", {}), ("yp ~ x + (x|g)", {"weights": "n"})])
def test_binomial_working_moments_are_scaled_up_for_pqls_attenuation(formula, kw, monkeypatch):
    """PQL's moments put a binomial model's random-effect SDs low (Breslow & Lin): the start is
    scaled by the family's factor, nearer θ̂ than the moments themselves, and the fit is the same
    as from θ₀ in fewer gradients."""
    import midas_glmm.engine.pirls as pirls
    from midas_glmm.families import family as make_family

    assert make_family("binomial").working_moments_scale > 1.0 and make_family("poisson").working_moments_scale == 1.0
    m = MixedModel.from_formula(formula, _glmm_data(seed=2, n=3000), family="binomial", **kw)
    own, seen = pirls._working_moments, []
    monkeypatch.setattr(pirls, "_working_moments", lambda *a: seen.append(own(*a)) or seen[-1])
    fit = m.fit()
    monkeypatch.setattr(pirls, "_working_moments", lambda *a: None)
    plain = m.fit()
    scaled = seen[0]
    raw = scaled / m.family.working_moments_scale
    sd = plain.estimates.lower == 0  # the SDs (the Cholesky factors' diagonals)
    assert np.linalg.norm((scaled - plain.theta)[sd]) < np.linalg.norm((raw - plain.theta)[sd])
    assert fit.llf == pytest.approx(plain.llf, abs=1e-8)
    assert fit.estimates.opt.nfev < plain.estimates.opt.nfev


def test_working_moments_apply_only_where_lambda_is_lmes_and_the_working_response_is_finite():
    """The moments' start for lme4's (linear) λ from a finite working response; None (θ₀ starts)
    for a structured term, and where η runs out of range (μ' overflows or vanishes: the working
    response or its weights are not finite)."""
    from midas_glmm.engine.pirls import GLMMProblem, _glm_start, _working_moments

    d = _units_data()
    for formula, applies in [("yc ~ x + (1|g) + (1|h)", True), ("yc ~ x + diag(x | g)", False)]:
        m = MixedModel.from_formula(formula, d, family="poisson")
        prob = GLMMProblem(m.design, m.family, True)
        beta, phi = _glm_start(m.design, m.family, prob)
        moments = _working_moments(m.design, m.family, prob, beta, phi)
        assert (moments is not None) == applies
        if applies:
            assert moments.shape == (2,) and np.allclose(moments, m.fit().theta, atol=0.05)
            far = beta + 800.0  # every exp(η) overflows: μ' infinite, the working weights not finite
            assert _working_moments(m.design, m.family, prob, far, phi) is None


MODE_CASES = [  # (family, link, formula, kw): the predictor's derivatives of the modes
    *[(family, None, formula, kw) for family, formula, kw in GLMM_CASES],
    ("nbinom2", None, "yc ~ x + (1|g) + (1|h)", {}),
    ("gamma", "log", "yg ~ x + (x|g)", {}),
    ("ordinal", None, "yo ~ x + (1|g) + (1|h)", {}),
]


@pytest.mark.parametrize("family, link, formula, kw", MODE_CASES)
def test_mode_derivatives_equal_differences_of_the_modes(family, link, formula, kw):
    """dû/d(θ, β) of the implicit function theorem (the Hessian's predictor) against central
    differences of the modes PIRLS finds: a wrong sign, transpose or information fails it."""
    from midas_glmm.engine.gradient import mode_derivatives
    from midas_glmm.families import family as make_family

    d = _count_data()
    d["yo"] = np.digitize(d.x + np.random.default_rng(6).logistic(size=len(d)), [-1.0, 0.0, 1.0])
    m = MixedModel.from_formula(formula, d, family=make_family(family, link), **kw)
    prob = GLMMProblem(m.design, m.family, True)
    k, p = len(prob.tmap), prob.S.shape[0]
    x = np.concatenate([prob.tmap.start * 0.6 + 0.05, np.linspace(-0.3, 0.4, p)])
    phi = 1.7 if m.family.has_dispersion else 1.0
    if m.family.thresholds:  # an ordinal model: φ is the thresholds
        phi = m.family.thresholds_of(np.array([-1.0, 0.1, 0.2]))
    st = prob.pirls(x[:k], x[k:], phi, tol=1e-13)
    D = mode_derivatives(prob, st, x[:k], x[k:], phi)
    u0 = np.concatenate(st.u)
    assert D.shape == (len(u0), k + p)

    def modes(z):
        prob._u = np.split(u0, np.cumsum([u.size for u in st.u])[:-1])
        return np.concatenate(prob.pirls(z[:k], z[k:], phi, tol=1e-13).u)

    h = 1e-4
    for j in range(k + p):
        e = np.zeros(k + p)
        e[j] = h
        numeric = (modes(x + e) - modes(x - e)) / (2 * h)
        assert np.allclose(D[:, j], numeric, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(numeric).max())), j


SCALAR_MODE_CASES = [
    ("binomial", "yb ~ x + (1|g)", {}),
    ("binomial", "yp ~ x + (1|g)", {"weights": "n"}),
    ("poisson", "yc ~ x + (0 + x|g)", {"offset": "x"}),
]


@pytest.mark.parametrize("family, formula, kw", SCALAR_MODE_CASES)
def test_scalar_term_mode_derivatives_equal_differences_of_the_modes(family, formula, kw):
    """The one-scalar-term path's dû/d(λ, β) (group by group) against central differences of its
    own modes."""
    m = MixedModel.from_formula(formula, _glmm_data(), family=family, **kw)
    prob = GLMMProblem(m.design, m.family, True)
    assert prob.scalar is not None
    p = prob.S.shape[0]
    x = np.concatenate([[0.8], np.linspace(-0.3, 0.4, p)])

    def modes(z):
        prob._u = [np.zeros(prob.scalar.levels)]
        assert prob._scalar_laplace(z[:1], z[1:], gradient=False) is not None
        return prob._u[0].copy()

    u0 = modes(x)
    D = prob.scalar.mode_derivatives(0.8, prob.S @ x[1:], u0, prob.S)
    h = 1e-4
    for j in range(1 + p):
        e = np.zeros(1 + p)
        e[j] = h
        numeric = (modes(x + e) - modes(x - e)) / (2 * h)
        assert np.allclose(D[:, j], numeric, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(numeric).max())), j


@pytest.mark.parametrize("family, formula, kw", [GLMM_CASES[0], GLMM_CASES[2], SCALAR_MODE_CASES[1]])
def test_hessian_runs_from_predicted_modes_take_two_passes_and_change_nothing(family, formula, kw, monkeypatch):
    """With the predictor each PIRLS run of the Hessian's gradient differences takes two passes
    (from the modes at the optimum, three), and the fit is the fit without it (the general path and
    the one-scalar-term one)."""
    from midas_glmm.engine import glmmrows, pirls, scalarterm

    m = MixedModel.from_formula(formula, _glmm_data(seed=2), family=family, **kw)
    count = {"in": False, "passes": 0, "k": 0}
    derivatives = pirls.gradient_derivatives
    scalar = m.design.terms[0].p == 1 and len(m.design.terms) == 1
    owner = scalarterm.ScalarTerm if scalar else glmmrows.RowBlock
    evaluate = owner.evaluate

    def counted_evaluate(self, *a, **kw_):
        count["passes"] += count["in"]
        return evaluate(self, *a, **kw_)

    def counted_derivatives(fun_grad, x, *a, **kw_):
        count["in"], count["k"] = True, len(x)
        try:
            return derivatives(fun_grad, x, *a, **kw_)
        finally:
            count["in"] = False

    monkeypatch.setattr(owner, "evaluate", counted_evaluate)
    monkeypatch.setattr(pirls, "gradient_derivatives", counted_derivatives)
    predicted = m.fit()
    passes_predicted = count["passes"]
    assert passes_predicted <= 2 * count["k"]
    count["passes"] = 0
    monkeypatch.setattr(pirls, "_mode_predictor", lambda *a: None)
    plain = m.fit()
    assert passes_predicted < count["passes"]
    assert predicted.llf == pytest.approx(plain.llf, abs=1e-8)
    assert np.allclose(predicted.params, plain.params, rtol=1e-7, atol=1e-9)
    assert np.allclose(predicted.bse, plain.bse, rtol=1e-5)


def test_quadrature_hessian_starts_from_predicted_modes_and_changes_nothing(monkeypatch):
    """nAGQ > 1: the deviance's central differences for the Hessian (1 + 2k + k(k − 1) runs) start
    each group's Newton steps from the predicted modes: fewer passes, the same fit."""
    from midas_glmm.engine import glmmrows, pirls

    m = MixedModel.from_formula("yb ~ x + (1|g)", _glmm_data(seed=2), family="binomial")
    count = {"in": False, "passes": 0}
    sums, derivatives = glmmrows.RowBlock.scalar_sums, pirls.fd_derivatives

    def counted_sums(self, *a, **kw_):
        count["passes"] += count["in"]
        return sums(self, *a, **kw_)

    def counted_derivatives(*a, **kw_):
        count["in"] = True
        try:
            return derivatives(*a, **kw_)
        finally:
            count["in"] = False

    monkeypatch.setattr(glmmrows.RowBlock, "scalar_sums", counted_sums)
    monkeypatch.setattr(pirls, "fd_derivatives", counted_derivatives)
    predicted = m.fit(nAGQ=7)
    passes_predicted, count["passes"] = count["passes"], 0
    monkeypatch.setattr(pirls, "_mode_predictor", lambda *a: None)
    plain = m.fit(nAGQ=7)
    assert 0 < passes_predicted < 0.8 * count["passes"]
    assert predicted.llf == pytest.approx(plain.llf, abs=1e-8)
    assert np.allclose(predicted.params, plain.params, rtol=1e-7, atol=1e-9)
    assert np.allclose(predicted.bse, plain.bse, rtol=1e-5)
