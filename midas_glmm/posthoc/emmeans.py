"""Estimated marginal means and their contrasts (R's emmeans, Lenth 2016).

The reference grid crosses the levels of every factor of the fixed part, and the values of each
numeric covariate with two distinct values (emmeans' ``cov.keep = "2"``: a 0/1 indicator is kept
at 0 and 1), with every other numeric covariate at its mean over the rows used. The EMM of a
level of ``specs`` (within a level of ``by``) is the equally weighted average of the grid's
predictions x'β̂ at that level, a linear function l'β̂ whose SE and df come from
:func:`~midas_glmm.posthoc.hypotheses.contrast_t` (Kenward–Roger by default for LMMs, as
emmeans' ``lmer.df``; z statistics for GLMMs). In a rank-deficient design an l outside the row
space of X (a cell without rows, say) is not estimable: its EMM is NaN, emmeans' ``nonEst``.

Contrasts are linear combinations of the EMMs: ``pairwise`` (each earlier level minus each later
one), ``trt.vs.ctrl`` (each level minus the first), ``poly`` (orthogonal polynomials with
integer coefficients); p-values adjusted by Tukey's studentized range (the family: the means
compared; for other than pairwise contrasts Šidák's, as emmeans switches), Šidák, Holm,
Bonferroni or none. GLMMs: the link scale, or ``type="response"`` back-transformed (SE by the
delta method), with emmeans' names for that case (``asymp.LCL``/``asymp.UCL``; ``prob``/``rate``
for binomial and Poisson means on the response scale).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

from ..checks import refuse_ordinal
from ..distributions import norm_sf, t_sf
from ..errors import FitError, MidasWarning
from .ddf import KENWARD_ROGER, SATTERTHWAITE, test_method
from .hypotheses import contrast_t

__all__ = ["emmeans", "emm_contrasts"]

METHODS = ("pairwise", "trt.vs.ctrl", "poly")
ADJUSTS = ("tukey", "sidak", "holm", "bonferroni", "none")


def _names(v, what: str) -> list[str]:
    """``specs`` or ``by`` as a list of distinct variable names."""
    if v is None:
        return []
    names = [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise FitError(f"{what} must be a variable name or a list of them, not {v!r}")
    if len(set(names)) != len(names):
        raise FitError(f"{what} names a variable twice ({', '.join(names)})")
    return names


def _variables(res, specs, by) -> tuple[list[str], list[str]]:
    """``specs`` and ``by`` checked against the reference grid: variables of the fixed part, each
    a factor (or a covariate with two values), none in both."""
    specs, by = _names(specs, "specs"), _names(by, "by")
    if not specs:
        raise FitError("emmeans() needs specs: the factor(s) whose marginal means you want")
    info = res.design.grid
    if info is None:
        raise FitError("emmeans() needs the reference grid recorded when the model was built from a pandas DataFrame")
    both = [v for v in specs if v in by]
    if both:
        raise FitError(f"'{both[0]}' is in both specs and by; the means are of specs within each level of by")
    for v in specs + by:
        if v not in info:
            raise FitError(f"'{v}' is not a variable of the fixed part ({', '.join(info) or 'none'})")
        if info[v][0] == "numeric":
            raise FitError(
                f"'{v}' is numeric; emmeans() averages over the levels of factors (wrap it in C() to use it as one)"
            )
    return specs, by


def _cells(res, specs, by):
    """(labels DataFrame, L over every column of the formula) — one row per (by, specs) cell,
    the first spec varying fastest."""
    grid, X, _ = res.design.reference_grid()
    info = res.design.grid
    rows, labels = [], []
    for by_levels in itertools.product(*[info[v][1] for v in by]):
        for spec_levels in itertools.product(*[info[v][1] for v in reversed(specs)]):
            spec_levels = tuple(reversed(spec_levels))
            mask = np.ones(len(grid), bool)
            for v, lev in zip(specs + by, spec_levels + by_levels):
                mask &= (grid[v] == lev).to_numpy()
            rows.append(X[mask].mean(axis=0))
            labels.append(dict(zip(specs + by, spec_levels + by_levels)))
    return pd.DataFrame(labels), np.array(rows)


def _tests(res, L: np.ndarray, ddf, level: float = 0.95) -> tuple[pd.DataFrame, np.ndarray]:
    """contrast_t of the rows of L (over every column of the formula), NaN where not estimable;
    and which rows are estimable."""
    d = res.design
    ok = d.estimable(L)
    t = contrast_t(res, d.kept(L), ddf=_ddf(res, ddf), level=level)
    t.loc[~ok, :] = np.nan
    return t, ok


def _note(out: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Attach emmeans' notes to the table (``attrs["notes"]``) and say them once."""
    if notes:
        out.attrs["notes"] = notes
        for note in notes:
            warnings.warn(note, MidasWarning, stacklevel=4)
    return out


def _ddf(res, ddf) -> str:
    """The df method: Kenward–Roger by default for LMMs (emmeans' ``lmer.df``), Satterthwaite
    when a term's covariance or the residual variance is not linear in its parameters (cs, ar1,
    toep, a dispersion formula: KR's adjustment assumes it is), Wald z for GLMMs."""
    linear = all(t.structure.linear for t in res.design.terms) and res.design.disp is None
    return test_method(res, ddf, default=KENWARD_ROGER if linear else SATTERTHWAITE)


def emmeans(res, specs, by=None, ddf=None, type: str = "link", level: float = 0.95) -> pd.DataFrame:
    """EMMs of ``specs`` (column names) within ``by``: the factor columns, emmean, SE, df,
    lower.CL, upper.CL (LMMs) — see the module docstring for GLMMs."""
    refuse_ordinal(
        res, "emmeans()", "predict(newdata, kind='prob') on a grid of the factors gives each category's probability"
    )
    specs, by = _variables(res, specs, by)
    if type not in ("link", "response"):
        raise FitError(f"type must be 'link' or 'response', not {type!r}")
    labels, L = _cells(res, specs, by)
    t, ok = _tests(res, L, ddf, level)
    notes = (
        []
        if ok.all()
        else [f"{int((~ok).sum())} of the means are not estimable (NaN): the design has no rows for them"]
    )
    out = labels.copy()
    if res.family.is_lmm:
        out["emmean"], out["SE"], out["df"] = t.estimate.to_numpy(), t.std_err.to_numpy(), t.df.to_numpy()
        out["lower.CL"], out["upper.CL"] = t.ci_low.to_numpy(), t.ci_high.to_numpy()
        return _note(out, notes)
    est, se = t.estimate.to_numpy(), t.std_err.to_numpy()
    lo, hi = t.ci_low.to_numpy(), t.ci_high.to_numpy()
    if type == "response":
        fam = res.family
        mu = fam.linkinv(est)
        se = np.abs(fam.mu_eta(est, mu)) * se
        lo, hi = fam.linkinv(lo), fam.linkinv(hi)
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        out[fam.mean_name] = np.where(ok, mu, np.nan)
        se, lo, hi = (np.where(ok, v, np.nan) for v in (se, lo, hi))
    else:
        out["emmean"] = est
    out["SE"], out["df"], out["asymp.LCL"], out["asymp.UCL"] = se, np.inf, lo, hi
    out.loc[~ok, "df"] = np.nan
    return _note(out, notes)


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _poly(k: int) -> np.ndarray:
    """Orthogonal polynomial contrasts of degrees 1..k−1 over k equally spaced levels, each
    scaled to the smallest integers (emmeans' ``poly``)."""
    V = np.vander(np.arange(1, k + 1, dtype=float), k, increasing=True)
    Q, _ = np.linalg.qr(V)
    out = []
    for j in range(1, k):
        c = Q[:, j]
        c = c / np.min(np.abs(c[np.abs(c) > 1e-8]))
        c = c if c[-1] > 0 else -c
        out.append(np.round(c, 6))
    return np.array(out)


def _contrast_matrix(method: str, levels: list[str]):
    k = len(levels)
    if method == "pairwise":
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        C = np.zeros((len(pairs), k))
        for r, (i, j) in enumerate(pairs):
            C[r, i], C[r, j] = 1.0, -1.0
        return C, [f"{levels[i]} - {levels[j]}" for i, j in pairs]
    if method == "trt.vs.ctrl":
        C = np.zeros((k - 1, k))
        C[:, 0] = -1.0
        C[np.arange(k - 1), np.arange(1, k)] = 1.0
        return C, [f"{levels[i]} - {levels[0]}" for i in range(1, k)]
    names = ["linear", "quadratic", "cubic"] + [f"degree {d}" for d in range(4, k)]
    return _poly(k), names[: k - 1]


def _adjust(method: str, adjust) -> tuple[str, list[str]]:
    """The p-value adjustment, and emmeans' note when Tukey's is changed to Šidák's (Tukey's is
    for one family of pairwise comparisons only)."""
    defaults = {"pairwise": "tukey", "poly": "none"}
    if method not in METHODS:
        raise FitError(f"unknown method {method!r}; choose 'pairwise', 'trt.vs.ctrl' or 'poly'")
    if adjust is None:
        if method not in defaults:
            raise FitError(
                f"emmeans adjusts {method} contrasts by Dunnett's method, which is not implemented here; "
                "pass adjust='sidak', 'holm', 'bonferroni' or 'none'"
            )
        return defaults[method], []
    if adjust not in ADJUSTS:
        raise FitError(f"unknown adjust {adjust!r}; choose {', '.join(repr(a) for a in ADJUSTS)}")
    if adjust == "tukey" and method != "pairwise":
        note = (
            'adjust = "tukey" was changed to "sidak" because "tukey" is only appropriate for one set of '
            "pairwise comparisons (as emmeans)"
        )
        return "sidak", [note]
    return adjust, []


def emm_contrasts(res, specs, method="pairwise", adjust=None, by=None, ddf=None) -> pd.DataFrame:
    """Contrasts of the EMMs of ``specs`` within ``by``: (by columns), contrast, estimate, SE,
    df, t.ratio (z.ratio for GLMMs), p.value — as ``emmeans::contrast(emmeans(...), method,
    adjust)``."""
    refuse_ordinal(res, "contrasts()", "compare the fixed effects with wald_test() or compare() fits")
    adjust, notes = _adjust(method, adjust)
    specs, by = _variables(res, specs, by)
    labels, L = _cells(res, specs, by)
    cell_names = labels[specs].astype(str).agg(" ".join, axis=1).tolist()
    if len(specs) == 1 and all(_is_number(v) for v in labels[specs[0]]):
        cell_names = [f"{specs[0]}{v}" for v in cell_names]  # emmeans: "period1 - period2"
    frames, nonest = [], 0
    groups = labels.groupby(by, sort=False).indices if by else {None: np.arange(len(labels))}
    for key, idx in groups.items():
        C, names = _contrast_matrix(method, [cell_names[i] for i in idx])
        t, ok = _tests(res, C @ L[idx], ddf)
        nonest += int((~ok).sum())
        est, se, df, stat = (t[c].to_numpy() for c in ("estimate", "std_err", "df", "statistic"))
        finite = np.isfinite(df)
        raw = np.where(finite, 2 * t_sf(np.abs(stat), np.where(finite, df, 1)), 2 * norm_sf(np.abs(stat)))
        p = np.full(len(raw), np.nan)
        if adjust == "tukey":
            k = len(idx)
            from scipy import stats  # loaded when asked

            p = stats.studentized_range.sf(np.abs(stat) * np.sqrt(2), k, np.where(finite, df, np.inf))
        elif adjust != "none" and ok.sum() > 1:  # a family of the estimable contrasts
            from statsmodels.stats.multitest import multipletests  # loaded when asked

            p[ok] = multipletests(raw[ok], method=adjust)[1]
        else:
            p = raw
        frame = pd.DataFrame({"contrast": names, "estimate": est, "SE": se, "df": df})
        frame["z.ratio" if not np.all(finite[ok]) else "t.ratio"] = stat
        frame["p.value"] = np.where(ok, p, np.nan)
        if by:
            key = key if isinstance(key, tuple) else (key,)
            for v, lev in zip(by, key):
                frame.insert(0, v, lev)
        frames.append(frame)
    if nonest:
        notes.append(
            f"{nonest} of the contrasts are not estimable (NaN): they involve means the design cannot estimate"
        )
    return _note(pd.concat(frames, ignore_index=True), notes)
