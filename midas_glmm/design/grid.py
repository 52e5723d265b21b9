"""The reference grid of estimated marginal means (emmeans): what it holds for each variable of
the fixed part, recorded from the rows when the design is built, and its model matrix.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd

from .columns import formula_variables
from .formula import ParsedFormula

__all__ = ["reference_grid_info", "reference_grid", "COV_KEEP"]


#: a numeric covariate with at most this many distinct values enters the grid at each of them
#: (emmeans' default ``cov.keep = "2"``: a 0/1 indicator is kept at 0 and 1, not at its mean)
COV_KEEP = 2


def reference_grid_info(parsed: ParsedFormula, df: pd.DataFrame) -> dict:
    """For each variable of the fixed part, what a reference grid holds (emmeans): its levels
    (sorted, as R's factor levels) if it is text, categorical, boolean or wrapped in ``C()``
    ("factor"); the values of a numeric covariate with at most :data:`COV_KEEP` of them
    ("kept"); else the covariate's mean over the rows used ("numeric")."""
    out = {}
    categorical_calls = set(re.findall(r"C\(\s*`?([^,)`]+)`?", parsed.fixed))
    for name in sorted(formula_variables(parsed.fixed)):
        if name not in df.columns:
            continue
        col = df[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if numeric and name not in categorical_calls:
            if isinstance(col.dtype, np.dtype):  # numpy's numbers: no NA to map (na_value= would copy
                a = col.to_numpy(dtype=float)  # floats and take pandas' slow path for integers)
            else:
                a = col.to_numpy(dtype=float, na_value=np.nan)
            values = _few_values(a, COV_KEEP)
            if values is not None:
                out[name] = ("kept", values)
            else:
                mean = float(a.mean())  # pandas' skipna mean, without pandas' overhead
                out[name] = ("numeric", mean if not np.isnan(mean) else float(np.nanmean(a)))
        elif isinstance(col.dtype, pd.CategoricalDtype):
            out[name] = ("factor", list(col.cat.categories))
        else:
            out[name] = ("factor", sorted(col.dropna().unique().tolist()))
    return out


def _few_values(a: np.ndarray, k: int) -> list[float] | None:
    """The distinct values of ``a`` other than NaN, sorted, if there are at most ``k`` of them;
    else None. Up to k + 1 passes that drop one value each (no hashing of every row), after a
    look at the first rows, where a continuous covariate shows its many values at once."""
    head = a[:64]
    if len(np.unique(head[~np.isnan(head)])) > k:
        return None
    rest = a[~np.isnan(a)]
    seen: list[float] = []
    while rest.size:
        if len(seen) == k:
            return None
        seen.append(float(rest[0]))
        rest = rest[rest != rest[0]]
    return sorted(seen)


def reference_grid(info: dict) -> tuple[pd.DataFrame, list[str]]:
    """The reference grid of :func:`reference_grid_info`'s ``info``: every combination of the
    factors' levels and the kept covariates' values (the first varying slowest), each other
    numeric covariate at its mean; and the variables crossed."""
    factors = [v for v, (kind, _) in info.items() if kind != "numeric"]
    combos = list(itertools.product(*[info[v][1] for v in factors]))
    grid = pd.DataFrame(combos, columns=factors) if factors else pd.DataFrame(index=[0])
    for v, (kind, value) in info.items():
        if kind == "numeric":
            grid[v] = value
    return grid, factors
