"""Bounded optimisation of θ (and β for Laplace fits), convergence and singularity checks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from ..errors import ConvergenceWarning, FitError
from .controls import FitControl, current_control

__all__ = [
    "OptResult",
    "minimize_bounded",
    "is_singular",
    "newton_step",
    "OPTIMIZERS",
    "fd_gradient",
    "fd_hessian",
    "gradient_derivatives",
]

OPTIMIZERS = ("bobyqa", "lbfgsb", "nelder-mead", "powell")


@dataclass
class OptResult:
    """Outcome of an optimisation: the optimum, its value and how it got there."""

    x: np.ndarray
    fun: float
    nfev: int
    converged: bool
    message: str
    optimizer: str


def _bounds(lower: np.ndarray, upper: np.ndarray | None = None):
    upper = np.full_like(lower, np.inf) if upper is None else upper
    return [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi) for lo, hi in zip(lower, upper)]


#: L-BFGS-B's line search asking for a point within this relative distance of the best point so
#: far is probing the criterion's rounding: at 1e5 rows −2ℓ ~ 3e5 is noisy at ~5e-10, and a
#: search that had stopped there after 14 evaluations took 26 when its last digits moved
STALL_STEP = 1e-10


class _Stalled(Exception):
    """Raised inside L-BFGS-B's objective to stop a line search stuck in rounding noise."""


def minimize_bounded(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    optimizer: str = "bobyqa",
    maxfev: int | None = None,
    ftol: float = 1e-12,
    polish: bool = True,
    jac: str = "3-point",
    step: np.ndarray | float = 0.2,
    tolerances: dict | None = None,
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
    scale: np.ndarray | None = None,
) -> OptResult:
    """Minimise ``fun`` over ``x ≥ lower``.

    ``"bobyqa"`` (default) is Powell's bound-constrained quadratic-model method from NLopt, the
    optimizer lme4 uses: derivative-free and frugal (tens of evaluations for a few parameters).
    ``"lbfgsb"`` uses L-BFGS-B with finite-difference gradients and then (``polish``) a bounded
    Nelder–Mead restart from the optimum. ``"nelder-mead"`` is the seed's method; ``"powell"``
    is derivative-free too. ``step`` is BOBYQA's initial trust-region radius per coordinate.
    ``fun_grad`` (x → (f, ∇f)), with ``"lbfgsb"``: the exact gradient, no polish; ``scale``
    (with it) the search's units per coordinate: L-BFGS-B runs on x / scale, where its first
    step, a unit step down the gradient, is then about one such unit in each coordinate.
    """
    if optimizer not in OPTIMIZERS:
        raise FitError(f"unknown optimizer '{optimizer}'; choose one of {', '.join(OPTIMIZERS)}")
    x0 = np.maximum(np.asarray(x0, dtype=float), lower)
    bounds = _bounds(lower)
    nfev = 0
    ctl = current_control()

    def f(x):
        nonlocal nfev
        nfev += 1
        v = fun(x)
        if ctl is not None:
            ctl.report(x, v)
        return v if math.isfinite(v) else 1e300

    maxfev = maxfev or 2000 * max(1, len(x0))
    if ctl is not None and ctl.maxiter is not None:
        maxfev = min(maxfev, ctl.maxiter)
    if optimizer == "bobyqa":
        x, fx, converged, message = _bobyqa(f, x0, lower, maxfev, step, tolerances or {})
        x, fx = _snap_to_bounds(f, x, fx, lower)
        return _limited(OptResult(x, fx, nfev, converged, message, optimizer), maxfev, ctl)
    import scipy.optimize as so  # the other optimizers: loaded when one is asked for

    if optimizer == "lbfgsb" and fun_grad is not None:
        best: dict = {"x": None, "f": np.inf}
        s = np.ones(len(x0)) if scale is None else np.asarray(scale, dtype=float)
        y0 = x0 / s

        def fg(y):
            nonlocal nfev
            x = x0 if np.array_equal(y, y0) else y * s  # the start as given (y0 · s may round)
            bx = best["x"]
            if bx is not None and np.all(np.abs(x - bx) <= STALL_STEP * (1.0 + np.abs(bx))):
                raise _Stalled
            nfev += 1
            v, g = fun_grad(x)
            if ctl is not None:
                ctl.report(x, v)
            v, g = (float(v), g) if np.isfinite(v) else (1e300, np.zeros_like(x))
            if v < best["f"]:
                best["x"], best["f"] = np.array(x, dtype=float), v
            return v, g * s

        try:
            r = so.minimize(
                fg,
                y0,
                method="L-BFGS-B",
                jac=True,
                bounds=_bounds(lower / s),
                options={
                    "ftol": (tolerances or {}).get("ftol_rel", 1e-13),
                    "gtol": 1e-6,
                    "maxfun": maxfev,
                    "maxiter": maxfev,
                    "maxcor": 20,
                },
            )
            converged, message = bool(r.success), str(r.message)
            r.x = r.x * s
        except _Stalled:  # the line search is probing rounding noise at its best point: done there
            r = so.OptimizeResult(x=best["x"], fun=best["f"])
            converged, message = True, "the line search's steps fell below the criterion's rounding"
    elif optimizer == "lbfgsb":
        r = so.minimize(
            f,
            x0,
            method="L-BFGS-B",
            jac=jac,
            bounds=bounds,
            options={"ftol": ftol, "gtol": 1e-9, "maxfun": maxfev, "maxiter": maxfev},
        )
        converged, message = bool(r.success), str(r.message)
        r2 = (
            r
            if not polish
            else so.minimize(
                f,
                r.x,
                method="Nelder-Mead",
                bounds=bounds,
                options={
                    "xatol": 1e-7,
                    "fatol": 1e-10,
                    "maxfev": 100 * (len(x0) + 1),
                    "initial_simplex": _simplex(r.x, lower),
                },
            )
        )
        if r2.fun < r.fun:
            r = r2
    elif optimizer == "nelder-mead":
        r = so.minimize(
            f,
            x0,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-8, "fatol": 1e-11, "maxfev": maxfev, "adaptive": len(x0) > 3},
        )
        converged, message = bool(r.success), str(r.message)
    else:
        r = so.minimize(f, x0, method="Powell", bounds=bounds, options={"xtol": 1e-8, "ftol": 1e-12, "maxfev": maxfev})
        converged, message = bool(r.success), str(r.message)
    x, fx = _snap_to_bounds(f, np.asarray(r.x, dtype=float), float(r.fun), lower)
    return _limited(OptResult(x, fx, nfev, converged, message, optimizer), maxfev, ctl)


def _limited(opt: OptResult, maxfev: int, ctl: FitControl | None) -> OptResult:
    """Mark a run that the user's ``maxiter`` stopped (not converged); the fit says so when its
    last optimizer run was stopped (a restart or a later stage that converges clears it)."""
    if ctl is not None and ctl.maxiter is not None:
        ctl.hit_limit = opt.nfev >= maxfev
        if ctl.hit_limit:
            opt.converged = False
            opt.message = f"stopped at maxiter = {ctl.maxiter} evaluations"
    return opt


def _snap_to_bounds(f, x, fx, lower, tol=1e-5):
    """Put coordinates within ``tol`` of their bound on it when that is no worse (an exact
    boundary fit, as lme4 reports it, rather than θ = 1e-10)."""
    near = np.isfinite(lower) & (x - lower < tol) & (x != lower)
    if not near.any():
        return x, fx
    y = np.where(near, lower, x)
    fy = f(y)
    return (y, fy) if fy <= fx + 1e-10 * (1 + abs(fx)) else (x, fx)


BOBYQA_TOLERANCES = {"ftol_rel": 1e-14, "ftol_abs": 1e-10, "xtol_rel": 1e-10, "xtol_abs": 0.0}


def _bobyqa(f, x0, lower, maxfev, step, tolerances):
    import nlopt

    k = len(x0)
    best = {"x": np.asarray(x0, dtype=float), "f": np.inf}

    def objective(x, grad):
        v = float(f(x))
        if v < best["f"]:
            best["x"], best["f"] = np.array(x, dtype=float), v
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(objective)
    # BOBYQA wants finite bounds: far outside anything the problem will visit
    wide = 1e4 * np.maximum(1.0, np.abs(x0))
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, x0 - wide))
    opt.set_upper_bounds(x0 + wide)
    opt.set_initial_step(np.broadcast_to(np.asarray(step, dtype=float), (k,)).copy())
    tol = {**BOBYQA_TOLERANCES, **tolerances}
    opt.set_ftol_rel(tol["ftol_rel"])
    opt.set_ftol_abs(tol["ftol_abs"])
    opt.set_xtol_rel(tol["xtol_rel"])
    opt.set_xtol_abs(np.full(k, tol["xtol_abs"]))
    opt.set_maxeval(maxfev)
    try:
        opt.optimize(np.asarray(x0, dtype=float))
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:  # the best point so far is as good as the arithmetic allows
        code = nlopt.SUCCESS
    converged = code in (nlopt.SUCCESS, nlopt.FTOL_REACHED, nlopt.XTOL_REACHED, nlopt.STOPVAL_REACHED)
    return best["x"], best["f"], converged, f"nlopt BOBYQA return code {code}"


def _simplex(x: np.ndarray, lower: np.ndarray, step: float = 0.01) -> np.ndarray:
    pts = [x.copy()]
    for i in range(len(x)):
        y = x.copy()
        h = step * max(abs(x[i]), 0.1)
        y[i] = x[i] + h if x[i] - h < lower[i] else x[i] - h
        pts.append(y)
    return np.array(pts)


def fd_gradient(fun: Callable[[np.ndarray], float], x: np.ndarray, lower: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central-difference gradient, one-sided at a lower bound."""
    g = np.zeros_like(x)
    f0 = fun(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        step = h * max(1.0, abs(x[i]))
        e[i] = step
        if x[i] - step < lower[i]:
            g[i] = (fun(x + e) - f0) / step
        else:
            g[i] = (fun(x + e) - fun(x - e)) / (2 * step)
    return g


def fd_hessian(fun: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference Hessian (steps scaled by max(1, |x_i|))."""
    return fd_derivatives(fun, x, h)[1]


def fd_derivatives(fun: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4, f0: float | None = None):
    """Central-difference gradient and Hessian from one set of 1 + 2k + k(k−1) evaluations.

    Off-diagonal terms use f(x ± e_i ± e_j) along the diagonal directions only,
    H_ij = [f(x+e_i+e_j) − f(x+e_i) − f(x+e_j) + 2f(x) − f(x−e_i) − f(x−e_j) + f(x−e_i−e_j)] / (2 h_i h_j),
    which is second-order accurate and reuses the evaluations of the diagonal. ``f0`` is f(x)
    when the caller has it."""
    k = len(x)
    steps = h * np.maximum(1.0, np.abs(x))
    E = np.diag(steps)
    f0 = fun(x) if f0 is None else f0
    fp = np.array([fun(x + E[i]) for i in range(k)])
    fm = np.array([fun(x - E[i]) for i in range(k)])
    g = (fp - fm) / (2 * steps)
    H = np.diag((fp - 2 * f0 + fm) / steps**2)
    for i in range(k):
        for j in range(i):
            fpp, fmm = fun(x + E[i] + E[j]), fun(x - E[i] - E[j])
            H[i, j] = H[j, i] = (fpp - fp[i] - fp[j] + 2 * f0 - fm[i] - fm[j] + fmm) / (2 * steps[i] * steps[j])
    return g, H


def gradient_derivatives(fun_grad, x: np.ndarray, lower=None, h: float = 1e-5, central: bool = False, g0=None):
    """(gradient, Hessian) from an exact gradient: the Hessian by differences of it, forward
    (k + 1 gradients; error O(h), and the gradient's noise over h) or ``central`` (2k + 1; error
    O(h²)), steps h·max(1, |x_i|), symmetrised."""
    g0 = fun_grad(x)[1] if g0 is None else g0
    k = len(x)
    H = np.empty((k, k))
    for i in range(k):
        step = h * max(1.0, abs(x[i]))
        e = np.zeros(k)
        e[i] = step
        if central:
            H[:, i] = (fun_grad(x + e)[1] - fun_grad(x - e)[1]) / (2 * step)
        else:
            H[:, i] = (fun_grad(x + e)[1] - g0) / step
    return g0, 0.5 * (H + H.T)


def gradient_size(
    fun, x: np.ndarray, lower: np.ndarray, hessian: np.ndarray | None = None, gradient: np.ndarray | None = None
) -> tuple[float, str]:
    """lme4's convergence measure at x: the gradient scaled by the Hessian's Cholesky factor,
    L⁻¹g with H = LL' (dimensionless, so it does not grow with n), over the coordinates not held
    at a bound; the raw gradient if the Hessian is not positive definite."""
    free = ~((x - lower) < 1e-6)
    if not free.any():
        return 0.0, "gradient"
    if hessian is None:
        g, H = fd_derivatives(fun, x)
    else:
        g = fd_gradient(fun, x, lower) if gradient is None else gradient
        H = hessian
    g, H = g[free], H[np.ix_(free, free)]
    # LAPACK's own calls: numpy's wrappers cost ~10 µs each on these few θ, twice a small fit
    L, info = lapack.dpotrf(H, lower=1, clean=1) if np.all(np.isfinite(H)) else (None, 1)
    if info == 0:
        scaled, info = lapack.dtrtrs(L, g, lower=1)
        if info == 0:
            return float(np.max(np.abs(scaled))), "scaled gradient"
    return float(np.max(np.abs(g))), "gradient"


def check_convergence(
    fun: Callable[[np.ndarray], float],
    opt: OptResult,
    lower: np.ndarray,
    tol: float = 2e-3,
    hessian: np.ndarray | None = None,
    gradient: np.ndarray | None = None,
) -> list[str]:
    """Warn, as lme4 does, when :func:`gradient_size` at the optimum exceeds ``tol``.

    An optimizer's own stopping message (L-BFGS-B's line-search note, say) is passed on only when
    the gradient confirms a problem."""
    msgs = []
    size, what = gradient_size(fun, opt.x, lower, hessian, gradient)
    if size > tol:
        said = "" if opt.converged else f" (the optimizer, {opt.optimizer}, reported: {opt.message})"
        msgs.append(
            f"the {what} at the optimum is {size:.2g} (tolerance {tol}){said}; "
            "the fit may not be at the optimum: rescale predictors or try optimizer='nelder-mead'"
        )
    for m in msgs:
        warnings.warn("model failed to converge: " + m, ConvergenceWarning, stacklevel=4)
    return msgs


def restart_if_unconverged(
    fun, opt: OptResult, lower: np.ndarray, hessian, gradient, tol: float = 2e-3, optimizer="nelder-mead", **options
):
    """When BOBYQA stops where the gradient check fails (it can stop early on a step that gains
    little, or on a rough patch of the objective), restart from there with ``optimizer`` and keep
    the better point. Returns (opt, restarted)."""
    if opt.optimizer != "bobyqa" or gradient_size(fun, opt.x, lower, hessian, gradient)[0] <= tol:
        return opt, False
    again = minimize_bounded(fun, opt.x, lower, optimizer, **options)
    if again.fun < opt.fun:
        return OptResult(
            again.x, again.fun, opt.nfev + again.nfev, again.converged, again.message, f"bobyqa+{optimizer}"
        ), True
    return opt, False


def newton_step(fun, opt: OptResult, lower: np.ndarray, gradient: np.ndarray, hessian: np.ndarray) -> OptResult:
    """One Newton step x − H⁻¹g over the coordinates not held at a bound, from the derivatives the
    convergence check computed, kept only if it lowers ``fun``.

    A derivative-free optimizer stops when its steps or gains become small, not when the gradient
    vanishes; near the optimum the quadratic model is accurate, so this step takes x to the
    precision of the finite differences for one evaluation."""
    free = (opt.x - lower) >= 1e-6
    if not free.any():
        return opt
    g, H = gradient[free], hessian[np.ix_(free, free)]
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
        return opt
    if lapack.dpotrf(H, lower=1)[1] != 0:  # not positive definite: no minimum of the quadratic model
        return opt
    step = np.linalg.solve(H, g)  # numpy's: scipy's cho_factor/cho_solve checks cost more than k ≤ 10 needs
    if not np.all(np.isfinite(step)) or np.max(np.abs(step) / (1.0 + np.abs(opt.x[free]))) > 1e-2:
        return opt  # not a local correction: the quadratic model is not to be trusted that far
    x = opt.x.copy()
    x[free] = np.maximum(x[free] - step, lower[free])
    fx = float(fun(x))
    if fx < opt.fun:
        return OptResult(x, fx, opt.nfev + 1, opt.converged, opt.message, opt.optimizer)
    return opt


#: a bounded θ element this close to its bound is on it (lme4's isSingular tolerance)
SINGULAR_TOL = 1e-4


def is_singular(theta: np.ndarray, lower: np.ndarray, tol: float = SINGULAR_TOL) -> bool:
    """lme4's ``isSingular``: some θ element with a zero lower bound is within ``tol`` of it."""
    bounded = np.isfinite(lower)
    return bool(np.any(theta[bounded] - lower[bounded] < tol))
