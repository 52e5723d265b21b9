"""Likelihood-ratio comparison of nested fits, as lme4's ``anova(m1, m2, ...)``.

REML fits are refitted by ML first (their REML criteria are not comparable when the fixed
effects differ); a comparison on the boundary of the parameter space (Poisson within a negative
binomial, a model without zero-inflation within one with it) says that its p-value is conservative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..distributions import chi2_sf
from ..errors import BoundaryTestWarning, FitError, RefitWarning

__all__ = ["compare", "anova"]


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
    kinds = {type(r.family): r.family for r in fits}
    families = {f.name for f in kinds.values()}
    inflated = {r.design.zi.formula if r.design.zi is not None else None for r in fits}
    if None in inflated and len(inflated) > 1:
        warnings.warn(
            "a model without zero-inflation is the zero-inflated one at pi = 0, where the zero-inflation's "
            "logit is at minus infinity, on the boundary of its parameter space: the chi-square p-value is "
            "conservative",
            BoundaryTestWarning,
            stacklevel=2,
        )
    if len(kinds) > 1:
        first, second = list(kinds.values())[:2]
        if len(kinds) > 2 or not (first.nests(second) or second.nests(first)):
            raise FitError(
                f"models of different families ({', '.join(sorted(families))}) are not nested: a likelihood-ratio "
                "test needs one model to be a special case of the other (Poisson within nbinom2 or nbinom1 is)"
            )
        larger, smaller = (first, second) if first.nests(second) else (second, first)
        warnings.warn(
            f"{smaller.label} is the {larger.name} model at its dispersion's limit ({larger.limit}), on the "
            "boundary of its parameter space: the chi-square p-value is conservative (the null distribution is "
            "a 50:50 mixture of 0 and chi-square(1); halve the p-value for it)",
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
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": chi2_sf(chisq, df) if df > 0 else np.nan})
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
