"""ANOVA tables, joint and per-row contrast tests against lmerTest (Satterthwaite and
Kenward–Roger) and car's type 3 Wald chi-square (tests/reference/anova, made by
anova/make_anova.R). Tolerances of issue 14: F, DenDF, estimates, SEs 1e-3 relative (Kenward–
Roger DenDF 1e-2), p-values 1e-3."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import REF, read_reference_csv

from midas_glmm import MixedModel
from midas_glmm.errors import FitError

LMM_CASES = ["sleepstudy_slope", "crossed_factor", "crossed_interaction", "factor_interaction"]
DDF = {"Satterthwaite": "satterthwaite", "Kenward-Roger": "kenward-roger"}


def _fit(name):
    ref = json.loads((REF / "anova" / f"{name}.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_reference_csv(REF / ref["data"])
        if "g2" in ref["formula_py"]:  # make_anova.R's second factor
            data["g2"] = np.where(data.z > 0.5, "hi", "lo")
        res = MixedModel.from_formula(ref["formula_py"], data, family=ref.get("family")).fit()
    return ref, res


def _list(v):
    """R's jsonlite writes a one-element vector as a scalar."""
    return v if isinstance(v, list) else [v]


def _close(ours, theirs, rel, what):
    assert ours == pytest.approx(theirs, rel=rel, abs=1e-12), what


def _p_close(ours, theirs, what):
    assert ours == pytest.approx(theirs, rel=1e-3, abs=1e-6), what


@pytest.mark.parametrize("name", LMM_CASES)
def test_anova_tables_equal_lmertest(name):
    ref, res = _fit(name)
    for key in [k for k in ref if k.startswith("anova_type")]:
        type_ = int(key[len("anova_type")])
        ddf_r = key.split("_", 2)[2]
        table = res.anova(type=type_, ddf=DDF[ddf_r])
        assert list(table.index) == _list(ref["terms_py"])
        assert list(table.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
        for ours_term, r_term in zip(table.index, _list(ref[key]["rows"])):
            row, want = table.loc[ours_term], ref[key]["table"][r_term]
            what = f"{key} {ours_term}"
            assert row["NumDF"] == want["NumDF"], what
            for col in ("Sum Sq", "Mean Sq", "F value"):
                _close(row[col], want[col], 1e-3, f"{what} {col}")
            _close(row["DenDF"], want["DenDF"], 1e-2 if ddf_r == "Kenward-Roger" else 1e-3, f"{what} DenDF")
            _p_close(row["Pr(>F)"], want["Pr(>F)"], f"{what} p")


@pytest.mark.parametrize("ddf_r", list(DDF))
def test_contrast_tests_equal_lmertest_contest(ddf_r):
    ref, res = _fit("crossed_factor")
    L = np.array(ref["L"])
    joint, want = res.wald_test(L, ddf=DDF[ddf_r]), ref[f"contest_{ddf_r}"]
    assert joint["NumDF"] == want["NumDF"]
    _close(joint["F value"], want["F value"], 1e-3, "F")
    _close(joint["DenDF"], want["DenDF"], 1e-2 if ddf_r == "Kenward-Roger" else 1e-3, "DenDF")
    _p_close(joint["Pr(>F)"], want["Pr(>F)"], "p")
    rows, want = res.t_test(L, ddf=DDF[ddf_r]), ref[f"contest1D_{ddf_r}"]
    assert np.allclose(rows.estimate, want["Estimate"], rtol=1e-3)
    assert np.allclose(rows.std_err, want["Std. Error"], rtol=1e-3)
    assert np.allclose(rows.df, want["df"], rtol=1e-2 if ddf_r == "Kenward-Roger" else 1e-3)
    assert np.allclose(rows.statistic, want["t value"], rtol=1e-3)
    assert np.allclose(rows.p_value, want["Pr(>|t|)"], rtol=1e-3, atol=1e-6)
    assert np.allclose(rows.ci_low, want["lower"], rtol=1e-3)


def test_glmm_type3_wald_chisquare_equals_car():
    ref, res = _fit("cbpp_binomial")
    table = res.anova(type=3)
    want = ref["anova_type3_wald"]
    assert list(table.index) == ref["rows_py"]
    for ours, r in zip(table.index, want["rows"]):
        assert table.loc[ours, "Df"] == want["table"][r]["Df"]
        _close(table.loc[ours, "Chisq"], want["table"][r]["Chisq"], 5e-3, ours)
        assert table.loc[ours, "Pr(>Chisq)"] == pytest.approx(want["table"][r]["Pr(>Chisq)"], rel=2e-2)
    with pytest.raises(FitError, match="type=3"):
        res.anova(type=1)


def test_single_row_tests_agree_with_the_coefficient_table_and_errors():
    _, res = _fit("crossed_factor")
    p = len(res.params)
    for ddf, name in (("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward-roger")):
        table = res.coef_table(ddf=name)
        rows = res.t_test(np.eye(p), ddf=ddf)
        assert np.allclose(rows.df, table.df, rtol=1e-6)
        assert np.allclose(rows.std_err, table.std_err, rtol=1e-10)
        single = res.wald_test(np.eye(p)[[1]], ddf=ddf)
        assert single["F value"] == pytest.approx(rows.statistic[1] ** 2, rel=1e-8)
    chi = res.wald_test(np.eye(p)[1:], ddf="asymptotic")
    assert chi["Df"] == p - 1 and chi["Chisq"] > 0
    with pytest.raises(FitError, match="columns"):
        res.wald_test(np.eye(3))
    with pytest.raises(FitError, match="unknown ddf"):
        res.anova(ddf="residual")


RANOVA = json.loads((REF / "anova" / "ranova.json").read_text())["cases"]


@pytest.mark.parametrize("name", sorted(RANOVA))
def test_ranova_equals_lmertest(name):
    ref = RANOVA[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(ref["formula_py"], read_reference_csv(REF / ref["data"])).fit(
            method=ref["method"]
        )
    table = res.ranova()
    want = ref["ranova"]
    assert list(table.index) == _list(want["rows"])
    assert list(table.columns) == ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"]
    assert list(table.npar) == _list(want["npar"])
    assert np.allclose(table.logLik, want["logLik"], rtol=0, atol=1e-4)
    assert np.allclose(table.AIC, want["AIC"], rtol=0, atol=1e-3)
    lrt = [v for v in _list(want["LRT"]) if v is not None]
    assert np.allclose(table.LRT.iloc[1:], lrt, rtol=1e-4, atol=1e-4)
    assert list(table.Df.iloc[1:]) == [v for v in _list(want["Df"]) if v is not None]
    p = [v for v in _list(want["p"]) if v is not None]
    assert np.allclose(table["Pr(>Chisq)"].iloc[1:], p, rtol=1e-3, atol=1e-12)
    assert np.isnan(table.loc["<none>", "LRT"])


def test_ranova_refuses_glmms():
    _, res = _fit("cbpp_binomial")
    with pytest.raises(FitError, match="linear mixed model"):
        res.ranova()


def test_summary_prints_the_anova_table():
    _, res = _fit("crossed_factor")
    text = str(res.summary(ddf="satterthwaite", anova=True))
    assert "Type III ANOVA table (Satterthwaite denominator df):" in text
    table = res.anova(type=3)
    assert f"{table.loc['C(f)', 'DenDF']:.4f}"[:6] in text
    assert "Type III" not in str(res.summary())
    html = res.summary(ddf="kenward-roger", anova=True).as_html()
    assert "Kenward-Roger" in html and "F value" in html


@pytest.mark.parametrize("name", LMM_CASES)
def test_drop1_equals_lmertest(name):
    ref, res = _fit(name)
    for ddf_r in DDF:
        table, want = res.drop1(ddf=DDF[ddf_r]), ref[f"drop1_{ddf_r}"]
        r_rows = _list(want["rows"])
        assert len(table) == len(r_rows)
        for ours_term, r_term in zip(table.index, r_rows):
            row, w = table.loc[ours_term], want["table"][r_term]
            assert row["NumDF"] == w["NumDF"]
            _close(row["F value"], w["F value"], 1e-3, f"{ours_term} F")
            _close(row["DenDF"], w["DenDF"], 1e-2 if ddf_r == "Kenward-Roger" else 1e-3, f"{ours_term} DenDF")
            _p_close(row["Pr(>F)"], w["Pr(>F)"], f"{ours_term} p")


def test_type3_with_other_codings_refuses_clearly():
    ref, _ = _fit("factor_interaction")
    data = read_reference_csv(REF / ref["data"])
    data["g2"] = np.where(data.z > 0.5, "hi", "lo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ C(f, Sum) * g2 + x + (1|subj) + (1|item)", data).fit()
    with pytest.raises(FitError, match="not treatment-coded"):
        res.anova(type=3)
    assert list(res.anova(type=1).index) == ["C(f, Sum)", "g2", "x", "C(f, Sum):g2"]


def test_type3_basis_is_not_built_when_too_large(monkeypatch):
    from midas_glmm.design import type3

    monkeypatch.setattr(type3, "MAX_ALL_LEVELS_CELLS", 100)
    ref, _ = _fit("crossed_factor")
    data = read_reference_csv(REF / ref["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ x * C(f) + (1|subj) + (1|item)", data).fit()
    assert "unsupported" in res.design.type3
    with pytest.raises(FitError, match="all-levels design would have"):
        res.anova(type=3)
    assert len(res.anova(type=1)) == 3
