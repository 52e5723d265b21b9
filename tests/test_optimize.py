"""Bounded optimisation, the convergence check and the singular-fit rule."""

import numpy as np
import pytest

from midas_glmm.errors import ConvergenceWarning, FitError
from midas_glmm.optimize import OptResult, check_convergence, is_singular, minimize_bounded


def quadratic(x):
    return float((x[0] - 2.0) ** 2 + 10 * (x[1] + 1.0) ** 2)


@pytest.mark.parametrize("optimizer", ["bobyqa", "lbfgsb", "nelder-mead", "powell"])
def test_every_optimizer_finds_a_bounded_minimum(optimizer):
    lower = np.array([0.0, 0.0])  # the unconstrained minimum (2, -1) is outside: x2 lands on its bound
    opt = minimize_bounded(quadratic, np.array([1.0, 1.0]), lower, optimizer)
    assert np.allclose(opt.x, [2.0, 0.0], atol=1e-5)
    assert opt.x[1] == 0.0  # put exactly on the bound
    assert opt.fun == pytest.approx(10.0, abs=1e-8)


def test_convergence_check_warns_away_from_the_optimum_and_not_at_it():
    lower = np.array([-np.inf, -np.inf])
    bad = OptResult(np.array([1.9, -1.0]), quadratic([1.9, -1.0]), 10, True, "", "bobyqa")
    with pytest.warns(ConvergenceWarning, match="scaled gradient"):
        assert check_convergence(quadratic, bad, lower)
    good = OptResult(np.array([2.0, -1.0]), 0.0, 10, True, "", "bobyqa")
    assert check_convergence(quadratic, good, lower) == []


def test_singular_rule_and_unknown_optimizer():
    assert is_singular(np.array([0.0, 0.3]), np.array([0.0, -np.inf]))
    assert not is_singular(np.array([0.5, 0.0]), np.array([0.0, -np.inf]))  # an off-diagonal 0 is fine
    with pytest.raises(FitError, match="unknown optimizer"):
        minimize_bounded(quadratic, np.zeros(2), np.zeros(2), "newton")
