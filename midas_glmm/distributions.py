"""Tail areas and quantiles of the normal, t, χ² and F distributions, from :mod:`scipy.special`.

The p-values and intervals of every table need only these; taking them from the special
functions rather than :mod:`scipy.stats` keeps that module (half a second to import) out of a
fit. Values equal ``scipy.stats``' ``sf`` and ``ppf``, NaN where a degrees of freedom is not
positive.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["norm_sf", "norm_ppf", "t_sf", "t_ppf", "chi2_sf", "f_sf"]


def _df(df):
    df = np.asarray(df, dtype=float)
    return np.where(df > 0, df, np.nan)


def _out(v):
    return v if np.ndim(v) else float(v)


def norm_sf(x):
    """P(Z > x)."""
    return _out(special.ndtr(-np.asarray(x, dtype=float)))


def norm_ppf(p):
    """Φ⁻¹(p)."""
    return _out(special.ndtri(np.asarray(p, dtype=float)))


def t_sf(x, df):
    """P(T_df > x); df = ∞ is the normal."""
    return _out(special.stdtr(_df(df), -np.asarray(x, dtype=float)))


def t_ppf(p, df):
    """The p-quantile of t_df."""
    return _out(special.stdtrit(_df(df), np.asarray(p, dtype=float)))


def chi2_sf(x, df):
    """P(χ²_df > x)."""
    return _out(special.chdtrc(_df(df), np.maximum(np.asarray(x, dtype=float), 0.0)))


def f_sf(x, df1, df2):
    """P(F_{df1, df2} > x)."""
    return _out(special.fdtrc(_df(df1), _df(df2), np.maximum(np.asarray(x, dtype=float), 0.0)))
