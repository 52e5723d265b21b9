"""Dispersion models (dispformula) against glmmTMB 1.1.5 and nlme (tests/reference/covstruct,
made by make_covstruct.R there): Gaussian residual variances that depend on a number or on a
factor (nlme's varIdent), ML and REML; nbinom2's size and beta's precision that depend on x; and
nlme's corAR1 as (1 | g) + ar1(0 + time | g) without a residual (dispformula "~ 0"). The
dispersion coefficients are on glmmTMB's scale (log σ² for Gaussian models)."""

import warnings

import numpy as np
import pytest
from conftest import covstruct_case, covstruct_data

from midas_glmm import MixedModel

CASES = [
    ("disp_gaussian_numeric", "glmmTMB_ML"),
    ("disp_gaussian_numeric", "glmmTMB_REML"),
    ("disp_gaussian_factor", "glmmTMB_ML"),
    ("disp_gaussian_factor", "glmmTMB_REML"),
    ("disp_nb2", "glmmTMB_ML"),
    ("disp_beta", "glmmTMB_ML"),
]


def fit_case(name: str, key: str):
    ref = covstruct_case(name)
    fit = ref["fits"][key]
    call = fit["call"]
    family = None if call["family"] == "gaussian" else call["family"]
    model = MixedModel.from_formula(
        call["formula"], covstruct_data(ref), family=family, dispformula=call["dispformula"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(method="REML" if call["REML"] else "ML") if family is None else model.fit()
    return res, fit, ref


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{b}" for a, b in CASES])
def case(request):
    return fit_case(*request.param)


def test_log_likelihood(case):
    res, fit, _ = case
    assert res.llf > fit["loglik"] - 1e-3
    assert res.llf == pytest.approx(fit["loglik"], abs=1e-4)  # the same optimum, not another one


def test_fixed_effects_and_standard_errors(case):
    res, fit, _ = case
    np.testing.assert_allclose(res.params.to_numpy(), fit["fixef"], rtol=1e-3, atol=1e-3 * min(fit["fixef_se"]))
    se = fit["gaussian_check"]["fixef_se_gls"] if "gaussian_check" in fit else fit["fixef_se"]
    np.testing.assert_allclose(res.bse.to_numpy(), se, rtol=2e-3)


def test_dispersion_coefficients_on_glmmtmbs_scale(case):
    res, fit, _ = case
    assert list(res.disp_params.index) == [
        n.replace("arm", "arm[T.") + "]" if n.startswith("arm") else n for n in fit["disp"]["names"]
    ]
    np.testing.assert_allclose(res.disp_params.to_numpy(), fit["disp"]["fixef"], atol=1e-3)
    np.testing.assert_allclose(res.disp_bse.to_numpy(), fit["disp"]["se"], rtol=2e-3)


def test_random_effect_sd(case):
    res, fit, _ = case
    sd = np.sqrt(res.term_covariances()[0][0, 0])
    assert sd == pytest.approx(fit["re_terms"][0]["stddev"][0], rel=2e-3)


@pytest.mark.parametrize("key", ["nlme_ML", "nlme_REML"])
def test_varident_is_nlmes(key):
    """nlme's weights = varIdent(form = ~ 1 | arm) is dispformula = "~ arm": the same
    log-likelihood, fixed effects (GLS SEs), random-intercept SD and residual SD per arm."""
    res, _, ref = fit_case("disp_gaussian_factor", key.replace("nlme", "glmmTMB"))
    nl = ref["fits"][key]
    assert res.llf == pytest.approx(nl["loglik"], abs=1e-6)
    np.testing.assert_allclose(res.params.to_numpy(), nl["fixef"], rtol=1e-4)
    np.testing.assert_allclose(res.bse.to_numpy(), nl["fixef_se"], rtol=1e-4)
    data = covstruct_data(ref)
    by_arm = dict(zip(data["arm"].astype(str), res.predict(kind="dispersion")))
    for arm, sd in nl["residual_sd_by_arm"].items():
        assert by_arm[arm] == pytest.approx(sd, rel=1e-4)


def test_corar1_is_nlmes_and_glmmtmbs_without_a_residual():
    """nlme's lme(random = ~ 1 | Subject, correlation = corAR1()) as (1 | Subject) +
    ar1(0 + fage | Subject) with dispformula "~ 0": fitted exactly (no tiny residual), it is
    nlme's model; glmmTMB's tiny residual moves its likelihood by 1.6e-7."""
    ref = covstruct_case("corar1_nlme")
    nl, tmb = ref["fits"]["nlme_ML"], ref["fits"]["glmmTMB_ML_disp0"]
    res = MixedModel.from_formula(tmb["call"]["formula"], covstruct_data(ref), dispformula="~ 0").fit(method="ML")
    assert res.llf == pytest.approx(nl["loglik"], abs=1e-6)
    assert res.llf == pytest.approx(tmb["loglik"], abs=1e-3)
    np.testing.assert_allclose(res.params.to_numpy(), nl["fixef"], rtol=1e-5)
    np.testing.assert_allclose(res.bse.to_numpy(), nl["fixef_se"], rtol=1e-4)
    table = res.structure_params()
    assert table.loc["rho|Subject", "estimate"] == pytest.approx(nl["Phi"], abs=1e-4)
    assert table.loc["sd|Subject", "estimate"] == pytest.approx(nl["sigma"], rel=1e-4)
    assert table.loc["sd_(Intercept)|Subject", "estimate"] == pytest.approx(nl["ranef_intercept_sd"], rel=1e-4)
    assert res.estimates.n_params == nl["df"]
    # no residual: the fit passes through every row, and nothing is simulated beyond the terms
    assert np.max(np.abs(res.resid)) < 1e-8
    assert np.all(res.predict(kind="dispersion") == 0)
