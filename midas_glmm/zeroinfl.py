"""Zero-inflation (glmmTMB's ``ziformula``): a logit model for structural zeros.

A row is a structural zero with probability π = logit⁻¹(X_zi γ) and otherwise a draw from the
conditional family f(· | μ) (Poisson, NB2, NB1):

    log f_zi(0) = log(π + (1 − π) f(0 | μ)),    log f_zi(y) = log(1 − π) + log f(y | μ),  y > 0.

The random effects belong to the conditional model only, so with γ fixed PIRLS and the Laplace
approximation work on log f_zi as a function of η as they do on any family's log f; γ is an
outer parameter of the likelihood, as β is (:func:`~midas_glmm.pirls.fit_glmm`). In η, with
r = (1 − π) f(0 | μ) / f_zi(0) the probability that a zero came from the count part,

    ∂ log f_zi(0)/∂η = r s₀,    −∂² log f_zi(0)/∂η² = r o₀ − r (1 − r) s₀²,

s₀ and o₀ the score and observed information of log f(0 | μ); rows with y > 0 keep the
conditional family's. The observed information may be negative on a zero row (the mixture is not
log-concave in η); the Laplace log-determinant takes it as it is, as glmmTMB's exact Hessian does.
"""

from __future__ import annotations

from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .design import (
    _formulaic_names,
    _rename,
    column_moments,
    formulaic_error,
    independent_columns,
    numbers_as_floats,
)
from .errors import FamilyError, FormulaError

__all__ = ["ZeroInflation", "build_zero_inflation", "ZI_FAMILIES"]

#: conditional families that take a zero-inflation part (glmmTMB's and the issue's list)
ZI_FAMILIES = ("poisson", "nbinom2", "nbinom1")


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
        rows = numbers_as_floats(rows, _formulaic_names(self.rhs))
        return np.asarray(self.spec.get_model_matrix(rows), dtype=float)[:, self.keep]

    @property
    def rhs(self) -> str:
        """The formula's right-hand side."""
        return self.formula.split("~", 1)[1].strip()

    def variables(self) -> set[str]:
        """Columns the formula reads."""
        return _formulaic_names(self.rhs)


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
    if family.name not in ZI_FAMILIES:
        what = (
            "has no zeros to inflate (its responses are strictly positive)"
            if family.name in ("gamma", "beta")
            else "has no zero-inflated form here"
        )
        raise FamilyError(
            f"ziformula is given but the {family.name} family {what}; zero-inflation is for "
            f"{', '.join(ZI_FAMILIES)} counts. Drop ziformula=, or choose one of those families"
        )
    return rhs


def build_zero_inflation(rhs: str, data: pd.DataFrame) -> ZeroInflation:
    """The zero-inflation design of ``~ rhs`` on ``data`` (the model's rows, complete)."""
    data = numbers_as_floats(data, _formulaic_names(rhs))
    try:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build the zero-inflation part '~ {rhs}'", rhs, exc) from None
    names = _rename(mm.model_spec.column_names)
    X = np.asarray(mm, dtype=float)
    mean, centred = column_moments(X)
    keep, _ = independent_columns(len(X), mean, centred, names, what="zero-inflation model matrix")
    if len(keep) == 0:
        raise FormulaError(
            f"the zero-inflation part '~ {rhs}' has no columns left (no intercept, and no predictor that varies); "
            "write '~ 1' for a constant zero-inflation, or drop ziformula= for none"
        )
    return ZeroInflation(f"~ {rhs}", X[:, keep], [names[i] for i in keep], mm.model_spec, keep)


class ZeroInflatedRows:
    """The zero-inflated log-likelihood of a block of rows and its derivatives in η, at γ."""

    def __init__(self, zi: ZeroInflation, y: np.ndarray):
        self.X = zi.X
        self.zero = y == 0
        self.set(np.zeros(zi.X.shape[1]))

    def set(self, gamma: np.ndarray) -> None:
        """Use γ: the linear predictor ζ = X_zi γ, and log π and log(1 − π) per row."""
        self.gamma = np.array(gamma, dtype=float)
        self.zeta = self.X @ self.gamma
        self.logpi, self.log1mpi = _log_probs(self.zeta)

    def loglik_rows(self, ll_cond: np.ndarray, dzeta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(log f_zi per row, r per row) from the conditional family's unweighted log f (with
        ζ shifted by ``dzeta``: the gradient's differences)."""
        logpi, log1mpi = (self.logpi, self.log1mpi) if dzeta == 0.0 else _log_probs(self.zeta + dzeta)
        ll = log1mpi + ll_cond
        r = np.ones_like(ll)
        z = self.zero
        mixed = np.logaddexp(logpi[z], ll[z])
        r[z] = np.exp(ll[z] - mixed)
        ll[z] = mixed
        return ll, r

    @staticmethod
    def derivatives(r, score, observed, expected):
        """(score, observed, a positive information for Newton steps) of log f_zi in η."""
        obs = r * observed - r * (1.0 - r) * score * score
        return r * score, obs, r * expected


def _log_probs(zeta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log π, log(1 − π)) for π = logit⁻¹(ζ), without overflow."""
    return -np.logaddexp(0.0, -zeta), -np.logaddexp(0.0, zeta)
