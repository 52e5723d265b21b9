"""Inference tools against lmerTest, pbkrtest and lme4 (reference fields satterthwaite,
kenward_roger, profile_ci, and the ML fits of nested models), plus properties of the bootstrap."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, fitted, load_case

from midas_glmm import MixedModel, RefitWarning, anova, compare, datasets
from midas_glmm.errors import FitError

SW = [c for c in TARGETS if "satterthwaite" in load_case(c)]
KR = [c for c in TARGETS if "kenward_roger" in load_case(c)]
PROFILE = [c for c in TARGETS if "profile_ci" in load_case(c)]


def close_p(p, q):
    """p-values agree to 2% of their size (tiny p-values are very sensitive to the df)."""
    p, q = np.asarray(p), np.asarray(q)
    tiny = (p < 1e-300) & (q < 1e-300)
    with np.errstate(divide="ignore"):
        return bool(np.all(tiny | (np.abs(np.log(p) - np.log(q)) < 0.02)))


@pytest.mark.parametrize("case", SW)
def test_satterthwaite_matches_lmertest(case):
    ref, res = fitted(case)
    ct = res.coef_table(ddf="satterthwaite")
    assert np.allclose(ct["df"], ref["satterthwaite"]["df"], rtol=1e-3)
    assert close_p(ct["p_value"], ref["satterthwaite"]["p"])
    assert list(ct.columns) == ["estimate", "std_err", "df", "statistic", "p_value", "ci_low", "ci_high"]


@pytest.mark.parametrize("case", KR)
def test_kenward_roger_matches_pbkrtest(case):
    ref, res = fitted(case)
    ct = res.coef_table(ddf="kenward-roger")
    assert np.allclose(ct["df"], ref["kenward_roger"]["df"], rtol=1e-3)
    assert np.allclose(ct["std_err"], ref["kenward_roger"]["se"], rtol=1e-4)
    assert close_p(ct["p_value"], ref["kenward_roger"]["p"])


@pytest.mark.slow
@pytest.mark.parametrize("case", PROFILE)
def test_profile_intervals_match_lme4(case):
    ref, res = fitted(case)
    pc = ref["profile_ci"]
    ci = res.conf_int(method="profile")
    assert list(ci.index) == pc["names"]
    width = np.array(pc["upper"]) - np.array(pc["lower"])
    # lme4 interpolates its profile with splines; we solve for the limits, hence 1e-4 of the width
    assert np.all(np.abs(ci["lower"].to_numpy() - pc["lower"]) <= 1e-4 * width)
    assert np.all(np.abs(ci["upper"].to_numpy() - pc["upper"]) <= 1e-4 * width)


def test_lrt_refits_reml_with_ml_and_matches_lme4_ml_fits():
    d = datasets.load("sleepstudy")
    m1 = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", d).fit()
    m2 = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", d).fit()
    with pytest.warns(RefitWarning):
        tab = compare(m2, m1)
    ll1, ll2 = load_case("sleepstudy_intercept_ml")["loglik"], load_case("sleepstudy_slope_ml")["loglik"]
    assert list(tab["npar"]) == [4, 6]
    assert tab["logLik"].to_numpy() == pytest.approx([ll1, ll2], abs=1e-4)
    assert tab["Chisq"].iloc[1] == pytest.approx(2 * (ll2 - ll1), abs=2e-4)
    assert tab["Df"].iloc[1] == 2
    assert tab["AIC"].iloc[0] == pytest.approx(load_case("sleepstudy_intercept_ml")["aic"], abs=1e-3)
    assert anova is compare


def test_refit_and_reml_information_criteria():
    ref, res = fitted("school_reml")
    assert res.aic() == pytest.approx(ref["aic"], abs=1e-3)  # REML AIC kept, as lme4
    ml = res.refit(method="ML")
    assert ml.llf == pytest.approx(load_case("school_ml")["loglik"], abs=1e-4)


def test_compare_rejects_different_data():
    d = datasets.load("sleepstudy")
    a = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", d).fit(method="ML")
    b = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", d.iloc[:90]).fit(method="ML")
    with pytest.raises(FitError, match="different numbers of observations"):
        compare(a, b)


def test_glmm_df_methods_are_refused():
    _, res = fitted("cbpp_binomial_laplace")
    with pytest.raises(FitError, match="linear mixed models"):
        res.coef_table(ddf="satterthwaite")
    assert np.all(np.isinf(res.coef_table()["df"]))


def test_predictions_match_lme4():
    for case in ("sleepstudy_intercept_reml", "sleepstudy_slope_reml", "crossed_slopes_reml"):
        ref, res = fitted(case)
        from conftest import case_data

        new = case_data(ref, "newdata")
        assert np.allclose(res.predict(new), ref["predict_conditional"], atol=1e-3 * min(ref["fixef_se"]))
        assert np.allclose(
            res.predict(new, random_effects=False), ref["predict_marginal"], atol=1e-3 * min(ref["fixef_se"])
        )


def test_simulation_reproduces_the_model_variance():
    _, res = fitted("sleepstudy_intercept_reml")
    sims = res.simulate(4000, seed=1)
    assert sims.shape == (180, 4000)
    assert np.array_equal(res.simulate(3, seed=5), res.simulate(3, seed=5))
    assert not np.array_equal(res.simulate(1, seed=5), res.simulate(1, seed=6))
    vc = res.varcorr()
    implied = vc["vcov"].sum()  # var(y_i) = σ_u² + σ²
    assert np.var(sims, axis=1).mean() == pytest.approx(implied, rel=0.03)
    cov_same_group = np.mean((sims[0] - sims[0].mean()) * (sims[1] - sims[1].mean()))
    assert cov_same_group == pytest.approx(vc["vcov"].iloc[0], rel=0.1)
    cond = res.simulate(2000, seed=2, random_effects="conditional")
    assert np.allclose(cond.mean(axis=1), res.fittedvalues, atol=4 * res.sigma / np.sqrt(2000) * 1.5)


def test_simulation_from_a_correlation_at_one_with_positive_variances(monkeypatch):
    """A correlation at -1 with both variances positive (a singular fit of random slopes): Σ has
    no Cholesky factor (numpy raised LinAlgError from simulate and the bootstrap); the draws use
    its eigenvalues' root and keep var(y_i) = z_i'Σz_i + σ²."""
    ss = datasets.load("sleepstudy")
    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", ss).fit()
    Sig = np.outer([20.0, -5.0], [20.0, -5.0])
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(Sig)  # so the draws below take the other root
    monkeypatch.setattr(res, "term_covariances", lambda: [Sig])
    sims = res.simulate(4000, seed=3)
    Z = np.column_stack([np.ones(len(ss)), ss["Days"].to_numpy(float)])
    implied = np.einsum("ij,jk,ik->i", Z, Sig, Z) + res.sigma**2
    assert np.allclose(sims.var(axis=1) / implied, 1.0, atol=0.12)
    # the rank-one Σ: rows of a subject at Days = 4 share no random-effect variance (z'v = 0)
    at4 = (ss["Days"] == 4).to_numpy()
    assert sims[at4].var(axis=1) == pytest.approx(np.full(at4.sum(), res.sigma**2), rel=0.12)


@pytest.mark.slow
def test_bootstrap_intervals_bracket_the_estimates_like_wald():
    _, res = fitted("sleepstudy_intercept_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = res.conf_int(method="bootstrap", n_boot=200, seed=11)
        again = res.conf_int(method="bootstrap", n_boot=200, seed=11)
    pd.testing.assert_frame_equal(boot, again)  # seeded
    wald = res.conf_int()
    for name in res.params.index:
        lo, hi = boot.loc[name]
        assert lo < res.params[name] < hi
        assert (hi - lo) == pytest.approx(wald.loc[name, "upper"] - wald.loc[name, "lower"], rel=0.25)
    assert boot.loc["sd_(Intercept)|Subject", "lower"] > 0
    assert boot.loc["sigma", "lower"] < res.sigma < boot.loc["sigma", "upper"]


@pytest.mark.slow
def test_bootstrap_in_parallel_processes_with_a_progress_bar_gives_the_serial_answer(capsys):
    _, res = fitted("dyestuff_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = res.conf_int(method="bootstrap", n_boot=40, seed=3)
        parallel = res.conf_int(method="bootstrap", n_boot=40, seed=3, n_jobs=2, progress=True)
    pd.testing.assert_frame_equal(serial, parallel)
    assert "40/40" in capsys.readouterr().err  # tqdm's bar reached the end


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cbpp_binomial_laplace", "poisson_offset_laplace"])
def test_glmm_profile_intervals_match_lme4(case):
    import json

    from conftest import REF

    prof = json.loads((REF / "profile_glmm" / f"{case}.json").read_text())
    _, res = fitted(case)
    ci = res.conf_int(method="profile")
    assert len(ci) == len(prof["names"]) and ci.index[0] == prof["names"][0]
    width = np.array(prof["upper"]) - np.array(prof["lower"])
    # GLMM tolerances are five times the LMM ones (reference README); lme4 interpolates splines
    assert np.all(np.abs(ci["lower"].to_numpy() - prof["lower"]) <= 5e-4 * width)
    assert np.all(np.abs(ci["upper"].to_numpy() - prof["upper"]) <= 5e-4 * width)


@pytest.mark.parametrize("case", ["sleepstudy_ml", "sleepstudy_reml", "covkeep_ml", "covkeep_reml"])
def test_satterthwaite_of_ml_and_reml_fits_to_1e4(case):
    """lmerTest's Satterthwaite df for ML fits as well as REML ones, to 1e-4 relative
    (tests/reference/issue24/satterthwaite_ml.json, make_issue24.R)."""
    import json
    from pathlib import Path

    from conftest import read_reference_csv

    here = Path(__file__).resolve().parents[1] / "reference" / "issue24"
    ref = json.loads((here / "satterthwaite_ml.json").read_text())[case]
    data = read_reference_csv(here / ref["data"])
    formula = ref["formula"].replace("y ~ f", "y ~ C(f)")
    res = MixedModel.from_formula(formula, data).fit(method="REML" if ref["REML"] else "ML")
    assert res.llf == pytest.approx(ref["loglik"], abs=1e-6)
    table = res.coef_table(ddf="satterthwaite")
    assert table["df"].to_numpy() == pytest.approx(np.array(ref["coefficients"]["df"]), rel=1e-4)
    assert table["p_value"].to_numpy() == pytest.approx(np.array(ref["coefficients"]["Pr(>|t|)"]), rel=1e-3)
