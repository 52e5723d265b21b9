"""``deviance`` is lme4's ``deviance()`` and ``minus2llf`` is −2 logLik, checked against lme4 and
glmmTMB (tests/reference/extra/results_checks/deviance.json, made by make_results_checks.R)."""

import json

import numpy as np
import pytest
from conftest import REF, fitted, load_case

DEVIANCE = json.loads((REF / "extra" / "results_checks" / "deviance.json").read_text())
GLMM_TOL = 1e-3  # the reference README's GLMM log-likelihood tolerance; a deviance is on the −2ℓ scale


def lme4_deviance(case: str) -> float:
    """lme4's deviance(), from the tight-PIRLS refit where that refit reaches a higher likelihood
    (the default control stops PIRLS early: test_reference.better_reference's rule)."""
    ref = DEVIANCE[case]
    if "deviance_tight" in ref and ref["loglik_tight"] > ref["loglik"] + 1e-6:
        return ref["deviance_tight"]
    return ref["deviance"]


@pytest.mark.parametrize("case", sorted(DEVIANCE))
def test_glmm_deviance_is_lme4s_sum_of_unit_deviances(case):
    _, res = fitted(case)
    assert res.deviance == pytest.approx(lme4_deviance(case), abs=2 * GLMM_TOL)


def lme4_minus2ll(case: str) -> float:
    """−2 logLik of the reference: AGQ fits on the consistent scale (lme4's AGQ scale differs, see
    the README), the glmmTMB fit's own, else the better of lme4's default and tight refits."""
    ref, dev = load_case(case), DEVIANCE[case]
    if "loglik_consistent" in ref:
        return -2 * ref["loglik_consistent"]
    if "minus2loglik" in dev:
        return dev["minus2loglik"]
    return -2 * max(dev["loglik"], dev["loglik_tight"])


@pytest.mark.parametrize("case", sorted(DEVIANCE))
def test_minus2llf_is_minus_twice_the_log_likelihood(case):
    _, res = fitted(case)
    assert res.minus2llf == pytest.approx(lme4_minus2ll(case), abs=2 * GLMM_TOL)
    assert res.minus2llf == -2 * res.llf
    assert abs(res.deviance - res.minus2llf) > 1.0  # two different quantities


def test_stored_reference_deviances_are_the_ones_recomputed_in_r():
    """The shared reference files' "deviance" field is the same lme4 deviance() (to the rounding of
    the data files R re-reads)."""
    for case, ref in DEVIANCE.items():
        if "deviance_tight" in ref:
            assert load_case(case)["deviance"] == pytest.approx(ref["deviance"], abs=1e-5)


def test_lmm_deviance_is_minus_twice_llf_for_ml_and_none_for_reml():
    ref, ml = fitted("sleepstudy_slope_ml")
    assert ml.deviance == pytest.approx(ref["deviance"], abs=2e-4)
    assert ml.deviance == ml.minus2llf
    _, reml = fitted("sleepstudy_slope_reml")
    assert reml.deviance is None
    assert reml.minus2llf == pytest.approx(reml.reml_criterion)


def test_glmm_summary_prints_minus_two_loglik_not_the_unit_deviance():
    """lme4's summary prints −2 logLik (labelled "deviance" there); ours labels it -2 logLik."""
    _, res = fitted("cbpp_binomial_laplace")
    header = str(res.summary()).splitlines()[3]
    assert f"-2 logLik: {res.minus2llf:.4f}" in header
    assert "deviance" not in header
    _, ml = fitted("sleepstudy_slope_ml")
    assert f"deviance: {ml.deviance:.4f}" in str(ml.summary())


def test_compare_deviance_column_is_minus_two_loglik_as_lme4_anova():
    from midas_glmm import compare

    _, lap = fitted("cbpp_binomial_laplace")
    _, fast = fitted("cbpp_binomial_nagq0")
    tab = compare(lap, fast)
    assert np.allclose(tab["deviance"], -2 * tab["logLik"])
