"""midas_glmm: linear and generalized linear mixed models with lme4's answers in Python.

>>> from midas_glmm import MixedModel, datasets
>>> res = MixedModel.from_formula("score ~ hours + (1 | school)", datasets.load("schools")).fit()
>>> print(res.summary())  # doctest: +SKIP
"""

from . import datasets, plots
from .errors import (
    BoundaryTestWarning,
    ConvergenceWarning,
    DataError,
    FamilyError,
    FewGroupsWarning,
    FitError,
    FormulaError,
    LaplaceAccuracyWarning,
    MidasError,
    MidasWarning,
    NonIntegerSuccessesWarning,
    RankDeficiencyWarning,
    RefitWarning,
    ResponseLevelsWarning,
    SingularFitWarning,
)
from .families import Family, family
from .model import MixedModel
from .posthoc import anova, compare
from .results import MixedModelResults, load

__version__ = "0.1.0"

__all__ = [
    "MixedModel",
    "MixedModelResults",
    "Family",
    "family",
    "compare",
    "anova",
    "load",
    "datasets",
    "plots",
    "MidasError",
    "FormulaError",
    "DataError",
    "FamilyError",
    "FitError",
    "MidasWarning",
    "NonIntegerSuccessesWarning",
    "ResponseLevelsWarning",
    "SingularFitWarning",
    "ConvergenceWarning",
    "FewGroupsWarning",
    "LaplaceAccuracyWarning",
    "RankDeficiencyWarning",
    "RefitWarning",
    "BoundaryTestWarning",
]
