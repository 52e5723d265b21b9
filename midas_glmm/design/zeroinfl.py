"""The zero-inflation part of a design (glmmTMB's ``ziformula``): a one-sided formula of fixed
effects for the logit of the probability π of a structural zero, and its model matrix X_zi.

The mixture's likelihood is the family layer's (:mod:`~midas_glmm.families.mixture`); γ, the
coefficients of X_zi, is an outer parameter of the fit, as β is
(:func:`~midas_glmm.engine.pirls.fit_glmm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from ..errors import FamilyError, FormulaError
from ..families import names_with
from .columns import coefficient_names, formula_variables, formulaic_error, numbers_as_floats
from .fixed import column_moments, independent_columns

__all__ = ["ZeroInflation", "build_zero_inflation", "zi_rhs"]


@dataclass
class ZeroInflation:
    """The zero-inflation part of a model: its formula and fixed-effects design.

    Attributes
    ----------
    formula : str
        The one-sided formula as given (``"~ spp + mined"``).
    X : ndarray (n, p_zi)
        Its model matrix on the rows the model uses.
    names : list of str
        Column names of X (``"(Intercept)"`` for the intercept): glmmTMB's ``fixef(m)$zi``.
    spec : formulaic ModelSpec
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
        """X_zi on (new) rows, the columns the fit kept."""
        rows = numbers_as_floats(rows, formula_variables(self.rhs))
        return np.asarray(self.spec.get_model_matrix(rows), dtype=float)[:, self.keep]

    @property
    def rhs(self) -> str:
        """The formula's right-hand side."""
        return self.formula.split("~", 1)[1].strip()

    def variables(self) -> set[str]:
        """Columns the formula reads."""
        return formula_variables(self.rhs)


def zi_rhs(ziformula, family) -> str | None:
    """The right-hand side of a ``ziformula`` (None for no zero-inflation: None or ``"~0"``);
    a FamilyError for a family without a zero-inflated form, a FormulaError for a malformed one."""
    if ziformula is None:
        return None
    if not isinstance(ziformula, str) or "~" not in ziformula:
        raise FormulaError(f"ziformula must be a one-sided formula such as '~ 1' or '~ x', not {ziformula!r}")
    lhs, rhs = ziformula.split("~", 1)
    rhs = rhs.strip()
    if lhs.strip():
        raise FormulaError(f"ziformula '{ziformula}' has a left-hand side; write it one-sided, as '~ {rhs}'")
    if "|" in rhs:
        raise FormulaError(
            f"ziformula '{ziformula}' has a random-effects term; the zero-inflation part takes fixed effects only"
        )
    if not rhs:
        raise FormulaError(f"ziformula '{ziformula}' has nothing after '~'; write '~ 1' for a constant zero-inflation")
    if rhs.replace(" ", "") in ("0", "-1"):  # glmmTMB's default: no zero-inflation
        return None
    if not family.zero_inflatable:
        what = (
            "has no zeros to inflate (its responses are strictly positive)"
            if not family.zero_in_support
            else "has no zero-inflated form here"
        )
        raise FamilyError(
            f"ziformula is given but the {family.name} family {what}; zero-inflation is for "
            f"{', '.join(names_with('zero_inflatable'))} counts. Drop ziformula=, or choose one of those families"
        )
    return rhs


def build_zero_inflation(rhs: str, data: pd.DataFrame) -> ZeroInflation:
    """The zero-inflation design of ``~ rhs`` on ``data`` (the model's rows, complete)."""
    data = numbers_as_floats(data, formula_variables(rhs))
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build the zero-inflation part '~ {rhs}'", rhs, exc) from None
    names = coefficient_names(mm.model_spec.column_names)
    X = np.asarray(mm, dtype=float)
    mean, centred = column_moments(X)
    keep, _ = independent_columns(len(X), mean, centred, names, what="zero-inflation model matrix")
    if len(keep) == 0:
        raise FormulaError(
            f"the zero-inflation part '~ {rhs}' has no columns left (no intercept, and no predictor that varies); "
            "write '~ 1' for a constant zero-inflation, or drop ziformula= for none"
        )
    return ZeroInflation(f"~ {rhs}", X[:, keep], [names[i] for i in keep], mm.model_spec, keep)
