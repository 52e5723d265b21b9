"""What the results of an ordinal model (family="ordinal", clmm's) answer beyond the others:
the thresholds, and predictions of the categories.

With η = x'β + z'b and thresholds τ, P(Y ≤ j) = F(τ_j − η) (:mod:`~midas_glmm.families.ordinal`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import FitError
from ..families import cumulative_names

__all__ = ["ORDINAL_KINDS", "threshold_series", "predict_categories", "observed_probability"]

#: predict()'s kinds for an ordinal model (besides "link")
ORDINAL_KINDS = ("prob", "cum_prob", "class")


def threshold_series(res) -> tuple[pd.Series, pd.Series]:
    """(thresholds, their standard errors), named as clm names them (``"1|2"``)."""
    est = res.estimates
    names = cumulative_names([str(v) for v in res.design.response_levels])
    var = np.diag(est.thresholds_vcov)
    se = np.sqrt(np.where(var > 0, var, np.nan))
    return pd.Series(est.thresholds, index=names, name="thresholds"), pd.Series(se, index=names, name="threshold_bse")


def predict_categories(res, eta: np.ndarray, index, kind: str):
    """The categories' probabilities (``"prob"``: rows × levels), cumulative probabilities
    (``"cum_prob"``: P(Y ≤ j), rows × (levels − 1)) or the most probable level (``"class"``) at
    the linear predictors ``eta`` (NaN rows stay NaN; their class is None)."""
    fam, tau = res.family, res.thresholds.to_numpy()
    levels = list(res.design.response_levels)
    ok = np.isfinite(eta)
    if kind == "cum_prob":
        values = np.full((len(eta), len(tau)), np.nan)
        values[ok] = fam.cumulative(eta[ok], tau)
        return pd.DataFrame(values, index=index, columns=[f"<= {v}" for v in levels[:-1]])
    values = np.full((len(eta), len(levels)), np.nan)
    values[ok] = fam.probabilities(eta[ok], tau)
    if kind == "prob":
        return pd.DataFrame(values, index=index, columns=levels)
    best = np.argmax(np.where(ok[:, None], values, -np.inf), axis=1)
    return pd.Series([levels[k] if o else None for k, o in zip(best, ok)], index=index, name="class")


def observed_probability(res, eta: np.ndarray) -> np.ndarray:
    """The probability of each row's observed category at η: clmm's ``fitted()``."""
    probs = res.family.probabilities(eta, res.thresholds.to_numpy())
    return probs[np.arange(len(eta)), res.design.y.astype(np.int64)]


def refuse_kind(kind: str) -> None:
    raise FitError(
        f"an ordinal model predicts kind='prob' (each category's probability), 'cum_prob', 'class' or 'link', "
        f"not '{kind}': its response is a category, not a number"
    )
