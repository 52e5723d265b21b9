"""Zero-inflation (ziformula) for poisson, nbinom2 and nbinom1, and non-default links, against
glmmTMB (issue 15).

References: tests/reference/tmb_families/ (make_tmb_zi.R: glmmTMB 1.1.5, Laplace): glmmTMB's
Salamanders with Poisson (with and without zero-inflation), NB2 and NB1 with ``zi ~ spp + mined``,
NB2 with ``zi ~ 1``, a simulated ZINB2 with a continuous zero-inflation covariate, a simulated ZIP
with an offset, and the simulated beta data with a probit link. Their log-likelihoods, conditional
fixed effects, dispersions, variances and modes are checked with the other glmmTMB cases in
test_tmb_families.py; here the zero-inflation part, predictions, residuals and the rest. Tolerances are the reference
README's for GLMMs: logLik 1e-3, fixed effects 5e-3 SE, SEs 5e-3 relative, dispersion and variances
5e-3 relative. Zero-inflation coefficients at the boundary (glmmTMB's estimate below −10, where π
is below 5e-5 and the likelihood is flat: SEs in the thousands) are not identified; there the test
asks that ours are at the boundary too.

The sqrt-link NB fits in the same folder are checked differently: with μ = η² a site whose
linear predictor is near 0 has two local conditional modes (η and −η give one mean), and at
glmmTMB's estimates its inner optimizer stops in the poorer one for a site (Salamanders' VF-8),
so its Laplace likelihood is not the approximation at the conditional mode. There the test shows
that our modes have the lower penalised deviance at glmmTMB's own parameters, and that our fit's
likelihood is the higher."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ZI_CASES

import midas_glmm as mg
from midas_glmm import MixedModel
from midas_glmm.errors import BoundaryTestWarning, FamilyError, FitError, FormulaError

REF = Path(__file__).resolve().parents[1] / "reference" / "tmb_families"
CASES = ZI_CASES
#: a zero-inflation coefficient glmmTMB puts below this is at the boundary (π < 5e-5)
BOUNDARY = -10.0


def load(case):
    ref = json.loads((REF / f"{case}.json").read_text())
    df = pd.read_csv(REF / ref["data"])
    for col, levels in (ref.get("factor_levels") or {}).items():  # R's level order (first = reference)
        df[col] = pd.Categorical(df[col].astype(str), categories=levels)
    return ref, df


def fit(ref, df):
    family = mg.family(ref["family"], link=ref["link"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedModel.from_formula(ref["formula_py"], df, family=family, ziformula=ref["ziformula_py"])
        return model.fit()


@pytest.fixture(scope="module", params=CASES)
def fitted(request):
    ref, df = load(request.param)
    return ref, fit(ref, df)


def test_zero_inflation_coefficients(fitted):
    ref, res = fitted
    if not ref["zi_names"]:
        assert res.zi_params is None and res.zi_bse is None
        return
    assert len(res.zi_params) == len(ref["zi_names"])
    est, se = np.array(ref["zi_fixef"]), np.array(ref["zi_se"])
    inside = est > BOUNDARY
    assert np.any(inside) or len(est) == 1
    ours = res.zi_params.to_numpy()
    assert np.all(np.abs(ours[inside] - est[inside]) <= 5e-3 * se[inside])
    assert np.allclose(res.zi_bse.to_numpy()[inside], se[inside], rtol=5e-3)
    assert np.all(ours[~inside] < BOUNDARY)  # at the boundary too: π numerically 0 there
    V = res.zi_vcov().to_numpy()
    assert np.allclose(np.diag(V)[inside], res.zi_bse.to_numpy()[inside] ** 2)


def test_predictions_and_pearson_residuals(fitted):
    ref, res = fitted
    k = len(ref["predict_response"])
    assert np.allclose(res.predict()[:k], ref["predict_response"], rtol=5e-3)
    assert np.allclose(res.predict(kind="conditional")[:k], ref["predict_conditional"], rtol=5e-3)
    assert np.allclose(res.predict(kind="link")[:k], ref["predict_link"], rtol=5e-3, atol=1e-4)
    zprob = res.predict(kind="zprob")[:k]
    if ref["predict_zprob"] is None:
        assert np.all(zprob == 0)
    else:
        # (π at the boundary is 0 to 1e-6 in both: glmmTMB's 7e-8 and our 1e-10 are one answer)
        assert np.allclose(zprob, ref["predict_zprob"], rtol=5e-3, atol=1e-6)
    assert np.allclose(res.resid.to_numpy()[:k], ref["resid_response"], rtol=5e-3, atol=1e-4)
    # glmmTMB's Pearson residuals divide by its variance function (μ(1 − μ) for beta, as here)
    assert np.allclose(res.resid_pearson.to_numpy()[:k], ref["resid_pearson"], rtol=5e-3, atol=1e-4)


@pytest.fixture(scope="module")
def zip_fit():
    ref, df = load("simulated_zip_offset")
    return ref, df, fit(ref, df)


def test_predict_on_new_rows_uses_both_parts(zip_fit):
    ref, df, res = zip_fit
    new = df.iloc[:5].copy()
    assert np.allclose(res.predict(new), res.predict()[:5])
    assert np.allclose(res.predict(new, kind="zprob"), res.predict(kind="zprob")[:5])
    new.loc[new.index[0], "z"] = np.nan  # a missing zero-inflation covariate: NaN, the others kept
    out = res.predict(new)
    assert np.isnan(out[0]) and np.allclose(out[1:], res.predict()[1:5])
    pop = res.predict(df.iloc[:5], random_effects=False)
    eta = res.predict(df.iloc[:5], random_effects=False, kind="link")
    assert np.allclose(pop, (1 - res.predict(kind="zprob")[:5]) * np.exp(eta))


def test_simulated_zeros_follow_the_mixture(zip_fit):
    ref, df, res = zip_fit
    sims = res.simulate(200, seed=3, random_effects="conditional")
    pi = res.predict(kind="zprob")
    mu = res.predict(kind="conditional")
    expected_zero = pi + (1 - pi) * np.exp(-mu)
    observed = (sims == 0).mean(axis=1)
    # the mean over rows of 200 draws each: its SE is far below 0.01
    assert abs(observed.mean() - expected_zero.mean()) < 0.01
    assert sims.mean() == pytest.approx(res.predict().mean(), rel=0.02)


def test_summary_has_the_zero_inflation_block(zip_fit):
    ref, df, res = zip_fit
    text = str(res.summary())
    assert "Zero-inflation model (~ z, logit link):" in text and "Zero inflation: ~ z" in text
    for name in ref["zi_names"]:
        assert name in text.split("Zero-inflation model")[1]
    assert "Zero-inflation model" in res.summary().as_html()


def test_what_a_zero_inflated_fit_refuses(zip_fit):
    ref, df, res = zip_fit
    with pytest.raises(FitError, match="deviance"):
        res.deviance  # noqa: B018
    with pytest.raises(FitError, match="deviance residuals"):
        res.resid_deviance  # noqa: B018
    with pytest.raises(FitError, match="latent"):
        res.icc()
    with pytest.raises(FitError, match="zero-inflated"):
        res.r2()
    with pytest.raises(FitError, match="profile"):
        res.conf_int(method="profile")
    with pytest.raises(FitError, match="get_prediction"):
        res.get_prediction()
    model = MixedModel.from_formula(ref["formula_py"], df, family="poisson", ziformula="~ z")
    with pytest.raises(FitError, match="Laplace"):
        model.fit(nAGQ=5)
    with pytest.raises(FitError, match="Laplace"):
        model.fit(fast=True)


def test_compare_with_and_without_zero_inflation_warns_of_the_boundary():
    ref, df = load("salamanders_zip")
    plain = fit(*load("salamanders_poisson"))
    inflated = fit(ref, df)
    with pytest.warns(BoundaryTestWarning, match="pi = 0"):
        table = mg.compare(plain, inflated)
    assert table["Df"].iloc[1] == len(ref["zi_names"])
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (inflated.llf - plain.llf))
    assert "(no zi)" in table.index[0] and "zi ~ spp + mined" in table.index[1]


def test_bad_ziformulas_are_refused():
    ref, df = load("simulated_zip_offset")
    f = ref["formula_py"]
    with pytest.raises(FamilyError, match="no zeros"):
        MixedModel.from_formula(
            "y ~ x + (1|g)", pd.read_csv(REF / "data" / "simulated_beta.csv"), family="beta", ziformula="~ 1"
        )
    with pytest.raises(FamilyError, match="zero-inflated form"):
        MixedModel.from_formula(f, df.assign(y=(df["y"] > 0).astype(float)), family="binomial", ziformula="~ 1")
    with pytest.raises(FormulaError, match="one-sided"):
        MixedModel.from_formula(f, df, family="poisson", ziformula="y ~ z")
    with pytest.raises(FormulaError, match="fixed effects only"):
        MixedModel.from_formula(f, df, family="poisson", ziformula="~ z + (1|g)")
    with pytest.raises(mg.DataError, match="zz"):
        MixedModel.from_formula(f, df, family="poisson", ziformula="~ zz")
    # "~ 0" is no zero-inflation, as in glmmTMB
    assert MixedModel.from_formula(f, df, family="poisson", ziformula="~ 0").design.zi is None


def test_rows_missing_a_zero_inflation_variable_are_dropped_and_counted():
    ref, df = load("simulated_zip_offset")
    holes = df.copy()
    holes.loc[holes.index[:7], "z"] = np.nan
    before = holes.copy()
    model = MixedModel.from_formula(ref["formula_py"], holes, family="poisson", ziformula="~ z")
    assert model.nobs == len(df) - 7 and model.design.n_dropped == 7
    pd.testing.assert_frame_equal(holes, before)  # the caller's frame is not touched
    res = fit({**ref, "ziformula_py": "~ z"}, df.iloc[7:].reset_index(drop=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert model.fit().llf == pytest.approx(res.llf, abs=1e-6)


def test_family_with_a_link():
    fam = mg.family("beta", link="probit")
    assert (fam.name, fam.link_name) == ("beta", "probit")
    assert mg.family("nbinom1", "sqrt").link_name == "sqrt" and mg.family("poisson").link_name == "log"
    with pytest.raises(FamilyError, match="unknown link"):
        mg.family("beta", link="probitt")
    with pytest.raises(FamilyError, match="unknown family"):
        mg.family("betta")


def test_zero_inflated_fit_saves_without_data_and_predicts(zip_fit, tmp_path):
    ref, df, res = zip_fit
    path = tmp_path / "zip.pkl"
    res.save(path)
    back = mg.load(path)
    assert back.zi_params.equals(res.zi_params)
    assert np.allclose(back.predict(df.iloc[:5]), res.predict()[:5])
    with pytest.raises(FitError, match="without its data"):
        back.predict(kind="zprob")


def test_update_and_fit_many_keep_the_zero_inflation(zip_fit):
    ref, df, res = zip_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = res.update("~ .")
        assert again.zi_params.index.equals(res.zi_params.index)
        assert again.llf == pytest.approx(res.llf, abs=1e-6)
        model = MixedModel.from_formula(ref["formula_py"], df, family="poisson", ziformula="~ z")
        Y = pd.DataFrame({"a": df["y"], "b": df["y"].where(df.index >= 10)}, index=df.index)
        many = model.fit_many(Y)
        single = fit({**ref, "ziformula_py": "~ z"}, df.iloc[10:].reset_index(drop=True))
    assert many.llf["a"] == pytest.approx(res.llf, abs=1e-6)
    assert many.llf["b"] == pytest.approx(single.llf, abs=1e-6)
    assert many["b"].zi_params.to_numpy() == pytest.approx(single.zi_params.to_numpy(), abs=1e-4)


@pytest.mark.parametrize("case", ["salamanders_nb2_sqrt", "salamanders_nb1_sqrt"])
def test_sqrt_link_fits_find_the_better_conditional_modes(case):
    from midas_glmm.engine.pirls import GLMMProblem

    ref, df = load(case)
    res = fit(ref, df)
    assert res.llf >= ref["loglik"]  # higher: the approximation at the better modes (below)
    model = res.model
    prob = GLMMProblem(model.design, model.family)
    theta = np.array([ref["varcorr"][0]["sdcor"]])
    beta, phi = np.array(ref["fixef"]), ref["sigma_glmmTMB"]
    ours = prob.pirls(theta, beta, phi).u
    term = model.design.terms[0]
    by_level = dict(zip(ref["ranef"]["site"]["levels"], ref["ranef"]["site"]["values"]))
    theirs = [np.array([by_level[str(level)] for level in term.levels]) / theta[0]]
    block, lams, p = prob.rows.block, prob.tmap.lams(theta), len(beta)

    def penalised_deviance(us):
        ll, _ = block.evaluate(beta, lams, us, phi, False, np.zeros(p), np.ones(p))
        return -2 * ll + sum(float(u @ u) for u in us)

    assert np.max(np.abs(ours[0] - theirs[0])) > 0.5  # another mode for at least one site
    assert penalised_deviance(ours) < penalised_deviance(theirs) - 1.0


def test_review_cases_refuse_or_carry_the_zero_inflation(zip_fit):
    ref, df, res = zip_fit
    from midas_glmm.posthoc import profile

    with pytest.raises(FitError, match="profile"):
        profile.profile_ci(res)  # not only through conf_int
    for empty in ("~ 1 - 1", "~ 0 + 0"):
        with pytest.raises(FormulaError, match="no columns left"):
            MixedModel.from_formula(ref["formula_py"], df, family="poisson", ziformula=empty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = res.update(ziformula=None)
        constant = res.update(ziformula="~ 1")
    assert plain.zi_params is None and list(constant.zi_params.index) == ["(Intercept)"]
    with pytest.warns(mg.RankDeficiencyWarning, match="zero-inflation model matrix"):
        MixedModel.from_formula(ref["formula_py"], df.assign(z2=2 * df["z"]), family="poisson", ziformula="~ z + z2")


def test_fit_many_in_processes_keeps_the_zero_inflation_columns():
    ref, df = load("simulated_zip_offset")
    small = df[df["g"].isin(sorted(df["g"].unique())[:15])].reset_index(drop=True)
    model = MixedModel.from_formula(ref["formula_py"], small, family="poisson", ziformula="~ z")
    Y = pd.DataFrame({"a": small["y"], "b": small["y"].where(small.index >= 5)}, index=small.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        here, there = model.fit_many(Y), model.fit_many(Y, n_jobs=2)
    assert there.errors.empty and here.errors.empty
    assert np.allclose(there.llf, here.llf, atol=1e-8)
