"""The zero-inflation part of a design (glmmTMB's ``ziformula``): a one-sided formula of fixed
effects for the logit of the probability π of a structural zero, and its model matrix X_zi.

The mixture's likelihood is the family layer's (:mod:`~midas_glmm.families.mixture`); γ, the
coefficients of X_zi, is an outer parameter of the fit, as β is
(:func:`~midas_glmm.engine.pirls.fit_glmm`).
"""

from __future__ import annotations

import pandas as pd

from ..errors import FamilyError
from ..families import names_with
from .sideformula import SideFormula, side_matrix, side_rhs

__all__ = ["ZeroInflation", "build_zero_inflation", "zi_rhs"]


class ZeroInflation(SideFormula):
    """The zero-inflation part of a model: its formula (``"~ spp + mined"``) and X_zi, whose
    column names are glmmTMB's ``fixef(m)$zi`` (:class:`~.sideformula.SideFormula`)."""


def zi_rhs(ziformula, family) -> str | None:
    """The right-hand side of a ``ziformula`` (None for no zero-inflation: None or ``"~0"``);
    a FamilyError for a family without a zero-inflated form, a FormulaError for a malformed one."""
    if ziformula is None:
        return None
    rhs = side_rhs(ziformula, "ziformula", "a constant zero-inflation")
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
    constant = "write '~ 1' for a constant zero-inflation, or drop ziformula= for none"
    return ZeroInflation(f"~ {rhs}", *side_matrix(rhs, data, "the zero-inflation part", constant))
