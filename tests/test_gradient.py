"""The analytic gradient of the profiled LMM criterion (midas_glmm.gradient) against finite
differences, on every storage shape of the factor, REML and ML, with and without prior weights,
at interior and boundary θ; and the fits that use it against BOBYQA's optimum."""

from __future__ import annotations

import numpy as np
import pytest
from test_factor import FORMULAS, _data

from midas_glmm import MixedModel, sparsity
from midas_glmm.design import build_design
from midas_glmm.gradient import profiled_gradient
from midas_glmm.lmm import lmm_criterion, uses_gradient


def _richardson(f, x, i, h):
    """∂f/∂x_i by central differences at h and h/2, extrapolated (error O(h⁴))."""

    def central(s):
        e = np.zeros_like(x)
        e[i] = s
        return (f(x + e) - f(x - e)) / (2 * s)

    return (4 * central(h / 2) - central(h)) / 3


def _check(design, theta, REML):
    crit, _ = lmm_criterion(design, REML)
    value, grad = profiled_gradient(crit, theta)
    assert value == pytest.approx(crit(theta), rel=1e-12)
    numeric = np.array([_richardson(crit, theta, i, 1e-3 * max(1.0, abs(theta[i]))) for i in range(len(theta))])
    assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(numeric).max()))


def _theta(crit_tmap, seed):
    rng = np.random.default_rng(seed)
    bounded = np.isfinite(crit_tmap.lower)
    return crit_tmap.start * rng.uniform(0.3, 1.5, len(crit_tmap)) + np.where(bounded, 0.0, rng.normal(0, 0.3))


@pytest.mark.parametrize("REML", [True, False])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_gradient_equals_finite_differences(name, REML):
    d = build_design(FORMULAS[name], _data())
    crit, _ = lmm_criterion(d, REML)
    _check(d, _theta(crit.tmap, 2), REML)


@pytest.mark.parametrize("name", ["crossed", "crossed_vector_tail", "nested_slopes"])
def test_gradient_with_prior_weights_and_a_forced_sparse_path(name, monkeypatch):
    data = _data(seed=5)
    data["w"] = np.random.default_rng(5).uniform(0.3, 3.0, len(data))
    monkeypatch.setattr(sparsity, "DENSE_TAIL_DENSITY", 2.0)  # no dense tail: all block-sparse
    d = build_design(FORMULAS[name], data, weights="w")
    crit, _ = lmm_criterion(d, True)
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
        assert uses_gradient(crit, None) and fast._est.opt.optimizer == "lbfgsb"
        assert slow._est.opt.optimizer.startswith("bobyqa")
        assert fast.llf >= slow.llf - 1e-7  # as good, usually slightly better
        assert np.allclose(fast.params, slow.params, rtol=1e-4, atol=1e-4 * fast.bse.min())


def test_crossed_models_keep_bobyqa_by_default():
    d = build_design(FORMULAS["crossed"], _data())
    crit, _ = lmm_criterion(d, True)
    assert crit.plan.qt > 0 and not uses_gradient(crit, None) and uses_gradient(crit, "lbfgsb")
