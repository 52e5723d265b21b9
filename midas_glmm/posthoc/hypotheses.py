"""Tests of the fixed effects: the coefficient table, and linear hypotheses Lβ = c — F tests with Satterthwaite or
Kenward–Roger denominator df for LMMs (lmerTest's ``contest`` / ``anova``), Wald chi-square tests
for GLMMs (car's ``Anova``), t tests per row, and ANOVA tables of type 1 and 3.

F test (Satterthwaite, lmerTest's method): with LVL' = P diag(d) P' (the q positive
eigenvalues), F = Σ_m (p_m'Lβ̂ − c_m)²/d_m / q; each direction m has
ν_m = 2d_m² / (g_m' A g_m), g_m the gradient of p_m'L V(φ) L'p_m in the variance parameters
φ = (θ, σ) and A their asymptotic covariance; the denominator df combine them as
E = Σ ν_m/(ν_m − 2), DenDF = 2E/(E − q) (2 if some ν_m ≤ 2). Kenward–Roger (pbkrtest): F from
the adjusted covariance Φ_A, DenDF from KR's moment matching for the rank-q hypothesis.

ANOVA contrasts: type 1 (sequential) — the rows of the Cholesky factor R of X'X (X'X = R'R)
for each term's columns (lmerTest's Doolittle rows, up to scaling); type 3 — each term's own
columns when no term contains another (and car's type 3 Wald tests for GLMMs), else lmerTest's
marginal hypotheses (:mod:`midas_glmm.design.type3`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..checks import check_level
from ..design.type3 import type3_contrasts
from ..distributions import chi2_sf, f_sf, norm_ppf, norm_sf, t_ppf, t_sf
from ..errors import FitError, did_you_mean
from .ddf import (
    KENWARD_ROGER,
    SATTERTHWAITE,
    WALD,
    kenward_roger,
    kenward_roger_parts,
    kr_hypothesis_df,
    parse_ddf,
    satterthwaite_df,
    satterthwaite_parts,
    test_method,
)

__all__ = ["coef_table", "t_frame", "contrast_test", "contrast_t", "anova_table", "drop1_table", "term_columns"]


def coef_table(res, ddf: str = "normal", level: float = 0.95) -> pd.DataFrame:
    """Fixed-effects table: estimate, std_err, df, statistic, p_value, ci_low, ci_high.

    Parameters
    ----------
    ddf : {"normal", "satterthwaite", "kenward-roger"}
        ``"normal"``: Wald z with df = inf (the seed's default). The others: t tests with
        lmerTest's Satterthwaite or pbkrtest's Kenward–Roger df (Kenward–Roger also adjusts the SE).
    """
    level = check_level(level)
    key = parse_ddf(ddf)
    se = res.bse.to_numpy()
    if key == WALD:
        df = np.full(len(se), np.inf)
    elif key == SATTERTHWAITE:
        df = satterthwaite_df(res)
    else:
        df, V = kenward_roger(res)
        se = np.sqrt(np.diag(V))
    return t_frame(res.params.to_numpy(), se, df, level, index=res.params.index)


def t_frame(est, se, df, level: float, index=None) -> pd.DataFrame:
    """estimate, std_err, df, statistic, p_value, ci_low, ci_high of t tests (z where df = inf)."""
    est, se, df = (np.asarray(v, dtype=float) for v in (est, se, df))
    stat = est / se
    finite = np.isfinite(df)
    dfs = np.where(finite, df, 1.0)
    p = np.where(finite, 2 * t_sf(np.abs(stat), dfs), 2 * norm_sf(np.abs(stat)))
    q = np.where(finite, t_ppf(0.5 + level / 2, dfs), norm_ppf(0.5 + level / 2))
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


def _as_L(res, L) -> np.ndarray:
    """L as a float matrix with a column per fixed effect, in ``res.params``' order: a DataFrame
    (or a Series, one row) is matched to the coefficients by its column names."""
    names = list(res.params.index)
    p = len(names)
    if isinstance(L, pd.Series):
        L = L.to_frame().T
    if isinstance(L, pd.DataFrame):
        labels = [str(c) for c in L.columns]
        unknown = [c for c in labels if c not in names]
        if unknown:
            raise FitError(
                f"the contrast matrix L has column '{unknown[0]}'{did_you_mean(unknown[0], names)}, which is not a "
                f"fixed effect; its columns must be the coefficient names: {', '.join(names)}"
            )
        if len(set(labels)) != len(labels):
            raise FitError("the contrast matrix L names a fixed effect twice; give each coefficient one column")
        L = L.set_axis(labels, axis=1).reindex(columns=names, fill_value=0.0)
    try:
        L = np.atleast_2d(np.asarray(L, dtype=float))
    except (TypeError, ValueError):
        raise FitError("the contrast matrix L must be numbers, one column per fixed effect") from None
    if L.ndim != 2 or L.shape[1] != p or L.shape[0] == 0:
        raise FitError(f"the contrast matrix L must have {p} columns (one per fixed effect: {names}) and a row or more")
    if not np.all(np.isfinite(L)):
        raise FitError("the contrast matrix L has missing or infinite entries")
    zero = ~L.any(axis=1)
    if zero.any():
        raise FitError(f"row {int(np.argmax(zero))} of the contrast matrix L is all zeros: it tests nothing")
    return L


def _unit(L: np.ndarray) -> np.ndarray:
    """The rows of L scaled to a largest entry of 1."""
    return L / np.abs(L).max(axis=1)[:, None]


def _as_rhs(rhs, rows: int) -> np.ndarray:
    """The right-hand side c of Lβ = c: 0, one number for every row, or one per row of L."""
    if rhs is None:
        return np.zeros(rows)
    try:
        c = np.asarray(rhs, dtype=float).ravel()
    except (TypeError, ValueError):
        raise FitError(f"rhs must be numbers, one per row of L, not {rhs!r}") from None
    if c.size == 1:
        c = np.full(rows, c[0])
    if c.size != rows or not np.all(np.isfinite(c)):
        raise FitError(f"rhs must be one finite number per row of L ({rows}), not {rhs!r}")
    return c


def _fstat_ddf(nu: np.ndarray) -> float:
    """lmerTest's combination of per-direction df into the F statistic's denominator df."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))


def contrast_test(res, L, rhs=None, ddf: str | None = None) -> pd.Series:
    """Joint test of Lβ = rhs. LMMs: ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``,
    ``Pr(>F)`` (lmerTest's ``contest``; ``ddf="asymptotic"`` gives the Wald chi-square); GLMMs:
    ``Chisq``, ``Df``, ``Pr(>Chisq)`` (car's Wald test)."""
    L = _as_L(res, L)
    key = test_method(res, ddf)
    beta = res.params.to_numpy()
    c = _as_rhs(rhs, L.shape[0])
    size = np.abs(L).max(axis=1)  # the test of each row is that of the row scaled: no overflow
    L, c = L / size[:, None], c / size
    if key == WALD:
        V = res.vcov().to_numpy()
        M = L @ V @ L.T
        w, P = np.linalg.eigh(M)
        pos = w > max(np.sqrt(np.finfo(float).eps) * w.max(), 0)
        if not pos.any():
            raise FitError("the contrast matrix L tests nothing (L V L' is zero)")
        z = P[:, pos].T @ (L @ beta - c)
        chisq = float(np.sum(z**2 / w[pos]))
        q = int(pos.sum())
        return pd.Series({"Chisq": chisq, "Df": q, "Pr(>Chisq)": float(chi2_sf(chisq, q))})
    if key == KENWARD_ROGER:
        parts = kenward_roger_parts(res)
        PhiA = parts["PhiA"]
        q = int(np.linalg.matrix_rank(L))
        diff = L @ beta - c
        F = float(diff @ np.linalg.pinv(L @ PhiA @ L.T) @ diff) / q
        den = kr_hypothesis_df(parts, L, q)
    else:
        V = res.vcov().to_numpy()
        A, jac = satterthwaite_parts(res)
        w, P = np.linalg.eigh(L @ V @ L.T)
        order = np.argsort(w)[::-1]
        w, P = w[order], P[:, order]
        pos = w > max(np.sqrt(np.finfo(float).eps) * w[0], 0)
        q = int(pos.sum())
        if q == 0:
            raise FitError("the contrast matrix L tests nothing (L V L' is zero)")
        PtL = P[:, :q].T @ L
        t2 = (PtL @ beta - P[:, :q].T @ c) ** 2 / w[:q]
        F = float(t2.sum() / q)
        nu = np.empty(q)
        for m in range(q):
            g = np.array([PtL[m] @ J @ PtL[m] for J in jac])
            nu[m] = 2 * w[m] ** 2 / float(g @ A @ g)
        den = _fstat_ddf(nu)
    ss = F * q * res.sigma**2
    return pd.Series(
        {
            "Sum Sq": ss,
            "Mean Sq": ss / q,
            "NumDF": q,
            "DenDF": den,
            "F value": F,
            "Pr(>F)": float(f_sf(F, q, den)),
        }
    )


def contrast_t(res, L, rhs=None, ddf: str | None = None, level: float = 0.95) -> pd.DataFrame:
    """One t test per row of L (z tests for GLMMs or ``ddf="asymptotic"``): estimate, std_err,
    df, statistic, p_value, ci_low, ci_high (lmerTest's ``contest(joint = FALSE)``)."""
    level = check_level(level)
    L = _as_L(res, L)
    key = test_method(res, ddf)
    c = _as_rhs(rhs, L.shape[0])
    est = L @ res.params.to_numpy() - c
    size, U = np.abs(L).max(axis=1), _unit(L)  # SE and df from the rows scaled: no overflow

    def se_of(V):
        return size * np.sqrt(np.einsum("ij,jk,ik->i", U, V, U))

    if key == WALD:
        se = se_of(res.vcov().to_numpy())
        df = np.full(len(est), np.inf)
    elif key == KENWARD_ROGER:
        parts = kenward_roger_parts(res)
        se = se_of(parts["PhiA"])
        df = np.array([kr_hypothesis_df(parts, U[[i]], 1) for i in range(len(est))])
    else:
        V = res.vcov().to_numpy()
        A, jac = satterthwaite_parts(res)
        se = se_of(V)
        df = np.empty(len(est))
        for i, ell in enumerate(U):
            g = np.array([ell @ J @ ell for J in jac])
            df[i] = 2 * (ell @ V @ ell) ** 2 / float(g @ A @ g)
    return t_frame(est, se, df, level)


def term_columns(design) -> dict[str, list[int]]:
    """Fixed-effect term (as formulaic names it: ``x``, ``C(f)``, ``x:C(f)``; the intercept
    ``(Intercept)``) → its columns in the fitted X (after rank-deficient columns were dropped)."""
    spec = design.fixed_spec
    if spec is None:
        raise FitError("an ANOVA table needs a model built with from_formula")
    keep = design.fixed_keep if design.fixed_keep is not None else np.arange(len(design.fixed_names))
    pos = {int(k): i for i, k in enumerate(keep)}
    out: dict[str, list[int]] = {}
    for term, sl in spec.term_slices.items():
        cols = [pos[j] for j in range(sl.start, sl.stop) if j in pos]
        if cols:
            out["(Intercept)" if str(term) == "1" else str(term)] = cols
    return out


def _contained(term: str, others: list[str]) -> bool:
    """Whether another term contains ``term`` (its factors and more: an interaction)."""
    parts = set(term.split(":"))
    return any(o != term and parts < set(o.split(":")) for o in others)


def anova_table(res, type: int = 3, ddf: str | None = None) -> pd.DataFrame:
    """One row per fixed-effect term; see the module docstring for the hypotheses."""
    if type not in (1, 3, "I", "III"):
        raise FitError(f"type must be 1 or 3, not {type!r}")
    type = 1 if type in (1, "I") else 3
    method = test_method(res, ddf)
    d = res.design
    cols = term_columns(d)
    p = len(res.params)
    if not res.family.is_lmm:
        if type != 3:
            raise FitError("GLMM tables are car's type 3 Wald chi-square tests: use type=3")
        return _table({term: contrast_test(res, np.eye(p)[idx], ddf=WALD) for term, idx in cols.items()})
    terms = [t for t in cols if t != "(Intercept)"]
    if not terms:
        raise FitError("the model has no fixed-effect term besides the intercept to test")
    if type == 1:
        # X'X = R'R; the rows of a Dask fit are on the workers: X'X from its data pass
        R = np.linalg.cholesky(d.X.T @ d.X if d.source is None else d.source.gram()).T
        contrasts = {t: R[cols[t]] for t in terms}
    else:
        if d.type3 is not None:  # some term contains another: lmerTest's marginal hypotheses
            contrasts = type3_contrasts(d, cols)
        elif any(_contained(t, terms) for t in terms):
            raise FitError(
                "type 3 tests for a model where one term contains another need the rows (the all-levels "
                "design), recorded only for models built from a pandas DataFrame; use type=1"
            )
        else:
            contrasts = {t: np.eye(p)[cols[t]] for t in terms}
    return _table({t: contrast_test(res, Lt, ddf=method) for t, Lt in contrasts.items()})


def _table(rows: dict[str, pd.Series]) -> pd.DataFrame:
    """The rows of contrast_test as a table: lmerTest's F columns, or the Wald chi-square ones
    (car's, and an LMM's with ``ddf="normal"``)."""
    table = pd.DataFrame(rows).T
    if "Chisq" in table:
        return table[["Chisq", "Df", "Pr(>Chisq)"]].astype({"Df": int})
    return table[["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]].astype({"NumDF": int})


def drop1_table(res, ddf: str | None = None) -> pd.DataFrame:
    """F tests of dropping each fixed-effect term that marginality allows (no other term contains
    it), as ``lmerTest::drop1(m)``: each such term's columns tested jointly."""
    if not res.family.is_lmm:
        raise FitError("drop1() gives lmerTest's F tests for linear mixed models; for a GLMM use anova() (Wald)")
    method = test_method(res, ddf)
    cols = term_columns(res.design)
    terms = [t for t in cols if t != "(Intercept)"]
    p = len(res.params)
    rows = {t: contrast_test(res, np.eye(p)[cols[t]], ddf=method) for t in terms if not _contained(t, terms)}
    if not rows:
        raise FitError("the model has no fixed-effect term to drop")
    return _table(rows)
