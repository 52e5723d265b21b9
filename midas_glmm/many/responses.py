"""The responses of fit_many: aligned to the model's rows, and the model rebuilt on a response's own
rows when it has missing values (lme4's na.omit for that response only)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..design.response import align_to_rows
from ..design.reterms import ThetaMap
from ..errors import DataError, FitError

__all__ = ["response_matrix", "subset_model", "check_layout", "theta_in_model_order"]

#: the column a response with missing values gets in its own model's data
RESPONSE_COLUMN = "(fit_many response)"


# ----------------------------------------------------------------------------- the responses
def response_matrix(model, Y) -> tuple[list[str], np.ndarray]:
    """(names, values): the responses as an (n_model_rows × K) float array, NaN where missing,
    aligned to the rows the model uses."""
    design = model.design
    nobs = design.nobs
    if isinstance(Y, pd.Series):
        Y = Y.to_frame(name=Y.name if Y.name is not None else "y")
    if isinstance(Y, pd.DataFrame):
        names = [str(c) for c in Y.columns]
        _check_names(names)
        Y = align_to_rows(Y, design.row_index, nobs, "Y")
        for j, c in enumerate(names):
            col = Y.iloc[:, j]
            if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
                raise DataError(f"response column '{c}' is not numeric (dtype {col.dtype}); fit_many needs numbers")
        values = Y.to_numpy(dtype=float, na_value=np.nan)
    else:
        try:
            values = np.asarray(Y, dtype=float)
        except (TypeError, ValueError):
            raise DataError("Y must be a DataFrame or a 2-D array of numbers, one column per response") from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise DataError(f"Y must be 2-D (rows × responses), not {values.ndim}-D")
        names = [f"y{j}" for j in range(values.shape[1])]
        if values.shape[0] != nobs:
            positions = positions_in_data(model)
            if positions is None or values.shape[0] != len(model.built_from["data"]):
                raise DataError(
                    f"Y has {values.shape[0]} rows but the model uses {nobs} ({design.n_dropped} rows of the data "
                    "were dropped for missing values): give one row per row used, or a DataFrame with the data's index"
                )
            values = values[positions]
    _check_names(names)
    if values.shape[1] == 0:
        raise DataError("Y has no responses (no columns)")
    return names, np.ascontiguousarray(values)


def _check_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        dup = pd.Index(names)[pd.Index(names).duplicated()][0]
        raise DataError(
            f"response name '{dup}' appears more than once in Y; responses need distinct names "
            "(rename or drop the copies)"
        )


def positions_in_data(model) -> np.ndarray | None:
    """Positions of the model's rows in the data it was built from (None if unknown)."""
    src = model.built_from
    if src is None or not isinstance(src.get("data"), pd.DataFrame) or not src["data"].index.is_unique:
        return None
    return src["data"].index.get_indexer(model.design.row_index)


def subset_model(model, y: np.ndarray):
    """The model built again on the rows where ``y`` is observed, with ``y`` as its response."""
    observed = ~np.isnan(y)
    if observed.sum() == 0:
        raise DataError("the response has no observed value")
    src = model.built_from
    positions = positions_in_data(model)
    if positions is None:
        raise FitError(
            "a response with missing values needs the model's own rows again: build the model with "
            "MixedModel.from_formula on a DataFrame with a unique index, or drop the missing values first"
        )
    rows = positions[observed]
    if np.any(rows < 0):
        raise FitError("rows of the model are no longer in the DataFrame it was built from: build the model again")
    data = src["data"].iloc[rows]
    data = data.assign(**{RESPONSE_COLUMN: y[observed]})
    rhs = str(src["formula"]).split("~", 1)[1]

    def subset(v):
        if v is None or isinstance(v, str):
            return v
        return np.asarray(v)[rows]

    d = model.design
    # proportions of a cbind() model keep their trials as weights
    weights = np.asarray(d.weights)[observed] if d.trials is not None else subset(src["weights"])
    sub = type(model).from_formula(
        f"`{RESPONSE_COLUMN}` ~{rhs}",
        data,
        family=model.family,
        weights=weights,
        offset=subset(src["offset"]),
        ziformula=src.get("ziformula"),
        dispformula=src.get("dispformula"),
    )
    same_columns = list(sub.design.fixed_names) == list(d.fixed_names)
    if same_columns and not np.allclose(sub.design.X, np.asarray(d.X)[observed], rtol=1e-12, atol=0):
        raise FitError(
            "the DataFrame the model was built from has changed since (its rows no longer give the model's "
            "design): build the model again before fit_many"
        )
    return sub


def check_layout(model, res) -> None:
    """A response fitted on its own rows must have the model's coefficients (rows that lose a
    level of a factor, say, give a different model: an error for this response, not a NaN row)."""
    lost = [c for c in model.design.fixed_names if c not in set(res.params.index)]
    if lost:
        raise FitError(
            f"on this response's observed rows the design loses {', '.join(lost)} (no rows left for it); "
            "fit this response on its own"
        )


def theta_in_model_order(model, res) -> np.ndarray:
    """θ of a fit on a subset of rows in the model's θ order (the terms are ordered by their
    number of levels, which a subset can change)."""
    want = ThetaMap(model.design.terms).names
    have = dict(zip(ThetaMap(res.design.terms).names, np.asarray(res.theta, float)))
    return np.array([have.get(n, np.nan) for n in want])
