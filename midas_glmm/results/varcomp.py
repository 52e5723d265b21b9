"""Variance components and random effects in lme4's layouts: ``as.data.frame(VarCorr(m))``,
``ranef(m)`` and ``ranef(m, condVar = TRUE)``, and the ICC.

Each random-effects term t has covariance Σ_t = s·λ_tλ_t' (s = σ² for an LMM, 1 for a GLMM,
whose λ is on the link scale); its random effects are reported level by level in the levels'
original order (the factorisation may have reordered them: ``ReTerm.display``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..design.reterms import ReTerm, ThetaMap

__all__ = [
    "term_labels",
    "structure_frame",
    "structure_notes",
    "varcorr_frame",
    "ranef_frames",
    "ranef_long",
    "intercept_rows",
    "icc_of",
]


def term_labels(terms: list[ReTerm]) -> list[str]:
    """lme4's grp labels: a repeated grouping factor gets ``.1``, ``.2``."""
    seen: dict[str, int] = {}
    out = []
    for t in terms:
        k = seen.get(t.group_name, 0)
        out.append(t.group_name if k == 0 else f"{t.group_name}.{k}")
        seen[t.group_name] = k + 1
    return out


def varcorr_frame(terms: list[ReTerm], covs: list[np.ndarray], sigma: float | None) -> pd.DataFrame:
    """Columns grp, var1, var2, vcov (variance or covariance), sdcor (SD or correlation):
    variances first, then covariances within each term, then the residual (when ``sigma`` is
    a residual SD)."""
    rows = []
    for t, label, Sig in zip(terms, term_labels(terms), covs):
        sd = np.sqrt(np.diag(Sig))
        for a, col in enumerate(t.columns):
            rows.append((label, col, None, Sig[a, a], sd[a]))
        for a in range(t.p):
            for c in range(a + 1, t.p):
                corr = Sig[a, c] / (sd[a] * sd[c]) if sd[a] > 0 and sd[c] > 0 else np.nan
                rows.append((label, t.columns[a], t.columns[c], Sig[a, c], corr))
    if sigma is not None:
        rows.append(("Residual", None, None, sigma**2, sigma))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def structure_frame(terms: list[ReTerm], theta: np.ndarray, scale: float) -> pd.DataFrame:
    """Each term's own parameters on their natural scale (:meth:`ThetaMap.sdcor`): SDs (× σ for
    an LMM), correlations, ar1's and cs's ρ, toep's lag correlations; named as the profile and
    bootstrap intervals name them (``rho|Subject``), with the term and its structure."""
    tm = ThetaMap(terms)
    values, names = tm.sdcor(theta, scale)[:-1], tm.sdcor_names()[:-1]
    rows, i = [], 0
    for t, label in zip(terms, term_labels(terms)):
        for _ in range(len(t.structure.natural(t.structure.start())[1])):
            rows.append((label, t.structure.name, names[i].split("|")[0], values[i]))
            i += 1
    frame = pd.DataFrame(rows, columns=["grp", "structure", "parameter", "estimate"], index=names)
    return frame


def structure_notes(terms: list[ReTerm], theta: np.ndarray) -> dict[str, str]:
    """glmmTMB's mark of a structured term in the summary's Corr column, by term label:
    ``0.930 (ar1)``, ``0.456 (cs)``, the lag correlations ``0.52 0.21 (toep)``, ``(diag)``."""
    out = {}
    tm = ThetaMap(terms)
    for t, label, sl in zip(terms, term_labels(terms), tm.slices()):
        if not t.structured:
            continue
        values, names = t.structure.natural(np.asarray(theta, dtype=float)[sl])
        cors = [f"{v:.3f}" for v, n in zip(values, names) if not n.startswith("sd")]
        out[label] = " ".join(cors + [f"({t.structure.name})"])
    return out


def _in_level_order(t: ReTerm, b: np.ndarray, sd: np.ndarray | None = None):
    """(b, sd, levels) of a term in its levels' original order."""
    if t.display is None:
        return b, sd, t.levels
    d = t.display
    return b[d], None if sd is None else sd[d], t.levels[d]


def ranef_frames(terms: list[ReTerm], b: list[np.ndarray]) -> dict[str, pd.DataFrame]:
    """Grouping factor → DataFrame (levels × columns); terms on the same factor (``(x || g)``)
    side by side, as lme4's ``ranef``."""
    out: dict[str, pd.DataFrame] = {}
    for t, bt in zip(terms, b):
        bt, _, levels = _in_level_order(t, bt)
        df = pd.DataFrame(bt, index=levels, columns=t.columns)
        out[t.group_name] = pd.concat([out[t.group_name], df], axis=1) if t.group_name in out else df
    return out


def ranef_long(terms: list[ReTerm], b: list[np.ndarray], condvar: list[np.ndarray]) -> pd.DataFrame:
    """lme4's ``as.data.frame(ranef(m, condVar = TRUE))``: grpvar, term, grp, condval, condsd."""
    parts = []
    for t, bt, V in zip(terms, b, condvar):
        sd = np.sqrt(np.maximum(np.diagonal(V, axis1=1, axis2=2), 0))
        bt, sd, levels = _in_level_order(t, bt, sd)
        for a, col in enumerate(t.columns):
            parts.append(
                pd.DataFrame(
                    {
                        "grpvar": t.group_name,
                        "term": col,
                        "grp": np.asarray(levels),
                        "condval": bt[:, a],
                        "condsd": sd[:, a],
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def intercept_rows(varcorr: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`varcorr_frame` that are random intercepts' variances."""
    return varcorr[(varcorr["var1"] == "(Intercept)") & varcorr["var2"].isna() & (varcorr["grp"] != "Residual")]


def icc_of(varcorr: pd.DataFrame, residual_variance: float) -> pd.Series:
    """σ²_g / (Σ_h σ²_h + σ²_e) per grouping factor, from the intercept variances of a
    :func:`varcorr_frame` (a model with a random intercept)."""
    inter = intercept_rows(varcorr)
    groups = inter["grp"].str.replace(r"\.\d+$", "", regex=True)
    var = inter.groupby(groups.to_numpy(), sort=False)["vcov"].sum()
    out = var / (var.sum() + residual_variance)
    out.name = "ICC"
    return out
