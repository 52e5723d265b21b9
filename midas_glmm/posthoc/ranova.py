"""Likelihood-ratio tests of the random-effects terms (lmerTest's ``ranova``): each term reduced
in turn — a term with slopes to a random intercept on the same factor, a random intercept
removed — and the model refitted by the same criterion (REML or ML) with the same fixed effects.
When no random term is left, the reduced model is the linear model, whose (REML) log-likelihood
is R's ``logLik(lm(...), REML =)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ..checks import refuse_dispersion_model, refuse_iterative
from ..design.reterms import ReTerm
from ..distributions import chi2_sf
from ..engine.lmm import fit_lmm
from ..errors import FitError

__all__ = ["ranova"]


def _linear_model_loglik(d, REML: bool) -> float:
    """log-likelihood of the weighted linear model y ~ X (REML: R's restricted version)."""
    w = d.weights if d.has_prior_weights else np.ones(len(d.y))
    sw = np.sqrt(w)
    X, y = d.X * sw[:, None], (d.y - d.offset) * sw
    Q, R = np.linalg.qr(X)
    rss = float(np.sum((y - Q @ (Q.T @ y)) ** 2))
    n, p = X.shape
    logw = 0.5 * float(np.sum(np.log(w[w > 0])))
    if REML:
        m = n - p
        return logw - 0.5 * m * (np.log(2 * np.pi * rss / m) + 1) - float(np.sum(np.log(np.abs(np.diag(R)))))
    return logw - 0.5 * n * (np.log(2 * np.pi * rss / n) + 1)


def _structure_name(t: ReTerm) -> str:
    """The formula's name of a term's structure (a one-column diag term is lme4's)."""
    return t.cov.name if t.cov is not None else "us"


def _label(spec) -> str:
    return f"({spec.expr} | {':'.join(spec.group)})"


def ranova(res) -> pd.DataFrame:
    """Rows ``<none>`` and one per reduced term; columns npar, logLik, AIC, LRT, Df, Pr(>Chisq)."""
    refuse_dispersion_model(
        res, "ranova()", "fit the model without the term and compare log-likelihoods (2 * (res.llf - smaller.llf))"
    )
    if not res.family.is_lmm:
        raise FitError("ranova() tests the random terms of a linear mixed model (as lmerTest's ranova)")
    refuse_iterative(res, "ranova()", "fit the model without the term and compare the log-likelihoods")
    d = res.design
    if d.source is not None:
        raise FitError("ranova() refits the model on the rows; it is not available for Dask data")
    REML = res.is_reml
    p = len(res.params)
    npar_full = p + len(res.theta) + 1
    rows = {"<none>": {"npar": npar_full, "logLik": res.llf}}
    for spec in d.parsed.random:
        name = ":".join(spec.group)
        same = [i for i, t in enumerate(d.terms) if t.expr == spec.expr and t.group_name == name]
        at = next((i for i in same if _structure_name(d.terms[i]) == spec.structure), same[0])
        t = d.terms[at]
        slopes = [c for c in t.columns if c != "(Intercept)"]
        others = [u for i, u in enumerate(d.terms) if i != at]
        if t.structured:  # a structured term is tested as a whole: removed
            label = t.label
            terms = others
        elif slopes:
            label = f"{' + '.join(slopes)} in {_label(spec)}"
            intercept = ReTerm(
                t.group_name,
                t.group,
                "1",
                ["(Intercept)"],
                t.levels,
                t.codes,
                np.ones((len(t.codes), 1)),
                None,
                t.display,
            )
            # an intercept on that factor already in the model absorbs it (one parameter, as lmerTest counts)
            has_intercept = any(u.group_name == t.group_name and u.columns == ["(Intercept)"] for u in others)
            terms = others if has_intercept else others[:at] + [intercept] + others[at:]
        else:
            label = _label(spec)
            terms = others
        if terms:
            est = fit_lmm(replace(d, terms=terms), REML=REML)
            ll, ntheta = est.llf, len(est.theta)
        else:
            ll, ntheta = _linear_model_loglik(d, REML), 0
        rows[label] = {"npar": p + ntheta + 1, "logLik": ll}
    out = pd.DataFrame(rows).T
    out["npar"] = out["npar"].astype(int)
    out["AIC"] = -2 * out["logLik"] + 2 * out["npar"]
    lrt = 2 * (res.llf - out["logLik"])
    df = npar_full - out["npar"]
    out["LRT"] = lrt.where(out.index != "<none>")
    out["Df"] = df.where(out.index != "<none>")
    out["Pr(>Chisq)"] = pd.Series(chi2_sf(np.maximum(lrt, 0), np.maximum(df, 1)), index=out.index).where(
        out.index != "<none>"
    )
    return out
