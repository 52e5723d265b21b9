"""glmmTMB 1.1.5's conventions for its families beyond the estimates: Pearson residuals (its
variance functions) and zero prior weights (rows left out). References: tests/reference/issue24,
made by make_issue24.R."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import read_reference_csv

from midas_glmm import MixedModel

REF = Path(__file__).resolve().parents[1] / "reference" / "issue24"


def _fit(formula, data, family, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, data, family=family, **kw).fit()


@pytest.mark.parametrize("case", ["beta", "salamanders_nbinom1"])
def test_pearson_residuals_are_glmmtmbs(case):
    ref = json.loads((REF / "beta_pearson.json").read_text())[case]
    data = read_reference_csv(REF / ref["data"])
    if case == "salamanders_nbinom1":  # R's level order (the first level is the reference)
        for col, levels in ref["factor_levels"].items():
            data[col] = data[col].astype("category").cat.reorder_categories(levels)
    family = "beta" if case == "beta" else ref["family"]
    res = _fit(ref["formula"].replace("spp + mined", "C(spp) + C(mined)"), data, family)
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-3)
    assert res.fittedvalues.to_numpy() == pytest.approx(np.array(ref["fitted"]), rel=2e-3)
    want = np.array(ref["residuals_pearson"])
    assert res.resid_pearson.to_numpy() == pytest.approx(want, rel=5e-3, abs=5e-3 * np.abs(want).max())


@pytest.mark.parametrize("family", ["nbinom2", "beta"])
def test_zero_weights_as_glmmtmb(family):
    """Fits with zero prior weights equal glmmTMB's, which equal its fits without those rows."""
    ref = json.loads((REF / "zero_weights.json").read_text())
    data = read_reference_csv(REF / ref["data"])
    response = "count" if family == "nbinom2" else "prop"
    res = _fit(f"{response} ~ x + (1|g)", data, family, weights="w")
    want = ref[f"{family}_all"]
    assert ref[f"{family}_positive"]["loglik"] == pytest.approx(want["loglik"], abs=1e-8)
    assert res.llf == pytest.approx(want["loglik"], abs=1e-3)
    assert res.params.to_numpy() == pytest.approx(np.array(list(want["fixef"].values())), rel=5e-3)
    assert res.sigma == pytest.approx(want["sigma"], rel=5e-3)
