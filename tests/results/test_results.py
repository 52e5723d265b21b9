"""The results object: definitions a user relies on, checked against each other."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from midas_glmm import MixedModel, datasets


@pytest.fixture(scope="module")
def slope():
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()


@pytest.fixture(scope="module")
def schools():
    return MixedModel.from_formula("score ~ hours + (1|school)", datasets.load("schools")).fit()


def test_wald_statistics(slope):
    assert np.allclose(slope.tvalues, slope.params / slope.bse)
    assert np.allclose(slope.pvalues, 2 * stats.norm.sf(np.abs(slope.tvalues)))
    ci = slope.conf_int()
    assert np.allclose(ci["upper"] - slope.params, 1.959963984540054 * slope.bse)
    assert np.allclose(slope.conf_int(level=0.9)["lower"], slope.params - 1.6448536269514722 * slope.bse)


def test_information_criteria_definitions(slope):
    k = 2 + 3 + 1
    assert slope.df_modelwc == k
    assert slope.aic() == pytest.approx(slope.reml_criterion + 2 * k)
    assert slope.bic() == pytest.approx(slope.reml_criterion + np.log(180) * k)
    assert slope.llf == pytest.approx(-slope.reml_criterion / 2)


def test_varcorr_is_consistent_with_theta_and_sigma(slope):
    vc = slope.varcorr()
    lam = np.array([[slope.theta[0], 0], [slope.theta[1], slope.theta[2]]])
    Sig = slope.sigma**2 * lam @ lam.T
    assert vc["vcov"].iloc[0] == pytest.approx(Sig[0, 0])
    assert vc["vcov"].iloc[1] == pytest.approx(Sig[1, 1])
    assert vc["vcov"].iloc[2] == pytest.approx(Sig[0, 1])
    assert vc["sdcor"].iloc[2] == pytest.approx(Sig[0, 1] / np.sqrt(Sig[0, 0] * Sig[1, 1]))
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert vc["grp"].iloc[-1] == "Residual"


def test_ranef_dict_and_long_forms_agree(slope):
    wide = slope.ranef()["Subject"]
    long = slope.ranef(condvar=True)
    assert list(long.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    days = long[long.term == "Days"].set_index("grp")["condval"]
    assert np.allclose(days.loc[wide.index], wide["Days"])


def test_icc_and_design_effect_follow_the_seed(schools):
    vc = schools.varcorr()
    su2, se2 = vc["vcov"].iloc[0], vc["vcov"].iloc[1]
    assert schools.icc()["school"] == pytest.approx(su2 / (su2 + se2))
    nbar = schools.nobs / schools.ngroups["school"]
    assert schools.design_effect()["school"] == pytest.approx(1 + (nbar - 1) * su2 / (su2 + se2))


def test_latent_scale_icc_for_binomial():
    res = MixedModel.from_formula(
        "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", datasets.load("cbpp"), family="binomial"
    ).fit()
    s2 = res.varcorr()["vcov"].iloc[0]
    assert res.icc()["herd"] == pytest.approx(s2 / (s2 + np.pi**2 / 3))
    assert res.icc(latent_variance=1.0)["herd"] == pytest.approx(s2 / (s2 + 1))
    assert res.sigma == 1.0 and "Residual" not in set(res.varcorr()["grp"])


def test_fitted_values_and_residuals(slope):
    d = slope.design
    assert np.allclose(slope.fittedvalues + slope.resid, d.y)
    marginal = slope.predict(random_effects=False)
    assert np.allclose(marginal, d.X @ slope.params.to_numpy())


def test_predict_new_levels_get_zero_random_effect(slope):
    new = pd.DataFrame({"Days": [3.0, 3.0], "Subject": ["308", "nobody"]})
    cond = slope.predict(new)
    marg = slope.predict(new, random_effects=False)
    b = slope.ranef()["Subject"].loc["308"]
    assert cond[0] == pytest.approx(marg[0] + b["(Intercept)"] + 3 * b["Days"])
    assert cond[1] == pytest.approx(marg[1])


def test_summary_reads_like_lme4(slope):
    text = str(slope.summary())
    for part in (
        "Linear mixed model fit by REML",
        "REML criterion",
        "Random effects:",
        "Subject",
        "Residual",
        "Fixed effects:",
        "Number of obs: 180",
        "ICC",
    ):
        assert part in text
    assert "<table" in slope.summary()._repr_html_()


def test_glmm_summary_names_family_link_and_approximation():
    res = MixedModel.from_formula(
        "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", datasets.load("cbpp"), family="binomial"
    ).fit(nAGQ=9)
    text = str(res.summary())
    assert "binomial" in text and "logit" in text and "nAGQ = 9" in text


def test_laplace_cautions_reach_the_summary():
    import warnings

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(np.arange(30), 3), "x": rng.normal(size=90)})
    df["y"] = (rng.uniform(size=90) < 0.3).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("y ~ x + (1|g)", df, family="binomial").fit()
    assert any("small" in n for n in res.notes)
    assert "Laplace approximation may be inaccurate" in str(res.summary())


def test_results_pickle_round_trip(slope):
    import pickle

    again = pickle.loads(pickle.dumps(slope))
    assert again.llf == slope.llf
    pd.testing.assert_frame_equal(again.ranef(condvar=True), slope.ranef(condvar=True))


def test_coefficient_table_is_built_on_first_use_and_pickles_before_it():
    """params, bse, tvalues and pvalues are built when first read: equal to the Wald arithmetic on
    the estimates, named as statsmodels names them, and the same after a pickle taken first."""
    import pickle

    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()
    assert "params" not in vars(res)
    again = pickle.loads(pickle.dumps(res))
    for r in (res, again):
        se = np.sqrt(np.diag(r.estimates.vcov_beta))
        assert np.allclose(r.params, r.estimates.beta) and np.allclose(r.bse, se)
        assert np.allclose(r.tvalues, r.estimates.beta / se)
        assert np.allclose(r.pvalues, 2 * stats.norm.sf(np.abs(r.estimates.beta / se)))
        assert (r.params.name, r.bse.name, r.tvalues.name, r.pvalues.name) == ("params", "bse", "z", "P>|z|")
        assert list(r.pvalues.index) == ["(Intercept)", "Days"]
        assert np.allclose(r.vcov().to_numpy(), r.estimates.vcov_beta) and list(r.vcov().columns) == list(
            r.params.index
        )
    assert res.params is res.params  # built once, then kept
