"""Replay of a fitted design on new rows: the fixed-effects matrix, offsets, the random-effects
columns and each row's grouping level, as the fit encoded them.

formulaic's ModelSpec re-applies the fit's encodings (factor levels, transforms) to new data;
this module adds what lme4's ``predict(newdata)`` does on top: levels matched by value (2, 2.0
and "2" are one level), a new level of a categorical predictor refused by name, a grouping level
the fit did not see (or a missing one) given a zero random effect (``allow.new.levels``), and a
row missing a predictor left out (NaN, ``na.pass``). The Design's methods are the entry points:
``replay`` (prediction and prediction intervals), ``zero_inflation_on`` (zero-inflation
probabilities), ``population_columns`` (the variance of a new observation) and
``reference_grid`` (emmeans); all replay the formula's specs through :func:`replay_spec`.
"""

from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning, FormulaicError

from ..errors import DataError, FitError, did_you_mean
from .columns import eval_expression, formula_variables, formulaic_types, interaction_codes, string_columns
from .reterms import ReTerm

__all__ = [
    "NewRows",
    "replay_on",
    "zero_inflation_on",
    "population_columns",
    "fixed_on",
    "require_columns",
    "replay_spec",
]


@dataclass
class NewRows:
    """New rows as the fitted design sees them.

    Attributes
    ----------
    complete : ndarray of bool
        The rows with every predictor present (the others are left out of what follows).
    X : ndarray (m, p)
        The fixed-effects matrix of the complete rows.
    offset : ndarray (m,)
        Their offset.
    terms : list of (ReTerm, ndarray (m, p_t), ndarray (m,))
        Per random-effects term: its columns on the rows, and each row's level position among
        the fit's levels (−1 for a level the fit did not see, or a missing one).
    """

    complete: np.ndarray
    X: np.ndarray
    offset: np.ndarray
    terms: list


def replay_on(design, data: pd.DataFrame | None, random_effects: bool = True) -> NewRows:
    """:class:`NewRows` of ``data`` (the fitted rows when None): what η = Xβ + offset + Zb and its
    variance are made of. ``random_effects=False`` leaves the grouping columns out (lme4's
    ``re.form = NA``)."""
    d = design
    if data is None:
        if d.source is not None:
            raise FitError("this needs newdata: the fitted rows of a Dask model are on the workers")
        terms = [(t, t.Zcols, t.codes) for t in d.terms] if random_effects else []
        return NewRows(np.ones(len(d.y), bool), d.X, d.offset, terms)
    if d.fixed_spec is None:
        raise FitError("predict(newdata) needs a model built with from_formula")
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {type(data).__name__}")
    data = string_columns(data)
    offset_col = offset_column(d)
    # the names as written in the formula (formulaic's own list splits a dotted `my.x`)
    needed = formula_variables(d.parsed.fixed) | ({offset_col} if offset_col else set())
    if random_effects:
        for t in d.terms:
            remedy = "; pass random_effects=False for population-level predictions"
            require_columns(data, t.group, "grouping column", remedy)
            needed |= formula_variables(t.expr) if t.spec is not None else set()
    require_columns(data, sorted(needed), "column")
    complete = ~data[sorted(needed)].isna().any(axis=1).to_numpy() if needed else np.ones(len(data), bool)
    rows = data if complete.all() else data.loc[complete]
    X = fixed_on(d, rows, "the fixed effects")
    off = np.zeros(len(rows))
    for expr in d.parsed.offsets:
        off = off + eval_expression(expr, rows)
    if offset_col:
        off = off + rows[offset_col].to_numpy(dtype=float)
    terms = [(t, term_columns_on(t, rows), level_positions(t, rows)) for t in d.terms] if random_effects else []
    return NewRows(complete, X, off, terms)


def zero_inflation_on(design, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(complete rows, X_zi of those rows): the zero-inflation part's matrix on new rows, a row
    complete when it has every variable of the ziformula."""
    return _part_on(design.zi, data, "ziformula", "the zero-inflation part")


def dispersion_on(design, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(complete rows, X_d of those rows): the dispersion part's matrix on new rows."""
    return _part_on(design.disp, data, "dispformula", "the dispersion part")


def _part_on(part, data: pd.DataFrame, argument: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, not {type(data).__name__}")
    data = string_columns(data)
    cols = sorted(part.variables())
    require_columns(data, cols, "column", f" (the {argument}'s)")
    complete = ~data[cols].isna().any(axis=1).to_numpy() if cols else np.ones(len(data), bool)
    rows = data if complete.all() else data.loc[complete]
    return complete, replay_spec(part.spec, part.matrix, rows, what)


def population_columns(term: ReTerm, data: pd.DataFrame | None, complete: np.ndarray) -> np.ndarray:
    """The random-effects columns of ``term`` on the complete rows of ``data`` (its fitted
    columns when None), without their levels: a new observation's group is unknown."""
    if data is None:
        return term.Zcols
    data = string_columns(data)
    rows = data if complete.all() else data.loc[complete]
    if term.spec is not None:
        remedy = "; obs intervals need the random slopes' columns"
        require_columns(rows, sorted(formula_variables(term.expr)), "column", remedy)
    return np.asarray(term_columns_on(term, rows))


def fixed_on(design, rows: pd.DataFrame, what: str, all_columns: bool = False) -> np.ndarray:
    """The fixed-effects matrix of ``rows``, their levels matched to the fit's (:func:`replay_spec`);
    the columns the fit kept, or with ``all_columns`` every column of the formula."""
    return replay_spec(design.fixed_spec, partial(fixed_matrix, design, all_columns=all_columns), rows, what)


def fixed_matrix(design, data: pd.DataFrame, all_columns: bool = False) -> np.ndarray:
    """Replay the fixed-effects ModelSpec on (new) data, keeping the columns the fit kept (or all)."""
    data = formulaic_types(data, formula_variables(design.parsed.fixed))
    X = np.asarray(design.fixed_spec.get_model_matrix(data), dtype=float)
    return X if all_columns else X[:, design.fixed_keep]


def random_columns(term: ReTerm, data: pd.DataFrame) -> np.ndarray:
    """Replay a random term's column spec on (new) data: the ``n × p`` per-row values."""
    if term.spec is None:
        return np.broadcast_to(1.0, (len(data), 1))
    data = formulaic_types(data, formula_variables(term.expr))
    return np.asarray(term.spec.get_model_matrix(data), dtype=float)


# ---------------------------------------------------------------------- levels in new data
def offset_column(d) -> str | None:
    """The column an offset= keyword named (Dask data); a FitError when the fit's offset came as
    an array, which new data cannot reproduce."""
    offset_col = getattr(d.source, "offset_col", None)
    if offset_col is None and not d.parsed.offsets and np.any(d.offset != 0):
        raise FitError(
            "the model's offset was given as offset=..., which cannot be computed on new data; "
            "write it in the formula, e.g. 'y ~ x + offset(np.log(t)) + (1|g)', to predict on newdata"
        )
    return offset_col


def replay_spec(spec, build, rows: pd.DataFrame, what: str) -> np.ndarray:
    """``build(rows)``, a formulaic ModelSpec replayed on new rows, after matching their levels
    to the spec's (:func:`match_levels`); the library's errors for what formulaic cannot
    encode, a level the fit did not see first of all (formulaic only warns of it)."""
    rows = match_levels(spec, rows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            return build(rows)
    except DataMismatchWarning as exc:
        raise DataError(
            f"a categorical predictor in newdata has a level the fit did not see ({exc}); the fit has "
            "no coefficient for a new level: drop or recode those rows"
        ) from None
    except FormulaicError as exc:
        raise DataError(f"cannot build {what} on newdata: {exc}") from None


def require_columns(data: pd.DataFrame, names, what: str, remedy: str = "") -> None:
    for name in names:
        if name not in data.columns:
            raise DataError(f"newdata lacks {what} '{name}'{did_you_mean(name, data.columns)}{remedy}")


def level_text(value) -> str | None:
    """A level as text, numbers without a trailing ".0" (3, 3.0 and "3" give "3"); None if missing."""
    if pd.isna(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.15g}"
    return str(value)


def label_text(label: str) -> str:
    """A fitted level's label, with a float's text ("3.0") written as :func:`level_text` writes it."""
    try:
        x = float(label)
    except ValueError:  # not a number: the label is the text
        return label
    return f"{x:.15g}" if np.isfinite(x) and label == str(x) else label


def level_lookup(levels: pd.Index, nparts: int):
    """Map a level's text to its position among the fit's levels: the label itself first, then
    its value (a float column's "3.0" is the level 3); −1 when the fit has no such level."""
    exact = {str(lab): i for i, lab in enumerate(levels)}
    by_value: dict[str, int] = {}
    for i, lab in enumerate(levels):
        parts = str(lab).split(":")
        if len(parts) == nparts:
            by_value.setdefault(":".join(label_text(p) for p in parts), i)
    return lambda text: exact.get(text, by_value.get(text, -1))


def level_positions(term, data: pd.DataFrame) -> np.ndarray:
    """Position of each row's group among the levels of ``term``; −1 for a level the fit did not
    see or a missing value (such rows get a zero random effect, as lme4's allow.new.levels)."""
    codes, texts = [], []
    for g in term.group:
        c, uniques = pd.factorize(data[g])
        codes.append(c.astype(np.int64) + 1)  # a missing value (−1) as 0
        texts.append([level_text(u) for u in uniques])
    lookup = level_lookup(term.levels, len(term.group))
    inverse, parts = interaction_codes(codes, [len(t) + 1 for t in texts])
    combos = np.column_stack(parts) - 1
    pos = np.array(
        [-1 if (row < 0).any() else lookup(":".join(texts[i][c] for i, c in enumerate(row))) for row in combos],
        dtype=np.int64,
    )
    return pos[inverse]


def term_columns_on(term, rows: pd.DataFrame) -> np.ndarray:
    """A random term's per-row columns on new rows (an intercept, or its own ModelSpec replayed
    with its levels matched)."""
    if term.spec is None:
        return random_columns(term, rows)
    return replay_spec(term.spec, partial(random_columns, term), rows, f"the random-effects term {term.label}")


def holds_numbers(col: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return True
    return all(isinstance(v, numbers.Number) for v in col.dropna())  # an object column of numbers


_CATEGORICAL_CALL = re.compile(r"^C\(\s*`?([^,`]+?)`?\s*(,.*)?\)$")


def match_levels(spec, data: pd.DataFrame) -> pd.DataFrame:
    """``data`` with the values of the fit's categorical predictors replaced by the fit's levels
    they equal by value (2, 2.0 and "2" are the level 2); a level the fit did not see is a
    DataError naming the column, as lme4's predict refuses new levels of a fixed factor, and so
    is text in a column the fit used as a number.

    Factors that are a column (``f`` or ``C(f, ...)``) are matched here; for other expressions
    formulaic's own check of the levels applies."""
    changed = {}
    for expr, (kind, state) in spec.encoder_state.items():
        kind = getattr(kind, "value", kind)
        if kind == "numerical" and expr.strip("`") in data.columns:
            col = expr.strip("`")
            if not holds_numbers(data[col]):
                raise DataError(
                    f"newdata column '{col}' holds {data[col].dtype} values but the fit used it as a number; "
                    "convert it, e.g. with pd.to_numeric"
                )
            if data[col].dtype == object:  # numbers in an object column: formulaic would take them as levels
                changed[col] = data[col].astype(float)
        cats = state.get("categories") if isinstance(state, dict) else None
        if kind != "categorical" or cats is None:
            continue
        m = _CATEGORICAL_CALL.match(expr.strip())
        col = expr.strip("`") if expr.strip("`") in data.columns else (m.group(1).strip() if m else None)
        if col not in data.columns:
            continue
        codes, uniques = pd.factorize(data[col])
        by_text = {level_text(c): c for c in cats}
        values = []
        for u in uniques:
            if level_text(u) not in by_text:
                shown = ", ".join(map(str, cats[:10])) + (", ..." if len(cats) > 10 else "")
                raise DataError(
                    f"newdata column '{col}' has level {u!r}, which the fit did not see (levels of {expr}: "
                    f"{shown}); the fit has no coefficient for a new level: drop or recode those rows"
                )
            values.append(by_text[level_text(u)])
        if any(type(v) is not type(u) or v != u for v, u in zip(values, uniques)):
            changed[col] = pd.Series(np.array(values, dtype=object)[codes], index=data.index)
    return data.assign(**changed) if changed else data
