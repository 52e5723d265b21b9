"""The library's exceptions and warnings.

Every mistake a user can make raises a subclass of :class:`MidasError` (itself a
``ValueError``) whose message names the column, term or value at fault and what to do.
Statistical cautions are warnings, subclasses of :class:`MidasWarning` (a ``UserWarning``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MidasError(ValueError):
    """Base class of every error midas_glmm raises for bad input."""


class FormulaError(MidasError):
    """The model formula is malformed or names something that does not exist."""


class DataError(MidasError):
    """The data cannot be used for the model (missing columns, wrong types, bad values)."""


class FamilyError(MidasError):
    """Unknown family or link, or a response outside the family's support."""


class FitError(MidasError):
    """A fitting option is invalid for the model (method, nAGQ, optimizer)."""


class MidasWarning(UserWarning):
    """Base class of midas_glmm's statistical warnings."""


class SingularFitWarning(MidasWarning):
    """The fit is on the boundary: a variance is zero or a correlation is ±1."""


#: what a singular fit warns (lme4's "boundary (singular) fit")
SINGULAR_FIT = (
    "boundary (singular) fit: a random-effect variance is (near) zero or a correlation is ±1 "
    "(θ on its bound); the random-effects structure is too rich for the data: simplify it"
)


class ConvergenceWarning(MidasWarning):
    """The optimizer or PIRLS did not converge cleanly."""


class FewGroupsWarning(MidasWarning):
    """A grouping factor has so few levels that its variance is poorly estimated."""


class LaplaceAccuracyWarning(MidasWarning):
    """Small groups or rare events: the Laplace approximation may be inaccurate."""


class RankDeficiencyWarning(MidasWarning):
    """The fixed-effects design is rank deficient; columns were dropped."""


class ResponseLevelsWarning(MidasWarning):
    """A binomial response with more than two levels: every level but the first is a success."""


class NonIntegerSuccessesWarning(MidasWarning):
    """A binomial response whose successes (proportion × trials) are not whole numbers."""


class RefitWarning(MidasWarning):
    """A REML fit was refitted by ML for a likelihood-ratio comparison."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class BoundaryTestWarning(MidasWarning):
    """A likelihood-ratio test whose null value is on the boundary of the parameter space
    (Poisson against negative binomial: θ = ∞); the chi-square p-value is conservative."""
