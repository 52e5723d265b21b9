"""Estimated marginal means and contrasts against R's emmeans (tests/reference/emmeans, made by
emmeans/make_emmeans.R): an LMM with a factor interaction (Kenward–Roger, Satterthwaite, by,
two specs; pairwise/Tukey, Bonferroni, trt.vs.ctrl/Holm, poly) and a binomial GLMM (link and
response scale). Tolerances of issue 14: means, SEs, df, estimates 1e-3 relative (KR df 1e-2),
p-values 1e-3."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import REF, read_reference_csv

from midas_glmm import MixedModel
from midas_glmm.errors import FitError


@pytest.fixture(scope="module")
def lmm():
    ref = json.loads((REF / "emmeans" / "crossed_interaction.json").read_text())
    df = read_reference_csv(REF / ref["data"])
    df["g2"] = np.where(df.z > 0.5, "hi", "lo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref, MixedModel.from_formula(ref["formula_py"], df).fit()


@pytest.fixture(scope="module")
def glmm():
    ref = json.loads((REF / "emmeans" / "cbpp_binomial.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref, MixedModel.from_formula(
            ref["formula_py"], read_reference_csv(REF / ref["data"]), family="binomial"
        ).fit()


def _compare(ours: pd.DataFrame, want: dict, df_rel=1e-3):
    for col, values in want.items():
        assert col in ours.columns, col
        if col == "df" and isinstance(values[0], str):  # "Inf" (asymptotic)
            assert np.all(np.isinf(ours[col]))
        elif isinstance(values[0], str):
            assert [str(v) for v in ours[col]] == values, col
        elif col == "p.value":
            assert np.allclose(ours[col], values, rtol=1e-3, atol=1e-6), col
        else:
            assert np.allclose(ours[col], values, rtol=df_rel if col == "df" else 1e-3, atol=1e-8), col


def test_lmm_marginal_means(lmm):
    ref, res = lmm
    _compare(res.emmeans("f"), ref["emm_f"], df_rel=1e-2)
    _compare(res.emmeans("f", ddf="satterthwaite"), ref["emm_f_satterthwaite"])
    _compare(res.emmeans("f", by="g2"), ref["emm_f_by_g2"], df_rel=1e-2)
    _compare(res.emmeans(["f", "g2"]), ref["emm_f_g2"], df_rel=1e-2)


def test_lmm_contrasts(lmm):
    ref, res = lmm
    _compare(res.contrasts("f"), ref["pairwise_tukey"], df_rel=1e-2)
    _compare(res.contrasts("f", adjust="bonferroni"), ref["pairwise_bonferroni"], df_rel=1e-2)
    _compare(res.contrasts("f", "trt.vs.ctrl", adjust="holm"), ref["trt_holm"], df_rel=1e-2)
    _compare(res.contrasts("f", "poly"), ref["poly"], df_rel=1e-2)
    _compare(res.contrasts("f", by="g2"), ref["pairwise_by_g2"], df_rel=1e-2)


def test_glmm_means_and_contrasts(glmm):
    ref, res = glmm
    _compare(res.emmeans("period"), ref["emm_period"])
    _compare(res.emmeans("period", type="response"), ref["emm_period_response"])
    _compare(res.contrasts("period"), ref["pairwise_tukey"])


def test_errors_name_the_fix(lmm):
    _, res = lmm
    with pytest.raises(FitError, match="Dunnett"):
        res.contrasts("f", "trt.vs.ctrl")
    with pytest.raises(FitError, match="'x' is numeric"):
        res.emmeans("x")
    with pytest.raises(FitError, match="not a variable of the fixed part"):
        res.emmeans("nope")
    with pytest.raises(FitError, match="unknown method"):
        res.contrasts("f", "helmert")
