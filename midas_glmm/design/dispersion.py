"""The dispersion part of a design (glmmTMB's ``dispformula``): a one-sided formula of fixed
effects for the log of each row's dispersion, log φᵢ = (X_d γ)ᵢ.

φ is the family's own dispersion on glmmTMB's scale: the residual variance σᵢ² of a Gaussian
model (glmmTMB 1.1.5 models log σ², not log σ), the size θ of nbinom2, φ of nbinom1
(variance μ(1 + φ)) and the precision φ of beta. ``"~ 1"`` is the default (one φ);
``"~ 0"`` (Gaussian only) leaves no residual: the model's last random-effects term carries it
(nlme's ``correlation =`` structures, e.g. ``(1 | g) + ar1(0 + time | g)``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import FamilyError
from ..families import names_with
from .sideformula import SideFormula, side_matrix, side_rhs

__all__ = ["DispersionModel", "build_dispersion", "dispersion_rhs", "NO_RESIDUAL"]

#: the right-hand side of glmmTMB's ``dispformula = ~0``: no residual variance
NO_RESIDUAL = "0"


class DispersionModel(SideFormula):
    """The dispersion part of a model: its formula (``"~ arm"``) and X_d, whose column names are
    glmmTMB's ``fixef(m)$disp`` (:class:`~.sideformula.SideFormula`); no columns for ``"~ 0"``."""

    @property
    def no_residual(self) -> bool:
        """``"~ 0"``: no residual variance (Gaussian)."""
        return self.rhs.replace(" ", "") in (NO_RESIDUAL, "-1")

    def variables(self) -> set[str]:
        """Columns the formula reads."""
        return set() if self.no_residual else super().variables()

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
    rhs = side_rhs(dispformula, "dispformula", "one dispersion")
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
    constant = "write '~ 1' for one dispersion"
    return DispersionModel(f"~ {rhs}", *side_matrix(rhs, data, "the dispersion part", constant))
