"""Bounded optimisation, the convergence check and the singular-fit rule."""

import numpy as np
import pytest

from midas_glmm.engine.optimize import OptResult, check_convergence, is_singular, minimize_bounded
from midas_glmm.errors import ConvergenceWarning, FitError


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


def test_newton_step_polishes_a_nearby_point_and_refuses_bad_steps():
    from midas_glmm.engine.optimize import fd_derivatives, newton_step

    def f(x):  # smooth, not quadratic: minimum at (2, -1, 0.5); with x3 = 0 at (2, -1, 0)
        a, b, c = x[0] - 2.0, x[1] + 1.0, x[2] - 0.5
        return float(np.cosh(a) + 10 * b**2 + a * b + c**2 * (1 + x[2] ** 2))

    lower = np.array([-np.inf, -np.inf, 0.0])
    x = np.array([2.001, -1.0004, 0.5007])
    opt = OptResult(x, f(x), 30, True, "", "bobyqa")
    g, H = fd_derivatives(f, x, f0=opt.fun)
    new = newton_step(f, opt, lower, g, H)
    assert np.allclose(new.x, [2.0, -1.0, 0.5], atol=1e-6) and new.fun < opt.fun and new.nfev == 31
    # a coordinate held at its bound stays there
    at_bound = OptResult(np.array([2.001, -1.0004, 0.0]), f([2.001, -1.0004, 0.0]), 30, True, "", "bobyqa")
    g, H = fd_derivatives(f, at_bound.x)
    new = newton_step(f, at_bound, lower, g, H)
    assert new.x[2] == 0.0 and np.allclose(new.x[:2], [2.0, -1.0], atol=1e-6)
    # far from the optimum, or with an indefinite Hessian, the point is kept
    far = OptResult(np.array([4.0, 1.0, 0.5]), f([4.0, 1.0, 0.5]), 30, True, "", "bobyqa")
    g, H = fd_derivatives(f, far.x)
    assert newton_step(f, far, lower, g, H) is far
    assert newton_step(f, opt, lower, np.ones(3), -np.eye(3)) is opt


def test_an_early_bobyqa_stop_is_restarted_with_the_requested_optimizer():
    from midas_glmm.engine.optimize import fd_derivatives, restart_if_unconverged

    lower = np.array([-np.inf, -np.inf])
    early = OptResult(np.array([1.5, -0.8]), quadratic([1.5, -0.8]), 20, True, "", "bobyqa")
    g, H = fd_derivatives(quadratic, early.x)
    opt, restarted = restart_if_unconverged(quadratic, early, lower, H, g, optimizer="bobyqa", step=0.05)
    assert restarted and opt.optimizer == "bobyqa+bobyqa" and opt.nfev > early.nfev
    assert np.allclose(opt.x, [2.0, -1.0], atol=1e-6)
    # at the optimum nothing is redone
    done = OptResult(np.array([2.0, -1.0]), 0.0, 20, True, "", "bobyqa")
    g, H = fd_derivatives(quadratic, done.x)
    assert restart_if_unconverged(quadratic, done, lower, H, g, optimizer="bobyqa") == (done, False)


def test_lbfgsb_stops_when_its_line_search_probes_rounding_noise(monkeypatch):
    """A sharp criterion of size 3e5 whose last digits, and its gradient's, are noise (a fixed
    function of x, as rounding is): once the line search asks for a point within rounding of its
    best, the search ends there, at the optimum, instead of evaluating noise until a value
    happens to pass the line search's tests (the guard off: more evaluations, no better point)."""
    import zlib

    import midas_glmm.engine.optimize as optimize

    def run(seed):
        centre = np.array([1.9, 0.6]) + 0.01 * seed
        calls = []

        def fun_grad(x):
            calls.append(np.array(x))
            e = np.random.default_rng(zlib.crc32(np.asarray(x, float).tobytes())).uniform(-1, 1, 3)
            d = x - centre
            return 3e5 + 1e7 * float(d @ d) + 5e-10 * e[0], 2e7 * d + 2e-3 * e[1:]

        opt = minimize_bounded(
            lambda x: fun_grad(x)[0], np.array([1.0, 0.0]), np.array([0.0, -np.inf]), "lbfgsb", fun_grad=fun_grad
        )
        assert opt.converged and opt.nfev == len(calls)
        assert np.allclose(opt.x, centre, atol=1e-9)
        return len(calls)

    guarded = [run(seed) for seed in range(10)]
    monkeypatch.setattr(optimize, "STALL_STEP", -1.0)
    unguarded = [run(seed) for seed in range(10)]
    assert max(guarded) <= 4 and sum(unguarded) > sum(guarded) + 10


def test_lbfgsb_in_units_reaches_the_same_optimum_in_fewer_steps():
    """L-BFGS-B on a badly scaled quadratic (curvatures 1 to 1e6), the second coordinate on a bound:
    in units of the curvatures' reciprocal square roots it ends at the same point (the gradient
    and the bounds carried into the units and back), and in far fewer evaluations."""
    curv = np.array([1.0, 1e6, 1e4, 30.0])
    centre = np.array([0.5, -0.2, 0.03, 2.0])
    lower = np.array([-np.inf, 0.0, -np.inf, -np.inf])

    def fun_grad(x):
        d = x - centre
        return float(curv @ d**2), 2.0 * curv * d

    x0 = np.array([2.0, 1.0, 1.0, -1.0])
    plain = minimize_bounded(lambda x: fun_grad(x)[0], x0, lower, "lbfgsb", fun_grad=fun_grad)
    units = minimize_bounded(lambda x: fun_grad(x)[0], x0, lower, "lbfgsb", fun_grad=fun_grad, scale=curv**-0.5)
    expected = np.maximum(centre, lower)
    assert np.allclose(units.x, expected, atol=1e-7) and np.allclose(plain.x, expected, atol=1e-7)
    assert units.nfev < plain.nfev
