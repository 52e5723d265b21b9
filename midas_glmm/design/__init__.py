"""The design layer: from a formula and data to what the engines read.

``formula`` parses lme4's syntax; ``columns`` bridges the formula's text, the DataFrame's
columns and formulaic; ``response`` and ``fixed`` build y, weights, offsets and X (rank checked,
centred and scaled); ``reterms`` holds the random-effects terms and θ's layout; ``design``
assembles a :class:`Design`, which ``replay`` re-applies to new rows; ``blocks`` is the data
pass (the cross-product blocks of [Z X y]); ``daskdata`` builds the same design from a Dask
DataFrame; ``grid``, ``type3`` and ``zeroinfl`` add what emmeans, type 3 tests and a
zero-inflation part need from the rows.
"""

from __future__ import annotations

from .blocks import CrossProducts
from .design import Design, build_design, design_from_arrays
from .fixed import standardize
from .formula import ParsedFormula, parse_formula, update_formula
from .reterms import ReTerm, ThetaMap

__all__ = [
    "CrossProducts",
    "Design",
    "ParsedFormula",
    "ReTerm",
    "ThetaMap",
    "build_design",
    "design_from_arrays",
    "parse_formula",
    "standardize",
    "update_formula",
]
