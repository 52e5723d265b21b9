"""Datasets that ship with midas_glmm.

====================  ======================================================================
name                  what it is
====================  ======================================================================
``sleepstudy``        Reaction times (ms) of 18 subjects over 10 days of sleep deprivation
                      (Belenky et al. 2003, J. Sleep Res. 12:1-12); as in lme4's ``sleepstudy``.
                      Columns Reaction, Days, Subject.
``dyestuff``          Yield of dyestuff from 6 batches of an intermediate product, 5 samples
                      each (Davies & Goldsmith 1972); lme4's ``Dyestuff``. Columns Batch, Yield.
``penicillin``        Diameter of growth-inhibition zones for 6 penicillin samples on 24
                      plates, a fully crossed design (Davies & Goldsmith 1972); lme4's
                      ``Penicillin``. Columns diameter, plate, sample.
``cbpp``              Contagious bovine pleuropneumonia: new cases per herd (15 herds) and
                      period (4), with herd size (Lesnoff et al. 2004); lme4's ``cbpp``.
                      Columns herd, incidence, size, period.
``schools``           Simulated students in schools (the seed's example): 40 schools with
                      5-60 students, score = 50 + 2.5·hours + u_school + e, sd(u) = 4,
                      sd(e) = 8 (seed 20261124 in R, see tests/reference/make_reference.R).
                      Columns school, hours, score.
``salamanders``       Counts of stream salamanders (7 species or life stages, ``spp``) in 23
                      sites, some affected by mountaintop removal mining (``mined``) (Price et
                      al. 2016, J. Appl. Ecol. 53:459-468); as in glmmTMB's ``Salamanders``
                      (its columns site, mined, spp, count; ``spp`` and ``mined`` in R's level
                      order: first level GP and yes).
``owls``              Sibling negotiation calls of barn owl nestlings (``NCalls``) by nest (27),
                      food treatment and the sex of the parent present, with brood size
                      (Roulin & Bersier 2007, Anim. Behav. 74:1099-1106); as in glmmTMB's
                      ``Owls``. Columns NCalls, FoodTreatment, SexParent, BroodSize, Nest.
====================  ======================================================================
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import DataError

__all__ = ["load", "names"]

_DTYPES = {
    "sleepstudy": {"Subject": str},
    "dyestuff": {"Batch": str},
    "penicillin": {"plate": str, "sample": str},
    "cbpp": {"herd": str, "period": str},
    "schools": {"school": str},
    "salamanders": {"site": str},
    "owls": {"Nest": str},
}
#: factor columns whose level order is R's (the first level is the reference of C(x) contrasts)
_LEVELS = {
    "salamanders": {"spp": ["GP", "PR", "DM", "EC-A", "EC-L", "DES-L", "DF"], "mined": ["yes", "no"]},
    "owls": {"FoodTreatment": ["Deprived", "Satiated"], "SexParent": ["Female", "Male"]},
}


def names() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_DTYPES)


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset as a DataFrame (grouping columns as strings).

    Examples
    --------
    >>> load("sleepstudy").shape
    (180, 3)
    """
    if name not in _DTYPES:
        raise DataError(f"unknown dataset '{name}'; available: {', '.join(names())}")
    with resources.files(__package__).joinpath(f"{name}.csv").open("r") as fh:
        df = pd.read_csv(fh, dtype=_DTYPES[name])
    for col, levels in _LEVELS.get(name, {}).items():
        df[col] = pd.Categorical(df[col], categories=levels)
    return df
