"""Profile-likelihood intervals, as lme4's ``confint(method = "profile")``.

Each parameter is held at values around its estimate while the deviance is minimised over the
others; the limits are where the signed root ζ = sign(v − v̂)·√(dev(v) − dev(v̂)) reaches ±z.
Variance parameters are SDs, correlations and σ (lme4's names with ``oldNames = FALSE``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..checks import check_level, refuse_dispersion_model, refuse_iterative, refuse_ordinal, select_names
from ..design.daskdata import check_available
from ..design.reterms import ThetaMap
from ..distributions import norm_ppf
from ..engine.lmm import lmm_criterion
from ..engine.optimize import minimize_bounded
from ..engine.pirls import GLMMProblem
from ..errors import FitError

__all__ = ["profile_ci", "interval_names", "PROFILE_STOP"]


def interval_names(res, method: str) -> list[str]:
    """Row names of the profile or bootstrap table (:meth:`ThetaMap.interval_names`)."""
    tm = ThetaMap(res.design.terms)
    return tm.interval_names(list(res.params.index), res.family.has_dispersion, fixed_first=method != "profile")


#: inner optimisations of a profile: the deviance to 1e-10 (ζ at the limits to ~1e-11)
PROFILE_STOP = {"ftol_abs": 1e-10, "xtol_rel": 1e-9}


def profile_ci(res, level: float = 0.95, which=None) -> pd.DataFrame:
    """Profile-likelihood intervals, as lme4's ``confint(method = "profile")``.

    The deviance is profiled over every other parameter; the limits are where the signed root
    ζ = sign(v − v̂)·sqrt(dev(v) − dev(v̂)) reaches ±z. Variance parameters are SDs, correlations
    and sigma (names as lme4's ``oldNames = FALSE``); fixed effects are profiled with the
    effect moved into the offset. As in lme4, a REML fit is profiled on the ML deviance.
    GLMMs are profiled on their Laplace (or AGQ) deviance over the SDs, correlations, fixed
    effects (and sigma = sqrt(φ) for Gamma). ``which`` names the parameters wanted (all by
    default). With Dask data only the variance parameters of an LMM can be profiled."""
    level = check_level(level)
    refuse_dispersion_model(res, "profile intervals", "use method='wald' (disp_bse for the dispersion coefficients)")
    refuse_ordinal(res, "profile intervals", "use method='wald' or method='bootstrap'")
    refuse_iterative(res, "profile intervals", "use method='wald'")
    if res.design.zi is not None:
        raise FitError(
            "profile intervals are not available for zero-inflated models yet; use method='wald' "
            "(zi_bse for the zero-inflation part) or method='bootstrap'"
        )
    which = select_names(which, interval_names(res, "profile"), "profile")
    if not res.family.is_lmm:
        return _profile_glmm(res, level, which)
    fixed = [nm for nm in which if nm in res.params.index]
    if res.design.source is not None and fixed:
        varpar = [nm for nm in which if nm not in fixed]
        raise FitError(
            f"profiling the fixed effects ({', '.join(fixed)}) needs further passes over the rows, not "
            "available for Dask data yet; profile the variance parameters alone with "
            f"which={varpar or interval_names(res, 'profile')[: -len(res.params)]}, or use Wald intervals"
        )
    if res.is_reml:  # as lme4: the profile is of the ML deviance, around the ML fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = res.refit(method="ML")
    z = norm_ppf(0.5 + level / 2)
    crit, _ = lmm_criterion(res.design, REML=False)
    tm = crit.tmap
    names = tm.sdcor_names()
    v_hat = tm.sdcor(res.theta, res.sigma)
    lo_b, hi_b = tm.sdcor_bounds()
    kinds = ["sd" if np.isinf(h) else "cor" for h in hi_b]

    def dev_v(v):
        th = tm.theta_from_sdcor(v)
        if th is None or v[-1] <= 0:
            return np.inf
        return crit.unprofiled(th, v[-1])

    dev_hat = dev_v(v_hat)
    lo_b[-1] = 1e-10 * max(res.sigma, 1e-300)

    def profiled_dev(i, value, start):
        """min over the other parameters of dev, with σ optimised on the log scale."""
        free = [k for k in range(len(v_hat)) if k != i]
        logs = np.array([k == len(v_hat) - 1 for k in free])

        def unpack(x):
            v = v_hat.copy()
            v[free] = np.where(logs, np.exp(np.minimum(x, 700)), x)
            v[i] = value
            return v

        def f(x):
            return dev_v(unpack(x))

        if not free:
            return f(np.zeros(0)), start
        lower = np.array([-np.inf if lg else lo_b[k] for k, lg in zip(free, logs)])
        upper = np.array([np.inf if lg else hi_b[k] for k, lg in zip(free, logs)])
        best = None
        for x0 in (start[free], v_hat[free]):
            x0 = np.array(x0, dtype=float)
            x0[logs] = np.log(x0[logs])
            # inside the bounds: a correlation left where its SD was held at 0 can be anything
            x0 = np.clip(x0, lower, upper)
            # BOBYQA, as lme4's profile: derivative-free steps on the smooth deviance (finite-
            # difference gradients cost more evaluations than they save)
            r = minimize_bounded(f, x0, lower, "bobyqa", step=0.05, tolerances=PROFILE_STOP)
            if best is None or r.fun < best.fun:
                best = r
            # a structured term's correlation can leave its SD unidentified (ar1 over one row
            # per time is the residual at ρ = 0): a warm start from there may stop on the flat
            # side, so both starts are run (an unstructured fit keeps the first that works)
            if np.isfinite(best.fun) and tm.linear:
                break
        return best.fun, unpack(best.x)

    rows = {}
    for i, nm in enumerate(names):
        if nm not in which:
            continue
        rows[nm] = _profile_limits(
            lambda val, start, i=i: profiled_dev(i, val, start),
            v_hat[i],
            v_hat,
            dev_hat,
            z,
            lo_b[i],
            hi_b[i],
            scale=max(abs(v_hat[i]), 0.1 if kinds[i] == "cor" else 1e-3 * res.sigma),
        )
    # fixed effects: β_j held at a value by moving it to the offset
    for j, nm in enumerate(res.params.index):
        if nm not in which:
            continue

        def dev_beta(val, start, j=j):
            cj, _ = lmm_criterion(res.design, REML=False, fix=(j, val))
            tm = cj.tmap
            r = minimize_bounded(
                cj, np.maximum(start, tm.lower), tm.lower, "bobyqa", step=0.05, tolerances=PROFILE_STOP
            )
            return r.fun, r.x

        rows[nm] = _profile_limits(
            dev_beta, res.params.iloc[j], res.theta, dev_hat, z, -np.inf, np.inf, scale=res.bse.iloc[j]
        )
    out = pd.DataFrame(rows, index=["lower", "upper"]).T
    return out


def _profile_glmm(res, level: float, which) -> pd.DataFrame:
    """Profile intervals of a GLMM: each parameter held at a value, the others re-optimised on
    the Laplace/AGQ deviance (every evaluation a PIRLS run, so this takes a while)."""
    check_available(res.design, "profile intervals of a GLMM")
    z = norm_ppf(0.5 + level / 2)
    prob = GLMMProblem(res.design, res.family, standardize_X=True)
    Sinv = np.linalg.inv(prob.S)
    disp = res.family.has_dispersion
    tm = prob.tmap
    names = tm.sdcor_names()[:-1] + (["sigma"] if disp else []) + list(res.params.index)
    k_var = len(tm.sdcor_names()) - 1
    sd_hat = tm.sdcor(res.theta, 1.0)[:-1]
    # the dispersion is profiled on the scale reported as sigma (Family.sigma_of)
    v_hat = np.concatenate([sd_hat, [res.sigma] if disp else [], res.params.to_numpy()])
    lo_v, hi_v = tm.sdcor_bounds()  # the SDs and correlations, then sigma's [0, ∞)
    extra = int(disp) - 1  # sigma's bound when the family has a dispersion, else nothing
    lo_b = np.concatenate([lo_v[: len(lo_v) + extra], np.full(len(res.params), -np.inf)])
    hi_b = np.concatenate([hi_v[: len(hi_v) + extra], np.full(len(res.params), np.inf)])
    if disp:
        lo_b[k_var] = 1e-8

    def dev(v):
        th = tm.theta_from_sdcor(np.concatenate([v[:k_var], [1.0]]))
        if th is None:
            return np.inf
        phi = res.family.dispersion_of(v[k_var]) if disp else 1.0
        return prob.objective(th, Sinv @ v[len(v) - len(res.params) :], phi, nAGQ=res.nAGQ)

    dev_hat = dev(v_hat)

    def profiled(i, value, start):
        free = np.array([k for k in range(len(v_hat)) if k != i])

        def f(x):
            v = start.copy()
            v[free] = x
            v[i] = value
            return dev(v)

        opt = minimize_bounded(
            f, start[free], lo_b[free], "bobyqa", step=0.1, tolerances={"ftol_abs": 1e-8, "xtol_rel": 1e-7}
        )
        out = start.copy()
        out[free] = opt.x
        out[i] = value
        return opt.fun, out

    rows = {}
    se = np.concatenate([np.maximum(np.abs(v_hat[: k_var + disp]) * 0.3, 0.05), res.bse.to_numpy()])
    for i, nm in enumerate(names):
        if nm not in which:
            continue
        rows[nm] = _profile_limits(
            lambda val, start, i=i: profiled(i, val, start), v_hat[i], v_hat, dev_hat, z, lo_b[i], hi_b[i], scale=se[i]
        )
    return pd.DataFrame(rows, index=["lower", "upper"]).T


def _profile_limits(dev_at, v_hat, start, dev_hat, z, lo, hi, scale):
    """Values below and above v̂ where sqrt(dev(v) − dev(v̂)) = z: bracket by doubling steps,
    then Brent's method; a parameter bound inside the interval is the limit itself."""
    limits = []
    for direction in (-1, 1):
        warm = [start]

        def excess(v, warm=warm):
            try:
                d, x = dev_at(v, warm[0])
            except (np.linalg.LinAlgError, FloatingPointError):  # a failed evaluation: outside the limit
                return np.inf
            if np.isfinite(d) and lo < v < hi:  # at a bound (an SD at 0) a correlation is anything: no warm start
                warm[0] = x
            return np.sqrt(max(d - dev_hat, 0.0)) - z if np.isfinite(d) else np.inf

        bound = lo if direction < 0 else hi
        a, step, limit = v_hat, scale, np.nan
        for _ in range(60):
            b = v_hat + direction * step
            if (b - bound) * direction >= 0:
                b = bound
                if excess(b) < 0:
                    limit = bound
                    break
            if excess(b) >= 0:
                warm[0] = start
                import scipy.optimize as so  # loaded when an interval is profiled

                limit = so.brentq(excess, min(a, b), max(a, b), xtol=1e-9 * max(1.0, abs(v_hat)))
                break
            a, step = b, step * 2
        limits.append(limit)
    return limits
