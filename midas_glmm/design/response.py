"""The response, prior weights and offset of a design, as the engines use them.

``cbind(s, f)`` gives the proportion s/(s+f) with s+f trials as weights; a response that is not
numbers is coded by its family (binomial: lme4's first level = failure); weights and offsets
are checked as lme4 checks them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError, FamilyError
from ..families import resolve_family
from .columns import check_columns, column_or_values, eval_expression, single_column, unquoted
from .formula import ParsedFormula

__all__ = [
    "response_of",
    "as_numbers",
    "response_column",
    "is_factor_response",
    "check_weights",
    "check_finite",
    "infinite_message",
    "offset_of",
    "argument_values",
    "align_to_rows",
]


def check_finite(df: pd.DataFrame, cols) -> None:
    """Raise on infinite values in the numeric columns used."""
    for c in cols:
        col = df[c]
        dtype = col.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iub":
            continue  # integers and booleans are finite
        if isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype)):
            continue  # text and factors: no numbers to be infinite
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            vals = col.to_numpy()
        elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            vals = col.to_numpy(dtype=float)
        else:
            continue
        if np.isinf(vals).any():
            raise DataError(infinite_message(c, df.index[np.isinf(vals)][0]))


def infinite_message(column: str, row) -> str:
    """The error for an infinite value in ``column``, the first at the row labelled ``row``."""
    return f"column '{column}' holds infinite values (row {row!r}); remove or recode them"


def response_of(parsed: ParsedFormula, df: pd.DataFrame, weights=None, family=None, levels=None):
    """(y, prior weights, trials or None, response name); cbind(s, f) gives s/(s+f) with s+f trials.

    A response that is not numbers (a pandas Categorical, text) is coded by ``family``
    (:meth:`~midas_glmm.families.Family.code_levels`: binomial codes it as lme4 does, other
    families refuse it), with ``levels`` when they are known beforehand."""
    if parsed.cbind:
        if family is not None and not family.takes_trials:
            raise FamilyError(
                f"'{parsed.response}' is a binomial response (successes, failures), but the family is "
                f"{family.name}: cbind() is for binomial responses; give a {family.name} model one column "
                "of counts (e.g. the successes, with an offset for the trials if they vary)"
            )
        succ = as_float_values(eval_expression(parsed.cbind[0], df), parsed.cbind[0])
        fail = as_float_values(eval_expression(parsed.cbind[1], df), parsed.cbind[1])
        trials = succ + fail
        if (succ < 0).any() or (fail < 0).any():
            raise DataError(f"'{parsed.response}' has negative counts; cbind needs successes, failures >= 0")
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1), 0.0)
        w = trials.astype(float)
        name = parsed.cbind[0]
    else:
        name = unquoted(parsed.response)
        y = _response_numbers(column_or_values(parsed.response, df), name, family, levels)
        w = np.broadcast_to(1.0, len(df))  # no weights: a read-only view, no memory
        trials = None
    if weights is not None:
        w = w * weights
    return y, w, trials, name


def _response_numbers(values: pd.Series, name: str, family, levels) -> np.ndarray:
    """The response as floats: numbers as they are, anything else coded by the family (an
    ordinal family codes every response: numbers are categories too)."""
    if family is not None and family.categorical_response:
        return family.code_levels(values, name, levels)
    numbers = as_numbers(values)
    if numbers is not None:
        return numbers
    if family is None:  # a design built without a family is Gaussian
        family = resolve_family(None)
    return family.code_levels(values, name, levels)


def as_numbers(values: pd.Series) -> np.ndarray | None:
    """``values`` as floats (bool as 0/1, numbers stored as text converted), or None when they
    are not numbers (text, a pandas Categorical)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return None
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "fiub":  # numpy's: no NA to map
        return values.to_numpy(dtype=float)  # as below, without the na_value= path (~35 µs)
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    if values.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return values.to_numpy(dtype=float)
    converted = pd.to_numeric(values, errors="coerce")
    if converted.notna().sum() == values.notna().sum():
        return converted.to_numpy(dtype=float, na_value=np.nan)
    return None


def response_column(parsed: ParsedFormula, data: pd.DataFrame) -> str | None:
    """The column the response is, when it is one column (``y``, ```my y```), else None."""
    return None if parsed.cbind else single_column(parsed.response, data.columns)


def is_factor_response(parsed: ParsedFormula, data: pd.DataFrame) -> bool:
    """True when the response is a factor (a pandas Categorical, text), not numbers or bool."""
    col = response_column(parsed, data)
    if col is None:
        return False
    values = data[col]
    if len(values) == 0:  # Dask's meta: judge by the dtype alone
        return not (pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype))
    return as_numbers(values) is None


def check_weights(w: np.ndarray, index: pd.Index, allow_all_zero: bool = False, label: str = "weights") -> None:
    """Raise for prior weights lme4 refuses (negative) or that make no model (infinite, all zero)."""
    for bad, kind in ((np.isinf(w), "infinite"), (w < 0, "negative")):
        if bad.any():
            raise DataError(
                f"{label} has {kind} values (row {index[np.argmax(bad)]!r}: {w[bad][0]:g}); prior weights "
                "must be finite and >= 0 (a missing weight drops its row)"
            )
    if not allow_all_zero and len(w) and not (w > 0).any():
        raise DataError("every prior weight is zero; nothing to fit")


def offset_of(parsed: ParsedFormula, df: pd.DataFrame, offset=None) -> np.ndarray:
    """Sum of the formula's offset(...) terms and the offset= argument."""
    off = np.broadcast_to(0.0, len(df))  # no offset: a read-only view, no memory
    for expr in parsed.offsets:
        off = off + as_float_values(eval_expression(expr, df), f"offset({expr})")
    if offset is not None:
        off = off + offset
    if (parsed.offsets or offset is not None) and not np.all(np.isfinite(off)):
        raise DataError("the offset has non-finite values (e.g. log of 0); check the exposure column")
    return off


def label_of(label: str, arg) -> str:
    """``"weights column 'w'"`` for a column name, ``"weights"`` for an array."""
    return f"{label} column '{arg}'" if isinstance(arg, str) else label


def argument_values(label: str, arg, data: pd.DataFrame) -> np.ndarray:
    """The weights= or offset= argument (a column name, or one value per row) as floats."""
    what = label_of(label, arg)
    if isinstance(arg, str):
        check_columns({arg}, data, f"{label}='{arg}'")
        values = data[arg]
    else:
        raw = np.asarray(arg, dtype=object).ravel()
        if raw.shape[0] != len(data):
            raise DataError(f"{label} has {raw.shape[0]} values but the data has {len(data)} rows")
        values = pd.Series(raw, index=data.index)
    numbers = as_numbers(values)
    if numbers is None:
        raise DataError(f"{what} is not numeric (e.g. {values.dropna().iloc[0]!r}); {label} must be numbers")
    return numbers


def as_float_values(values: np.ndarray, name: str) -> np.ndarray:
    """Values of a cbind(...) count or an offset as floats, or a DataError naming them."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":  # numbers already (no Series)
        return values.astype(float)
    numbers = as_numbers(pd.Series(values))
    if numbers is None:
        raise DataError(
            f"'{name}' is not numeric (dtype {values.dtype}); it must be numbers "
            "(recode categories as 0/1, or use cbind(successes, failures))"
        )
    return numbers


def align_to_rows(values, row_index: pd.Index | None, nobs: int, what: str):
    """A Series or DataFrame of values for the rows a design uses, put in the design's row order
    by its index (the index of the data the model was built from); an error when it does not
    hold every one of those rows."""
    if row_index is None:
        if len(values) != nobs:
            raise DataError(f"{what} has {len(values)} rows but the model uses {nobs}; give one row per row used")
        return values
    if values.index.equals(row_index):
        return values
    if not values.index.is_unique or not row_index.isin(values.index).all():
        raise DataError(
            f"{what}'s index does not hold every row the model uses: give it the index of the model's data "
            f"(the model uses {nobs} rows), or pass an array with one value per row used"
        )
    return values.loc[row_index]
