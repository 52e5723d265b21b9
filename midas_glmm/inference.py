"""Inference after a fit: likelihood-ratio tests, denominator degrees of freedom, profile and
bootstrap intervals, simulation.

* :func:`compare` (alias :func:`anova`) — lme4's ``anova(m1, m2)``: REML fits are refitted by ML.
* :func:`coef_table` — Wald z (the seed's default), Satterthwaite (as lmerTest) or Kenward–Roger
  (as pbkrtest) t tests of the fixed effects.
* :func:`profile_ci` — lme4's ``confint(method = "profile")``, for LMMs and GLMMs.
* :func:`bootstrap_ci`, :func:`simulate` — parametric bootstrap, as lme4's ``bootMer``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.optimize as so
from scipy import stats

from .errors import BoundaryTestWarning, ConvergenceWarning, FitError, RefitWarning, did_you_mean
from .optimize import fd_hessian, minimize_bounded
from .reterms import ThetaMap

__all__ = [
    "compare",
    "anova",
    "coef_table",
    "satterthwaite_df",
    "kenward_roger",
    "profile_ci",
    "bootstrap_ci",
    "simulate",
    "check_level",
    "check_count",
    "select_names",
]


def check_level(level, name: str = "level", example: str = "0.95 for 95% intervals") -> float:
    """``level`` (or ``alpha``) as a float in (0, 1), or a FitError saying what was meant."""
    try:
        value = float(level)
    except (TypeError, ValueError):  # not a number at all
        raise FitError(f"{name} must be a number in (0, 1), e.g. {example}, not {level!r}") from None
    if not 0 < value < 1:
        percent = 1 < value <= 50 if name == "alpha" else 50 <= value < 100
        hint = f"; did you mean {value / 100:g}?" if percent else ""
        raise FitError(f"{name} must be in (0, 1), e.g. {example}, not {level!r}{hint}")
    return value


def check_count(value, name: str) -> int:
    """``value`` as a positive integer, or a FitError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise FitError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _rng(seed) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):  # numpy's message speaks of SeedSequence entropy
        raise FitError(f"seed must be None, a non-negative integer or a numpy Generator, not {seed!r}") from None


def select_names(which, names: list[str], method: str, res=None) -> list[str]:
    """The parameter names ``which`` asks for (all when None), in table order; a FitError with a
    did-you-mean for a name the table does not have."""
    if which is None:
        return list(names)
    wanted = [which] if isinstance(which, str) else list(which)
    for name in wanted:
        if name in names:
            continue
        hint = ""
        if method == "wald" and res is not None and name in _sdcor_names(res):
            hint = f"; Wald intervals cover the fixed effects only: use method='profile' or 'bootstrap' for '{name}'"
        msg = f"conf_int(method='{method}'): no parameter '{name}'{did_you_mean(str(name), names)}{hint}"
        raise FitError(f"{msg}{'' if msg.endswith('?') else '.'} The names are: {', '.join(names)}")
    return [n for n in names if n in wanted]


# --------------------------------------------------------------------------- model comparison
def _fixed_signature(res) -> tuple:
    return tuple(res.design.fixed_names)


def compare(*results, refit: bool = True) -> pd.DataFrame:
    """Likelihood-ratio table for nested models, as lme4's ``anova(m1, m2, ...)``.

    REML fits are refitted by ML (with a :class:`RefitWarning`) unless ``refit=False``, which is
    allowed only when all fits are REML with the same fixed effects (comparing random effects).

    Returns
    -------
    DataFrame
        Rows ordered by number of parameters; columns npar, AIC, BIC, logLik, deviance, Chisq,
        Df, Pr(>Chisq). As in lme4's table, "deviance" is −2 logLik (:attr:`minus2llf`), which
        for a GLMM is not the sum of unit deviances that ``res.deviance`` returns.
    """
    if len(results) < 2:
        raise FitError("compare() needs at least two fitted models")
    for r in results:
        if not hasattr(r, "llf") or not hasattr(r, "design"):
            raise FitError(f"compare() takes fitted models (the results of fit()), not {type(r).__name__}")
    n = {r.nobs for r in results}
    if len(n) > 1:
        raise FitError(
            f"models were fitted to different numbers of observations {sorted(n)}; compare fits on the same rows"
        )
    resp = {r.design.response_name for r in results}
    if len(resp) > 1:
        raise FitError(f"models have different responses {sorted(resp)}; they cannot be compared")
    fits = list(results)
    families = {r.family.name for r in fits}
    inflated = {r.design.zi.formula if r.design.zi is not None else None for r in fits}
    if None in inflated and len(inflated) > 1:
        warnings.warn(
            "a model without zero-inflation is the zero-inflated one at pi = 0, where the zero-inflation's "
            "logit is at minus infinity, on the boundary of its parameter space: the chi-square p-value is "
            "conservative",
            BoundaryTestWarning,
            stacklevel=2,
        )
    if len(families) > 1:
        if families not in ({"poisson", "nbinom2"}, {"poisson", "nbinom1"}):
            raise FitError(
                f"models of different families ({', '.join(sorted(families))}) are not nested: a likelihood-ratio "
                "test needs one model to be a special case of the other (Poisson within nbinom2 or nbinom1 is)"
            )
        warnings.warn(
            "Poisson is the negative binomial model at its dispersion's limit (nbinom2: theta = infinity, nbinom1: "
            "phi = 0), on the boundary of its parameter space: "
            "the chi-square p-value is conservative (the null distribution is a 50:50 mixture of 0 and chi-square(1); "
            "halve the p-value for it)",
            BoundaryTestWarning,
            stacklevel=2,
        )
    if any(r.is_reml for r in fits):
        same_fixed = len({_fixed_signature(r) for r in fits}) == 1 and all(r.is_reml for r in fits)
        if refit or not same_fixed:
            if not refit:
                warnings.warn(
                    "REML fits with different fixed effects cannot be compared by their REML criteria; refitting by ML",
                    RefitWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn(
                    "refitting REML fit(s) with ML for the likelihood-ratio test (as lme4's anova)",
                    RefitWarning,
                    stacklevel=2,
                )
            fits = [r.refit(method="ML") if r.is_reml else r for r in fits]
    order = sorted(range(len(fits)), key=lambda i: fits[i].df_modelwc)
    rows = []
    prev = None
    for i in order:
        r = fits[i]
        row = {
            "model": _model_label(r, len(families) > 1, len(inflated) > 1),
            "npar": r.df_modelwc,
            "AIC": r.aic(),
            "BIC": r.bic(),
            "logLik": r.llf,
            "deviance": r.minus2llf,
            "Chisq": np.nan,
            "Df": np.nan,
            "Pr(>Chisq)": np.nan,
        }
        if prev is not None:
            chisq = max(2 * (r.llf - prev.llf), 0.0)
            df = r.df_modelwc - prev.df_modelwc
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": stats.chi2.sf(chisq, df) if df > 0 else np.nan})
        rows.append(row)
        prev = r
    return pd.DataFrame(rows).set_index("model")


anova = compare


def _model_label(r, family: bool, zi: bool) -> str:
    """A row name of compare()'s table: the formula, with the family and the ziformula where
    the models differ in them."""
    label = r.design.formula + (f" [{r.family.name}]" if family else "")
    if zi:
        label += f" zi {r.design.zi.formula}" if r.design.zi is not None else " (no zi)"
    return label


# --------------------------------------------------------------------------- degrees of freedom
def _require_lmm(res, what: str) -> None:
    if not res.family.is_lmm:
        raise FitError(
            f"{what} is defined for linear mixed models; for a GLMM use ddf='normal' (Wald z) or a parametric bootstrap"
        )


def _varpar_functions(res):
    """Unprofiled criterion D(θ, σ) and the covariance V(θ, σ) of β̂, as functions of (θ, σ)."""
    from .lmm import lmm_criterion

    crit, S = lmm_criterion(res.design, res.is_reml)

    def V(par):
        L = crit.factor(par[:-1])
        return par[-1] ** 2 * S @ L.vcov_beta_unscaled() @ S.T

    def D(par):
        return crit.unprofiled(par[:-1], par[-1])

    return np.concatenate([res.theta, [res.sigma]]), D, V


def satterthwaite_parts(res) -> tuple[np.ndarray, list[np.ndarray]]:
    """(A, [∂V/∂φ_k]): A = 2 H⁻¹ the asymptotic covariance of the variance parameters φ = (θ, σ)
    from the Hessian H of the (REML or ML) deviance, and the Jacobian of the covariance V(φ) of
    β̂ by central differences — what every Satterthwaite df needs; computed once per fit."""
    cache = res.__dict__.setdefault("_anova_cache", {})
    if "satt" not in cache:
        _require_lmm(res, "Satterthwaite's approximation")
        par, D, V = _varpar_functions(res)
        A = 2.0 * np.linalg.pinv(fd_hessian(D, par, h=1e-3))
        steps = 1e-5 * np.maximum(1.0, np.abs(par))
        jac = []
        for i in range(len(par)):
            e = np.zeros_like(par)
            e[i] = steps[i]
            jac.append((V(par + e) - V(par - e)) / (2 * steps[i]))
        cache["satt"] = (A, jac)
    return cache["satt"]


def satterthwaite_df(res) -> np.ndarray:
    """Satterthwaite degrees of freedom per fixed effect (lmerTest's method).

    df_j = 2 V_jj² / (∇V_jj' A ∇V_jj), with V(θ, σ) the covariance of β̂ and A = 2 H⁻¹ the
    asymptotic covariance of (θ̂, σ̂) from the Hessian H of the (REML or ML) deviance."""
    A, jac = satterthwaite_parts(res)
    grads = np.array([np.diag(J) for J in jac])
    v = np.diag(res.vcov().to_numpy())
    return 2 * v**2 / np.einsum("ij,ik,kj->j", grads, A, grads)


def _dense_Z(term, n):
    Z = np.zeros((n, term.q))
    for a in range(term.p):
        Z[np.arange(n), term.codes * term.p + a] = term.Zcols[:, a]
    return Z


KR_MAX_ROWS = 5000


def kenward_roger_parts(res) -> dict:
    """Kenward–Roger (1997): the pieces every hypothesis's df and adjusted covariance need.

    Σ = Σ_r φ_r G_r (variances and covariances of each term, and the residual variance);
    Φ = (X'Σ⁻¹X)⁻¹, P_r = X'Σ⁻¹G_rΣ⁻¹X, Q_rs = X'Σ⁻¹G_rΣ⁻¹G_sΣ⁻¹X, W = 2[tr(ΠG_rΠG_s)]⁻¹,
    Φ_A = Φ + 2Φ[Σ W_rs (Q_rs − P_rΦP_s)]Φ; a hypothesis L's df follow KR's moment matching
    (anova._kr_ddf). Uses dense n × n matrices, so it is limited to n ≤ 5000 (use Satterthwaite
    beyond).

    Returns
    -------
    dict with Phi, PhiA (adjusted covariance), P (list), W
    """
    _require_lmm(res, "the Kenward-Roger approximation")
    from .daskdata import check_available

    check_available(res.design, "Kenward-Roger")
    d = res.design
    n = d.nobs
    if n > KR_MAX_ROWS:
        raise FitError(
            f"Kenward-Roger needs dense {n} x {n} matrices; it is available up to {KR_MAX_ROWS} rows. "
            "Use ddf='satterthwaite'"
        )
    X = d.X
    Gs, phis = [], []
    for t, Sig in zip(d.terms, res.term_covariances()):
        Z = _dense_Z(t, n)
        for a in range(t.p):
            for b in range(a + 1):
                E = np.zeros((t.p, t.p))
                E[a, b] = E[b, a] = 1.0
                Zk = Z @ np.kron(np.eye(t.nlevels), E)
                Gs.append((Zk, Z))
                phis.append(Sig[a, b])
    w = d.weights if d.has_prior_weights else np.ones(n)
    Sigma = sum(phi * (A @ B.T) for phi, (A, B) in zip(phis, Gs)) + res.sigma**2 * np.diag(1 / w)
    Sinv = np.linalg.inv(Sigma)
    Sinv = (Sinv + Sinv.T) / 2
    SiG = [Sinv @ A @ B.T for A, B in Gs] + [Sinv / w[None, :]]
    SiX = Sinv @ X
    Phi = np.linalg.inv(X.T @ SiX)
    U = [M @ SiX for M in SiG]
    P = [X.T @ u for u in U]
    k = len(SiG)
    Q = [[X.T @ SiG[r] @ U[s] for s in range(k)] for r in range(k)]
    IE = np.empty((k, k))
    for r in range(k):
        for s in range(k):
            IE[r, s] = 0.5 * (
                np.sum(SiG[r] * SiG[s].T) - 2 * np.trace(Phi @ Q[r][s]) + np.trace(Phi @ P[r] @ Phi @ P[s])
            )
    W = np.linalg.inv(IE)
    adj = sum(W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s]) for r in range(k) for s in range(k))
    PhiA = Phi + 2 * Phi @ adj @ Phi
    PhiA = (PhiA + PhiA.T) / 2
    return {"Phi": Phi, "PhiA": PhiA, "P": P, "W": W}


def kenward_roger(res) -> tuple[np.ndarray, np.ndarray]:
    """Kenward–Roger df per fixed effect and the adjusted covariance of β̂ (see
    :func:`kenward_roger_parts`)."""
    from .anova import _kr_ddf

    parts = kenward_roger_parts(res)
    p = parts["Phi"].shape[0]
    df = np.array([_kr_ddf(parts, np.eye(p)[[j]], 1) for j in range(p)])
    return df, parts["PhiA"]


def _kr_df(A1: float, A2: float, ell: int) -> float:
    """Kenward & Roger's denominator df from A1, A2 for a hypothesis of rank ℓ."""
    B = (A1 + 6 * A2) / (2 * ell)
    g = ((ell + 1) * A1 - (ell + 4) * A2) / ((ell + 2) * A2)
    den = 3 * ell + 2 * (1 - g)
    c1, c2, c3 = g / den, (ell - g) / den, (ell + 2 - g) / den
    E = 1 / (1 - A2 / ell)
    V = 2 / ell * (1 + c1 * B) / ((1 - c2 * B) ** 2 * (1 - c3 * B))
    rho = V / (2 * E**2)
    return 4 + (ell + 2) / (ell * rho - 1)


def coef_table(res, ddf: str = "normal", level: float = 0.95) -> pd.DataFrame:
    """Fixed-effects table: estimate, std_err, df, statistic, p_value, ci_low, ci_high.

    Parameters
    ----------
    ddf : {"normal", "satterthwaite", "kenward-roger"}
        ``"normal"``: Wald z with df = inf (the seed's default). The others: t tests with
        lmerTest's Satterthwaite or pbkrtest's Kenward–Roger df (Kenward–Roger also adjusts the SE).
    """
    level = check_level(level)
    key = str(ddf).lower().replace("_", "-")
    se = res.bse.to_numpy()
    if key == "normal":
        df = np.full(len(se), np.inf)
    elif key == "satterthwaite":
        df = satterthwaite_df(res)
    elif key in ("kenward-roger", "kr"):
        df, V = kenward_roger(res)
        se = np.sqrt(np.diag(V))
    else:
        raise FitError(f"unknown ddf '{ddf}'; choose 'normal', 'satterthwaite' or 'kenward-roger'")
    return t_frame(res.params.to_numpy(), se, df, level, index=res.params.index)


def t_frame(est, se, df, level: float, index=None) -> pd.DataFrame:
    """estimate, std_err, df, statistic, p_value, ci_low, ci_high of t tests (z where df = inf)."""
    est, se, df = (np.asarray(v, dtype=float) for v in (est, se, df))
    stat = est / se
    finite = np.isfinite(df)
    dfs = np.where(finite, df, 1.0)
    p = np.where(finite, 2 * stats.t.sf(np.abs(stat), dfs), 2 * stats.norm.sf(np.abs(stat)))
    q = np.where(finite, stats.t.ppf(0.5 + level / 2, dfs), stats.norm.ppf(0.5 + level / 2))
    return pd.DataFrame(
        {
            "estimate": est,
            "std_err": se,
            "df": df,
            "statistic": stat,
            "p_value": p,
            "ci_low": est - q * se,
            "ci_high": est + q * se,
        },
        index=index,
    )


# --------------------------------------------------------------------------- profile intervals
def _sdcor_names(res) -> list[str]:
    names = []
    for t in res.design.terms:
        for c in range(t.p):
            for r in range(c, t.p):
                if r == c:
                    names.append(f"sd_{t.columns[r]}|{t.group_name}")
                else:
                    names.append(f"cor_{t.columns[r]}.{t.columns[c]}|{t.group_name}")
    return names + ["sigma"]


def _interval_names(res, method: str) -> list[str]:
    """Row names of the profile or bootstrap table: SDs and correlations (lme4's names with
    ``oldNames = FALSE``), sigma where the family has a scale, and the fixed effects."""
    varpar = _sdcor_names(res)[:-1] + (["sigma"] if res.family.has_dispersion else [])
    fixed = list(res.params.index)
    return varpar + fixed if method == "profile" else fixed + varpar


def _sdcor_from_theta(res, theta, sigma) -> np.ndarray:
    out = []
    for t, lam in zip(res.design.terms, ThetaMap(res.design.terms).lams(theta)):
        Sig = sigma**2 * lam @ lam.T
        sd = np.sqrt(np.diag(Sig))
        for c in range(t.p):
            for r in range(c, t.p):
                out.append(sd[r] if r == c else (Sig[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
    return np.array(out + [sigma])


def _theta_from_sdcor(res, v) -> np.ndarray:
    sigma = v[-1]
    out, i = [], 0
    for t in res.design.terms:
        p = t.p
        sd, R = np.zeros(p), np.eye(p)
        for c in range(p):
            for r in range(c, p):
                if r == c:
                    sd[r] = v[i]
                else:
                    R[r, c] = R[c, r] = v[i]
                i += 1
        Sig = np.outer(sd, sd) * R
        try:
            lam = np.linalg.cholesky(Sig + 1e-14 * np.eye(p) * max(1.0, np.max(np.abs(Sig))))
        except np.linalg.LinAlgError:
            return None
        lam /= sigma
        rows, cols = np.tril_indices(p)
        order = np.lexsort((rows, cols))
        out.extend(lam[rows[order], cols[order]])
    return np.array(out)


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
    if res.design.zi is not None:
        raise FitError(
            "profile intervals are not available for zero-inflated models yet; use method='wald' "
            "(zi_bse for the zero-inflation part) or method='bootstrap'"
        )
    which = select_names(which, _interval_names(res, "profile"), "profile")
    if not res.family.is_lmm:
        return _profile_glmm(res, level, which)
    fixed = [nm for nm in which if nm in res.params.index]
    if res.design.source is not None and fixed:
        varpar = [nm for nm in which if nm not in fixed]
        raise FitError(
            f"profiling the fixed effects ({', '.join(fixed)}) needs further passes over the rows, not "
            "available for Dask data yet; profile the variance parameters alone with "
            f"which={varpar or _interval_names(res, 'profile')[: -len(res.params)]}, or use Wald intervals"
        )
    from .lmm import lmm_criterion

    if res.is_reml:  # as lme4: the profile is of the ML deviance, around the ML fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = res.refit(method="ML")
    z = stats.norm.ppf(0.5 + level / 2)
    crit, _ = lmm_criterion(res.design, REML=False)
    names = _sdcor_names(res)
    v_hat = _sdcor_from_theta(res, res.theta, res.sigma)
    kinds = []
    for nm in names:
        kinds.append("cor" if nm.startswith("cor_") else "sd")

    def dev_v(v):
        th = _theta_from_sdcor(res, v)
        if th is None or v[-1] <= 0:
            return np.inf
        return crit.unprofiled(th, v[-1])

    dev_hat = dev_v(v_hat)
    lo_b = np.array([-1.0 if k == "cor" else 0.0 for k in kinds])
    hi_b = np.array([1.0 if k == "cor" else np.inf for k in kinds])
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
        best = None
        for x0 in (start[free], v_hat[free]):
            x0 = np.array(x0, dtype=float)
            x0[logs] = np.log(x0[logs])
            x0 = np.maximum(x0, lower)
            # BOBYQA, as lme4's profile: derivative-free steps on the smooth deviance (finite-
            # difference gradients cost more evaluations than they save)
            r = minimize_bounded(f, x0, lower, "bobyqa", step=0.05, tolerances=PROFILE_STOP)
            if best is None or r.fun < best.fun:
                best = r
            if np.isfinite(best.fun):
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
    from .daskdata import check_available
    from .pirls import GLMMProblem

    check_available(res.design, "profile intervals of a GLMM")
    z = stats.norm.ppf(0.5 + level / 2)
    prob = GLMMProblem(res.design, res.family, standardize_X=True)
    Sinv = np.linalg.inv(prob.S)
    disp = res.family.has_dispersion
    names = _sdcor_names(res)[:-1] + (["sigma"] if disp else []) + list(res.params.index)
    k_var = len(_sdcor_names(res)) - 1
    sd_hat = _sdcor_from_theta(res, res.theta, 1.0)[:-1]
    # the dispersion is profiled on the scale reported as sigma (Family.sigma_of)
    v_hat = np.concatenate([sd_hat, [res.sigma] if disp else [], res.params.to_numpy()])
    kinds = [("cor" if nm.startswith("cor_") else "sd") for nm in names[:k_var]] + (["sigma"] if disp else [])
    lo_b = np.array([-1.0 if k == "cor" else 0.0 for k in kinds] + [-np.inf] * len(res.params))
    hi_b = np.array([1.0 if k == "cor" else np.inf for k in kinds] + [np.inf] * len(res.params))
    if disp:
        lo_b[k_var] = 1e-8

    def dev(v):
        th = _theta_from_sdcor(res, np.concatenate([v[:k_var], [1.0]]))
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
            if np.isfinite(d):
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
                limit = so.brentq(excess, min(a, b), max(a, b), xtol=1e-9 * max(1.0, abs(v_hat)))
                break
            a, step = b, step * 2
        limits.append(limit)
    return limits


# --------------------------------------------------------------------------- simulation, bootstrap
def simulate(res, n: int = 1, seed=None, random_effects: str = "marginal") -> np.ndarray:
    """Responses simulated from the fitted model, an ``nobs × n`` array.

    ``random_effects="marginal"`` draws new random effects b ~ N(0, Σ) (lme4's default
    ``use.u = FALSE``); ``"conditional"`` keeps the fitted ones."""
    if random_effects not in ("marginal", "conditional"):
        raise FitError(f"random_effects must be 'marginal' or 'conditional', not {random_effects!r}")
    n = check_count(n, "n")
    from .daskdata import check_available

    check_available(res.design, "simulation (and the bootstrap)")
    rng = _rng(seed)
    d = res.design
    eta_fixed = d.X @ res.params.to_numpy() + d.offset
    out = np.empty((d.nobs, n))
    covs = res.term_covariances()
    for k in range(n):
        eta = eta_fixed.copy()
        for t, Sig, b_hat in zip(d.terms, covs, res._est.b):
            if random_effects == "marginal":
                lam = np.linalg.cholesky(Sig + 1e-300 * np.eye(t.p)) if np.all(np.diag(Sig) > 0) else _psd_root(Sig)
                b = rng.standard_normal((t.nlevels, t.p)) @ lam.T
            else:
                b = b_hat
            eta += np.einsum("ij,ij->i", t.Zcols, b[t.codes])
        out[:, k] = _draw_response(res, eta, rng)
        if d.zi is not None:  # structural zeros with probability π
            out[rng.random(d.nobs) < res.zi_probability(), k] = 0.0
    return out


def _psd_root(S):
    w, V = np.linalg.eigh(S)
    return V * np.sqrt(np.maximum(w, 0))


def _draw_response(res, eta, rng):
    fam, d = res.family, res.design
    mu = eta if fam.is_lmm else fam.linkinv(eta)
    if fam.name == "gaussian":  # any link
        w = d.weights if d.has_prior_weights else 1.0
        return mu + rng.standard_normal(len(mu)) * res.sigma / np.sqrt(w)
    if fam.name == "binomial":
        n = d.weights if d.trials is None else d.trials
        return rng.binomial(np.round(n).astype(int), mu) / np.where(n > 0, n, 1)
    if fam.name == "poisson":
        return rng.poisson(mu).astype(float)
    if fam.name == "gamma":
        shape = d.weights / res.dispersion
        return rng.gamma(shape, mu / shape)
    if fam.name == "nbinom2":  # size θ, mean μ: numpy's (n, p) = (θ, θ/(θ+μ))
        size = res.dispersion
        return rng.negative_binomial(size, size / (size + mu)).astype(float)
    if fam.name == "nbinom1":  # size μ/φ, p = 1/(1+φ): mean μ, variance μ(1+φ)
        phi = res.dispersion
        return rng.negative_binomial(mu / phi, 1.0 / (1.0 + phi)).astype(float)
    if fam.name == "beta":
        phi = res.dispersion
        return np.clip(rng.beta(mu * phi, (1.0 - mu) * phi), 1e-12, 1 - 1e-12)
    raise FitError(f"simulation is not available for the {fam.name} family")


def bootstrap_ci(
    res,
    n_boot: int = 200,
    seed=None,
    level: float = 0.95,
    progress: bool = False,
    n_jobs: int = 1,
    which=None,
) -> pd.DataFrame:
    """Parametric bootstrap percentile intervals (as lme4's ``confint(method = "boot")``).

    Responses are simulated from the fit (new random effects each time), the model is refitted
    with the settings of the original fit (``res.fit_options``: method, nAGQ, fast, optimizer),
    and the ``(1−level)/2`` and ``(1+level)/2`` quantiles of the refitted fixed effects and
    variance components (and sigma, √φ for Gamma) are reported. ``n_jobs > 1`` refits in
    parallel processes; ``progress=True`` shows a progress bar when tqdm is installed. Refits that
    fail numerically are left out with a :class:`ConvergenceWarning` (as ``bootMer`` counts its
    failures); ``attrs["n_ok"]`` holds the number used."""
    level = check_level(level)
    names = _interval_names(res, "bootstrap")
    which = select_names(which, names, "bootstrap")
    n_boot = check_count(n_boot, "n_boot")
    ysim = simulate(res, n_boot, seed=seed)
    tasks = [ysim[:, k] for k in range(n_boot)]
    spec = (res.design, res.family, res.fit_options)  # not the results: only what a refit needs
    if n_jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=n_jobs) as ex:
            outcomes = list(_progress(ex.map(_boot_one, [spec] * n_boot, tasks), n_boot, progress))
    else:
        outcomes = [_boot_one(spec, y) for y in _progress(tasks, n_boot, progress)]
    failures = [o for o in outcomes if isinstance(o, str)]
    if len(failures) == n_boot:
        raise FitError(f"every bootstrap refit failed; the first: {failures[0]}")
    if failures:
        warnings.warn(
            f"{len(failures)} of {n_boot} bootstrap refits failed and are left out (the first: {failures[0]})",
            ConvergenceWarning,
            stacklevel=2,
        )
    arr = np.array([o for o in outcomes if not isinstance(o, str)])
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(arr, [alpha, 1 - alpha], axis=0)
    out = pd.DataFrame({"lower": lo, "upper": hi}, index=names).loc[which]
    out.attrs["n_ok"] = len(arr)
    return out


def _boot_one(spec, y):
    """Refit (design, family, fit options) to the simulated response y: the statistics, in the
    order of the bootstrap table, or the reason the refit failed."""
    from .model import MixedModel

    design, family, options = spec
    model = MixedModel.__new__(MixedModel)
    model.design, model.family = _with_response(design, y), family
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = model.fit(**options)
        except (np.linalg.LinAlgError, FloatingPointError, FitError) as exc:  # this sample's fit failed
            return f"{type(exc).__name__}: {exc}"
    sdcor = _sdcor_from_theta(r, r.theta, r.sigma if r.family.is_lmm else 1.0)[:-1]
    scale = [r.sigma] if r.family.has_dispersion else []
    return np.concatenate([r.params.to_numpy(), sdcor, scale])


def _with_response(design, y):
    from dataclasses import replace

    return replace(design, y=np.asarray(y, dtype=float))


def _progress(it, total, show):
    if not show:
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total)
