"""The one-scalar-term path (midas_glmm.engine.scalarterm) and the numpy passes beside it: the
Laplace deviance, modes and gradient against the general machinery and against finite
differences; the numpy passes against the compiled pass; fits against the general path's
(Laplace and quadrature); the models that take it; and its fallback when its PIRLS fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_gradient import _richardson

from midas_glmm import MixedModel
from midas_glmm.engine import glmmrows, pirls, scalarterm
from midas_glmm.engine.gradient import laplace_gradient
from midas_glmm.engine.pirls import GLMMProblem


def _data(seed=4, n=600, groups=30):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    off = rng.normal(scale=0.3, size=n)
    eta = -0.4 + 0.6 * x + rng.normal(size=groups)[g] + 0.5 * x * rng.normal(size=groups)[g]
    trials = rng.integers(1, 8, n)
    return pd.DataFrame(
        {
            "x": x,
            "g": g,
            "f": rng.choice(["a", "b", "c"], n),
            "off": off,
            "n": trials,
            "yb": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float),
            "yp": rng.binomial(trials, 1 / (1 + np.exp(-eta))) / trials,
            "yc": rng.poisson(np.exp(0.5 * eta + off)),
        }
    )


CASES = [
    ("binomial", "yb ~ x + (1|g)", {}),
    ("binomial", "yp ~ x + f + (1|g)", {"weights": "n"}),  # trials
    ("poisson", "yc ~ x + (1|g)", {"offset": "off"}),
    ("poisson", "yc ~ x + (0 + x|g)", {}),  # a column other than 1
]


def _problem(family, formula, kw, data=None):
    m = MixedModel.from_formula(formula, _data() if data is None else data, family=family, **kw)
    return GLMMProblem(m.design, m.family, True)


@pytest.mark.parametrize("family, formula, kw", CASES)
def test_deviance_and_gradient_equal_the_general_machinery_and_finite_differences(family, formula, kw):
    prob = _problem(family, formula, kw)
    assert prob.scalar is not None
    p = prob.S.shape[0]
    for theta, beta in [(np.array([0.7]), np.linspace(-0.3, 0.4, p)), (np.array([1.6]), np.linspace(0.2, -0.2, p))]:
        prob._u = [np.zeros(prob.tmap.terms[0].q)]
        value, grad = prob.laplace_gradient(theta, beta)
        prob._u = [np.zeros(prob.tmap.terms[0].q)]
        general_value, general_grad = laplace_gradient(prob, theta, beta)  # the factor, the plan, the passes
        assert value == pytest.approx(general_value, rel=1e-11)
        assert np.allclose(grad, general_grad, rtol=1e-8, atol=1e-8 * np.abs(general_grad).max())
        x = np.concatenate([theta, beta])

        def f(v):
            return prob.objective(v[:1], v[1:], 1.0)

        numeric = np.array([_richardson(f, x, i, 1e-3) for i in range(len(x))])
        assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


@pytest.mark.parametrize("family, formula, kw", CASES)
def test_modes_are_stationary_and_equal_the_general_pirls(family, formula, kw):
    prob = _problem(family, formula, kw)
    st = prob.scalar
    beta = np.linspace(-0.2, 0.3, prob.S.shape[0])
    base = st.off + st.X @ (prob.S @ beta)
    u, obj, (zdl, zW, *_rest) = st.modes(base, 0.9, np.zeros(prob.tmap.terms[0].q))
    assert np.abs(u - 0.9 * zdl).max() < 1e-8 * (1 + np.abs(u).max())  # u_g = λ Σ_g zℓ' at the modes
    prob._u = [np.zeros_like(u)]
    general = prob.pirls(np.array([0.9]), beta)
    assert np.allclose(u, general.u[0], atol=1e-9)
    assert obj + np.sum(np.log(1 + 0.81 * zW)) == pytest.approx(prob.laplace(general), rel=1e-12)


@pytest.mark.parametrize("family, formula, kw", CASES)
def test_joint_modes_equal_the_general_joint_pirls(family, formula, kw):
    """PIRLS in (β, u) at θ from the GLM's β (the joint search's start): the same modes, β and
    factor (its R_X and diagonal give the search's units) as the general joint PIRLS."""
    prob = _problem(family, formula, kw)
    q, p = prob.tmap.terms[0].q, prob.S.shape[0]
    theta, beta0 = np.array([1.0]), np.linspace(-0.2, 0.2, p)
    prob._u = [np.zeros(q)]
    block, passes = prob.rows.block, []
    block.evaluate = lambda *a, **k: passes.append(1) or type(block).evaluate(block, *a, **k)
    fast = prob.pirls(theta, beta0, joint=True)
    assert len(passes) == 1  # the modes group by group; one general pass for the factor there
    general, prob.scalar = prob.scalar, None
    prob._u = [np.zeros(q)]
    slow = prob.pirls(theta, beta0, joint=True)
    assert general is not None and fast.converged and slow.converged
    assert np.allclose(fast.beta, slow.beta, atol=1e-8) and np.allclose(fast.u[0], slow.u[0], atol=1e-8)
    assert np.allclose(fast.factor.RX, slow.factor.RX, rtol=1e-8)
    assert np.allclose(fast.factor.diagonal(), slow.factor.diagonal(), rtol=1e-10)
    assert fast.loglik_cond == pytest.approx(slow.loglik_cond, rel=1e-12)


@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("family, formula, kw", CASES)
def test_numpy_passes_equal_the_compiled_pass(family, formula, kw, joint):
    prob = _problem(family, formula, kw)
    rows, rm = prob.rows, prob.rows.block.rowmap
    assert rm.numpy_rows
    lams = prob.tmap.lams(np.array([0.8]))
    us = [np.random.default_rng(1).normal(size=prob.tmap.terms[0].q)]
    beta_raw = prob.S @ np.linspace(-0.3, 0.3, prob.S.shape[0])
    args = (beta_raw, lams, us, 1.0, joint, prob.shift, prob.scale)
    ll, blocks = rows("evaluate", *args)
    rm.numpy_rows = False
    ll_c, blocks_c = rows("evaluate", *args)
    assert ll == pytest.approx(ll_c, rel=1e-13)
    for a, b in [(blocks.A, blocks_c.A), (blocks.XZ, blocks_c.XZ), (blocks.XX, blocks_c.XX)]:
        assert np.allclose(a, b, rtol=1e-11, atol=1e-11 * np.abs(b).max())


def _general(monkeypatch):
    monkeypatch.setattr(pirls, "SCALAR_TERM_ROWS", 0)
    monkeypatch.setattr(glmmrows, "NUMPY_ROWS", 0)


@pytest.mark.parametrize("family, formula, kw, nAGQ", [(*c, 1) for c in CASES] + [(*c, 7) for c in CASES[:3]])
def test_fits_equal_the_general_path(family, formula, kw, nAGQ, monkeypatch):
    m = MixedModel.from_formula(formula, _data(seed=7), family=family, **kw)
    assert GLMMProblem(m.design, m.family, True).scalar is not None
    fast = m.fit(nAGQ=nAGQ)
    _general(monkeypatch)
    assert GLMMProblem(m.design, m.family, True).scalar is None
    slow = m.fit(nAGQ=nAGQ)
    assert fast.llf == pytest.approx(slow.llf, abs=1e-7)
    assert np.allclose(fast.params, slow.params, atol=1e-4 * slow.bse.min())
    assert np.allclose(fast.bse, slow.bse, rtol=1e-4)
    assert np.allclose(fast.theta, slow.theta, atol=1e-4 * max(1.0, float(slow.theta[0])))
    re_fast, re_slow = fast.ranef()["g"], slow.ranef()["g"]
    assert np.allclose(re_fast.to_numpy(), re_slow.to_numpy(), atol=1e-4)


def test_only_one_scalar_term_of_a_canonical_family_in_memory_takes_it(monkeypatch):
    d = _data()
    d["h"] = d.g % 7
    assert _problem("binomial", "yb ~ x + (1|g)", {}, d).scalar is not None
    for family, formula, numpy_rows in [
        # two terms (η and the gradient's sums by numpy, the working system compiled: test_numpy_rows)
        ("binomial", "yb ~ x + (1|g) + (1|h)", True),
        ("binomial", "yb ~ x + (x|g)", False),  # a vector term
        # not a canonical binomial or Poisson family (its passes numpy's: test_numpy_rows)
        ("nbinom2", "yc ~ x + (1|g)", True),
    ]:
        prob = _problem(family, formula, {}, d)
        assert prob.scalar is None and prob.rows.block.rowmap.numpy_rows == numpy_rows, formula
    monkeypatch.setattr(pirls, "SCALAR_TERM_ROWS", len(d) - 1)
    monkeypatch.setattr(glmmrows, "NUMPY_ROWS", len(d) - 1)
    prob = _problem("binomial", "yb ~ x + (1|g)", {}, d)  # more rows than either limit
    assert prob.scalar is None and not prob.rows.block.rowmap.numpy_rows
    assert scalarterm.SCALAR_TERM_ROWS >= glmmrows.LINK_KERNEL_ROWS


def test_a_failed_group_by_group_pirls_falls_back_to_the_general_one(monkeypatch):
    prob = _problem("poisson", "yc ~ x + (1|g)", {"offset": "off"})
    theta, beta = np.array([0.5]), np.array([0.1, 0.2])
    expected = laplace_gradient(prob, theta, beta)
    prob._u = [np.zeros_like(prob._u[0])]
    joint = prob.pirls(theta, beta, joint=True)
    monkeypatch.setattr(scalarterm.ScalarTerm, "modes", lambda *a, **k: None)
    monkeypatch.setattr(scalarterm.ScalarTerm, "joint_modes", lambda *a, **k: None)
    prob._u = [np.zeros_like(prob._u[0])]
    value, grad = prob.laplace_gradient(theta, beta)
    assert value == pytest.approx(expected[0], rel=1e-12) and np.allclose(grad, expected[1], rtol=1e-9)
    assert prob.objective(theta, beta, 1.0) == pytest.approx(expected[0], rel=1e-12)
    prob._u = [np.zeros_like(prob._u[0])]
    assert np.allclose(prob.pirls(theta, beta, joint=True).beta, joint.beta, atol=1e-8)
