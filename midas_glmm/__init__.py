"""midas_glmm: linear and generalized linear mixed models with lme4's answers in Python.

>>> from midas_glmm import MixedModel, datasets
>>> res = MixedModel.from_formula("score ~ hours + (1 | school)", datasets.load("schools")).fit()
>>> print(res.summary())  # doctest: +SKIP

The names below load their modules when first used (``import midas_glmm`` reads only the
exceptions), so a script pays at import for what it uses.
"""

from __future__ import annotations

import importlib

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

__version__ = "0.1.0"

#: public name → (module, attribute; None for the module itself)
_LAZY = {
    "MixedModel": (".model", "MixedModel"),
    "MixedModelResults": (".results", "MixedModelResults"),
    "load": (".results", "load"),
    "Family": (".families", "Family"),
    "family": (".families", "family"),
    "compare": (".posthoc", "compare"),
    "anova": (".posthoc", "anova"),
    "datasets": (".datasets", None),
    "plots": (".plots", None),
}

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


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'midas_glmm' has no attribute '{name}'")
    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # the next use finds it without this call
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
