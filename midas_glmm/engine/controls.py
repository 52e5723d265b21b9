"""The user's controls of a fit and their checks: ``fit(start=, maxiter=, verbose=)``, read by
every optimizer run of the fit, and the nAGQ values lme4 accepts."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from dataclasses import dataclass

import numpy as np

from ..checks import check_count
from ..design import Design, ThetaMap
from ..errors import FitError
from ..families import FAMILIES, Family

__all__ = [
    "FitControl",
    "fit_control",
    "current_control",
    "check_start",
    "check_maxiter",
    "check_quadrature",
    "MAX_NAGQ",
]


@dataclass
class FitControl:
    """The user's controls of one fit (``fit(start=, maxiter=, verbose=)``), read by every
    optimizer run of that fit: ``start`` θ (None: the engine's own start), ``maxiter`` the most
    criterion evaluations of one optimizer run (None: the engine's), ``verbose`` a line per
    evaluation on stderr (evaluation, criterion, parameters)."""

    start: np.ndarray | None = None
    maxiter: int | None = None
    verbose: bool = False
    hit_limit: bool = False
    evaluations: int = 0

    def report(self, x: np.ndarray, value: float) -> None:
        self.evaluations += 1
        if self.verbose:
            shown = np.array2string(np.asarray(x)[:8], precision=5, separator=", ")
            more = " ..." if len(x) > 8 else ""
            print(f"  eval {self.evaluations:5d}  criterion {value: .8f}  par {shown}{more}", file=sys.stderr)


_CONTROL: contextvars.ContextVar[FitControl | None] = contextvars.ContextVar("midas_fit_control", default=None)


@contextlib.contextmanager
def fit_control(control: FitControl | None):
    """Make ``control`` the controls of the optimizer runs inside the block."""
    token = _CONTROL.set(control)
    try:
        yield control
    finally:
        _CONTROL.reset(token)


def current_control() -> FitControl | None:
    """The controls of the fit being run (None outside ``fit(start=, maxiter=, verbose=)``)."""
    return _CONTROL.get()


def check_start(start, design: Design) -> np.ndarray | None:
    """The user's starting θ as a vector of the model's θ length, on or above its bounds."""
    if start is None:
        return None
    if hasattr(start, "theta") and hasattr(start, "params"):  # an earlier fit
        start = start.theta
    if isinstance(start, dict):
        unknown = set(start) - {"theta"}
        if unknown:
            raise FitError(f"start= takes {{'theta': [...]}}; unknown key(s) {sorted(unknown)}")
        start = start.get("theta")
    tm = ThetaMap(design.terms)
    try:
        theta = np.asarray(start, dtype=float).ravel()
    except (TypeError, ValueError):
        raise FitError(f"start= must be numbers (θ in the order of res.theta), not {start!r}") from None
    if len(theta) != len(tm):
        raise FitError(
            f"start= has {len(theta)} values but this model has {len(tm)} θ parameters ({', '.join(tm.names)})"
        )
    bad = ~np.isfinite(theta) | (theta < tm.lower)
    if bad.any():
        i = int(np.argmax(bad))
        raise FitError(
            f"start value {theta[i]!r} for {tm.names[i]} is outside its range (finite, >= {tm.lower[i]:g}): "
            "standard-deviation ratios start at 0 or above"
        )
    return theta


def check_maxiter(maxiter) -> int | None:
    """``maxiter`` as a positive integer (None: the engine's own limit)."""
    return None if maxiter is None else check_count(maxiter, "maxiter (the most criterion evaluations)")


#: lme4's largest number of Gauss–Hermite nodes
MAX_NAGQ = 100


def check_quadrature(nAGQ, fast: bool, design: Design, family: Family) -> None:
    """Refuse, before any fitting, the nAGQ values lme4 refuses: not a positive integer, more
    than 100 nodes, or nAGQ > 1 for anything but one scalar random-effects term of a binomial
    or Poisson model."""
    if isinstance(nAGQ, bool) or not isinstance(nAGQ, (int, np.integer)) or nAGQ < 1:
        raise FitError(f"nAGQ must be a positive integer, not {nAGQ!r} (1 = Laplace; lme4's nAGQ=0 is fast=True here)")
    if design.zi is not None and (nAGQ != 1 or fast):
        raise FitError(
            "a zero-inflated model is fitted by the Laplace approximation only (as glmmTMB): drop nAGQ= and fast="
        )
    if nAGQ == 1 or family.is_lmm:  # an LMM refuses any nAGQ but 1 itself, in fit()
        return
    if nAGQ > MAX_NAGQ:
        raise FitError(
            f"nAGQ = {nAGQ} is more than lme4's limit of {MAX_NAGQ} quadrature nodes; "
            "a few (5 to 25) are enough for adaptive Gauss–Hermite"
        )
    terms = design.terms
    if len(terms) != 1 or terms[0].p != 1:
        found = ", ".join(t.label for t in terms)
        raise FitError(
            f"nAGQ > 1 is only available for models with a single, scalar random-effects term such as "
            f"(1 | g), as in lme4; this model has {found}. Use nAGQ=1 (Laplace)"
        )
    if not family.agq:
        labels = [cls.label for cls in FAMILIES.values() if cls.agq]
        available = ", ".join(labels[:-1]) + " and " + labels[-1]
        raise FitError(f"nAGQ > 1 is available for {available} models, not {family.name}; use nAGQ=1")
    if fast:
        raise FitError("fast=True (lme4's nAGQ=0) cannot be combined with nAGQ > 1")
