"""The dispersion part of a design (glmmTMB's ``dispformula``): a one-sided formula of fixed
effects for the log of each row's dispersion, log φᵢ = (X_d γ)ᵢ.

φ is the family's own dispersion on glmmTMB's scale: the residual variance σᵢ² of a Gaussian
model (glmmTMB 1.1.5 models log σ², not log σ), the size θ of nbinom2, φ of nbinom1
(variance μ(1 + φ)) and the precision φ of beta. ``"~ 1"`` is the default (one φ);
``"~ 0"`` (Gaussian only) leaves no residual: the model's last random-effects term carries it
(nlme's ``correlation =`` structures, e.g. ``(1 | g) + ar1(0 + time | g)``).
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

__all__ = ["DispersionModel", "build_dispersion", "dispersion_rhs", "NO_RESIDUAL"]

#: the right-hand side of glmmTMB's ``dispformula = ~0``: no residual variance
NO_RESIDUAL = "0"


@dataclass
class DispersionModel:
    """The dispersion part of a model: its formula and design.

    Attributes
    ----------
    formula : str
        The one-sided formula as given (``"~ arm"``).
    X : ndarray (n, k)
        Its model matrix on the rows the model uses (no columns for ``"~ 0"``).
    names : list of str
        Column names of X (glmmTMB's ``fixef(m)$disp``).
    spec : formulaic ModelSpec or None
        Replays X on new rows (predictions of the dispersion).
    keep : ndarray
        The columns of the spec's matrix kept by the rank check.
    """

    formula: str
    X: np.ndarray
    names: list[str]
    spec: object
    keep: np.ndarray

    @property
    def no_residual(self) -> bool:
        """``"~ 0"``: no residual variance (Gaussian)."""
        return self.rhs.replace(" ", "") in (NO_RESIDUAL, "-1")

    @property
    def rhs(self) -> str:
        """The formula's right-hand side."""
        return self.formula.split("~", 1)[1].strip()

    def matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """X_d on (new) rows, the columns the fit kept."""
        rows = numbers_as_floats(rows, formula_variables(self.rhs))
        return np.asarray(self.spec.get_model_matrix(rows), dtype=float)[:, self.keep]

    def variables(self) -> set[str]:
        """Columns the formula reads."""
        return set() if self.no_residual else formula_variables(self.rhs)

    def constant_coordinates(self) -> np.ndarray | None:
        """c with X_d c = 1 when the constant is in the span of X_d (an intercept, or a factor's
        every level): then one common scale of φ can be profiled out; else None."""
        if not self.X.shape[1]:
            return None
        c, *_ = np.linalg.lstsq(self.X, np.ones(len(self.X)), rcond=None)
        return c if np.allclose(self.X @ c, 1.0, rtol=0, atol=1e-8) else None


def dispersion_rhs(dispformula, family) -> str | None:
    """The right-hand side of a ``dispformula`` (None for glmmTMB's default ``"~ 1"``); a
    FamilyError for a family without a dispersion to model, a FormulaError for a malformed one."""
    if dispformula is None:
        return None
    if not isinstance(dispformula, str) or "~" not in dispformula:
        raise FormulaError(f"dispformula must be a one-sided formula such as '~ 1' or '~ x', not {dispformula!r}")
    lhs, rhs = dispformula.split("~", 1)
    rhs = rhs.strip()
    if lhs.strip():
        raise FormulaError(f"dispformula '{dispformula}' has a left-hand side; write it one-sided, as '~ {rhs}'")
    if "|" in rhs:
        raise FormulaError(
            f"dispformula '{dispformula}' has a random-effects term; the dispersion part takes fixed effects only"
        )
    if not rhs:
        raise FormulaError(f"dispformula '{dispformula}' has nothing after '~'; write '~ 1' for one dispersion")
    if rhs.replace(" ", "") == "1":
        return None
    if not family.dispersion_model:
        raise FamilyError(
            f"dispformula is given but the {family.name} family has no dispersion parameter to model; "
            f"dispformula is for {', '.join(names_with('dispersion_model'))} models"
        )
    if rhs.replace(" ", "") in (NO_RESIDUAL, "-1") and not family.residual_scale:
        raise FamilyError(
            f"dispformula '~ 0' (no residual variance) is for Gaussian models; the {family.name} family's "
            "dispersion is part of its distribution"
        )
    return rhs


def build_dispersion(rhs: str, data: pd.DataFrame) -> DispersionModel:
    """The dispersion design of ``~ rhs`` on ``data`` (the model's rows, complete)."""
    if rhs.replace(" ", "") in (NO_RESIDUAL, "-1"):
        return DispersionModel(f"~ {rhs}", np.zeros((len(data), 0)), [], None, np.zeros(0, np.int64))
    data = numbers_as_floats(data, formula_variables(rhs))
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build the dispersion part '~ {rhs}'", rhs, exc) from None
    names = coefficient_names(mm.model_spec.column_names)
    X = np.asarray(mm, dtype=float)
    mean, centred = column_moments(X)
    keep, _ = independent_columns(len(X), mean, centred, names, what="dispersion model matrix")
    if len(keep) == 0:
        raise FormulaError(
            f"the dispersion part '~ {rhs}' has no columns left (no intercept, and no predictor that varies); "
            "write '~ 1' for one dispersion"
        )
    return DispersionModel(f"~ {rhs}", X[:, keep], [names[i] for i in keep], mm.model_spec, keep)
