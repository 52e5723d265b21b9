"""One-sided formulas of fixed effects beside the model's (glmmTMB's ``ziformula`` and
``dispformula``): the text checked, the model matrix built and rank checked on the model's rows,
and replayed on new rows."""

from __future__ import annotations

from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from ..errors import FormulaError
from .columns import coefficient_names, formula_variables, formulaic_error, formulaic_types
from .fixed import column_moments, independent_columns

__all__ = ["SideFormula", "side_rhs", "side_matrix"]


@dataclass
class SideFormula:
    """A one-sided formula of fixed effects and its design on the model's rows.

    Attributes
    ----------
    formula : str
        The formula as given (``"~ spp + mined"``).
    X : ndarray (n, k)
        Its model matrix on the rows the model uses.
    names : list of str
        Column names of X (``"(Intercept)"`` for the intercept).
    spec : formulaic ModelSpec or None
        Replays X on new rows (predictions).
    keep : ndarray
        The columns of the spec's matrix kept by the rank check.
    """

    formula: str
    X: np.ndarray
    names: list[str]
    spec: object
    keep: np.ndarray

    def matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """X on (new) rows, the columns the fit kept."""
        rows = formulaic_types(rows, formula_variables(self.rhs))
        return np.asarray(self.spec.get_model_matrix(rows), dtype=float)[:, self.keep]

    @property
    def rhs(self) -> str:
        """The formula's right-hand side."""
        return self.formula.split("~", 1)[1].strip()

    def variables(self) -> set[str]:
        """Columns the formula reads."""
        return formula_variables(self.rhs)


def side_rhs(formula, argument: str, constant: str) -> str:
    """The right-hand side of the one-sided formula ``formula`` given as ``argument``
    (``"ziformula"``), checked: a string with one ``~``, nothing on its left, no random-effects
    term, something on its right (``constant`` says what ``"~ 1"`` means there)."""
    if not isinstance(formula, str) or "~" not in formula:
        raise FormulaError(f"{argument} must be a one-sided formula such as '~ 1' or '~ x', not {formula!r}")
    lhs, rhs = formula.split("~", 1)
    rhs = rhs.strip()
    if lhs.strip():
        raise FormulaError(f"{argument} '{formula}' has a left-hand side; write it one-sided, as '~ {rhs}'")
    if "|" in rhs:
        raise FormulaError(f"{argument} '{formula}' has a random-effects term; this part takes fixed effects only")
    if not rhs:
        raise FormulaError(f"{argument} '{formula}' has nothing after '~'; write '~ 1' for {constant}")
    return rhs


def side_matrix(rhs: str, data: pd.DataFrame, part: str, constant: str):
    """(X, names, spec, kept columns) of ``~ rhs`` on ``data`` (the model's rows, complete);
    ``part`` names it in errors ("the zero-inflation part"), ``constant`` says how to write a
    constant one."""
    data = formulaic_types(data, formula_variables(rhs))
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build {part} '~ {rhs}'", rhs, exc) from None
    names = coefficient_names(mm.model_spec.column_names)
    X = np.asarray(mm, dtype=float)
    mean, centred = column_moments(X)
    keep, _ = independent_columns(
        len(X), mean, centred, names, what=f"{part.removeprefix('the ').removesuffix(' part')} model matrix"
    )
    if len(keep) == 0:
        raise FormulaError(
            f"{part} '~ {rhs}' has no columns left (no intercept, and no predictor that varies); {constant}"
        )
    return X[:, keep], [names[i] for i in keep], mm.model_spec, keep
