"""emmeans' conventions beyond the arithmetic, against emmeans 1.8.4 (tests/reference/issue24,
made by make_issue24.R): a 0/1 covariate kept at both values (``cov.keep = "2"``), means of a
rank-deficient design that are not estimable (``nonEst``), and Tukey's adjustment turned into
Šidák's for families that are not pairwise."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import read_reference_csv

from midas_glmm import MixedModel
from midas_glmm.errors import MidasWarning

REF = Path(__file__).resolve().parents[1] / "reference" / "issue24"
#: relative tolerances (p-values as test_emmeans.py: R's ptukey and scipy's studentized range
#: agree to 1e-3 relative, 1e-6 absolute, in the tails)
TOL = {"emmean": 1e-6, "estimate": 1e-6, "SE": 1e-5, "df": 1e-4, "p.value": 1e-3}


def _case(name):
    ref = json.loads((REF / f"{name}.json").read_text())
    data = read_reference_csv(REF / ref["data"])
    formula = ref["formula"].replace(" * ", " * ").replace("f + d", "C(f) + d").replace("a * b", "C(a) * C(b)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, data).fit()
    return ref, res


def _same(got: pd.DataFrame, want: dict, columns):
    for col in columns:
        w = np.array([np.nan if v is None else v for v in want[col]], dtype=float)
        g = got[col].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(g), np.isnan(w)), col
        ok = ~np.isnan(w)
        assert g[ok] == pytest.approx(w[ok], rel=TOL.get(col, 1e-6), abs=1e-6 if col == "p.value" else 1e-9), col


def test_a_two_valued_covariate_is_kept_at_both_values():
    ref, res = _case("emm_covkeep")
    assert ref["cov_keep_option"] == "2"
    _same(res.emmeans("f"), ref["emm_f"]["table"], ["emmean", "SE", "df", "lower.CL", "upper.CL"])
    _same(res.emmeans("d"), ref["emm_d"]["table"], ["emmean", "SE", "df"])
    # at d's mean the means differ (emmeans' cov.keep = character(0)): the default is not that
    at_mean = np.array(ref["emm_f_cov_keep_none"]["table"]["emmean"])
    assert not np.allclose(res.emmeans("f")["emmean"].to_numpy(), at_mean, rtol=1e-3)


def test_non_estimable_means_are_nan_with_a_note():
    ref, res = _case("emm_nonest")
    assert res.design.dropped_columns  # the empty cell a3:b3 aliases a column, as in lme4
    with pytest.warns(MidasWarning, match="not estimable"):
        ab = res.emmeans(["a", "b"])
    _same(ab, ref["emm_ab"]["table"], ["emmean", "SE", "df"])
    assert ab.attrs["notes"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same(res.emmeans("a"), ref["emm_a"]["table"], ["emmean", "SE", "df", "lower.CL", "upper.CL"])
        _same(res.emmeans("b", by="a"), ref["emm_b_by_a"]["table"], ["emmean", "SE", "df"])
        pairs = res.contrasts("b", by="a")
        _same(pairs, ref["pairs_b_by_a"]["table"], ["estimate", "SE", "df", "t.ratio", "p.value"])
        _same(res.contrasts("a"), ref["pairs_a"]["table"], ["estimate", "SE", "df", "t.ratio", "p.value"])


@pytest.mark.parametrize("method", ["trt.vs.ctrl", "poly"])
def test_tukey_becomes_sidak_outside_pairwise_families(method):
    ref, res = _case("emm_sidak")
    key = "trt_vs_ctrl" if method == "trt.vs.ctrl" else "poly"
    with pytest.warns(MidasWarning, match='adjust = "tukey" was changed to "sidak"'):
        table = res.contrasts("f", method=method, adjust="tukey")
    assert 'adjust = "tukey" was changed to "sidak"' in ref[f"{key}_tukey"]["messages"]
    _same(table, ref[f"{key}_tukey"]["table"], ["estimate", "SE", "df", "t.ratio", "p.value"])
    assert table["p.value"].tolist() == res.contrasts("f", method=method, adjust="sidak")["p.value"].tolist()
    _same(res.contrasts("f"), ref["pairwise_tukey"]["table"], ["estimate", "SE", "df", "p.value"])
