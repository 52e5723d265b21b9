"""Results, post-hoc tools, saving, fit_many and Dask with structured random-effects terms: each
works as for lme4's terms or refuses clearly."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import covstruct_case, covstruct_data

from midas_glmm import MixedModel, load
from midas_glmm.errors import DataError, FitError, FormulaError
from midas_glmm.many import fit_many

AR1 = "distance ~ age + Sex + ar1(0 + fage | Subject)"


@pytest.fixture(scope="module")
def orthodont():
    return covstruct_data(covstruct_case("orthodont_ar1_ml"))


@pytest.fixture(scope="module")
def ar1(orthodont):
    return MixedModel.from_formula(AR1, orthodont).fit(method="ML")


def test_summary_prints_the_structure_as_glmmtmb(ar1):
    text = str(ar1.summary())
    assert "0.930 (ar1)" in text
    table = ar1.summary().random
    assert (table["Corr"] != "").sum() == 1  # one mark per term, not a correlation matrix


def test_varcorr_has_the_implied_sds_and_correlations(ar1):
    vc = ar1.varcorr()
    cors = vc[vc["var2"].notna() & (vc["grp"] == "Subject")]
    assert len(cors) == 6
    rho = ar1.structure_params().loc["rho|Subject", "estimate"]
    lag2 = cors[(cors["var1"] == "fage[8]") & (cors["var2"] == "fage[12]")]["sdcor"].iloc[0]
    assert lag2 == pytest.approx(rho**2)


def test_structure_params_are_named_as_the_interval_rows(ar1):
    table = ar1.structure_params()
    assert list(table.index) == ["sd|Subject", "rho|Subject"]
    assert list(table["structure"]) == ["ar1", "ar1"]


def test_profile_interval_of_rho_holds_the_estimate_inside_its_range(ar1):
    ci = ar1.conf_int(method="profile", which=["rho|Subject", "sd|Subject"])
    rho = ar1.structure_params().loc["rho|Subject", "estimate"]
    lo, hi = ci.loc["rho|Subject"]
    assert 0 < lo < rho <= hi <= 1
    sd_lo, sd_hi = ci.loc["sd|Subject"]
    assert sd_lo < 1.8404 < sd_hi


def test_a_profile_of_the_ml_deviance_reaches_z_squared_at_its_limits(ar1):
    """The profile's lower limit for ρ: the deviance refitted with ρ held there is 1.96² above
    the optimum (an independent check by refitting with the structure's parameter fixed)."""
    from midas_glmm.engine.lmm import lmm_criterion
    from midas_glmm.engine.optimize import minimize_bounded

    lo = ar1.conf_int(method="profile", which=["rho|Subject"]).loc["rho|Subject", "lower"]
    crit, _ = lmm_criterion(ar1.design, REML=False)
    a = lo / np.sqrt(1 - lo**2)
    best = minimize_bounded(lambda x: crit(np.array([x[0], a])), np.array([1.0]), np.array([0.0]), "bobyqa")
    assert best.fun - (-2 * ar1.llf) == pytest.approx(1.959964**2, abs=2e-3)


def test_save_and_load_keep_the_structure(ar1, orthodont, tmp_path):
    path = tmp_path / "ar1.pkl"
    ar1.save(path)
    back = load(path)
    assert back.design.terms[0].structure.name == "ar1"
    np.testing.assert_allclose(back.predict(orthodont.head(8)), ar1.predict(orthodont.head(8)))
    assert str(back.summary()) == str(ar1.summary())


def test_refit_and_update_keep_the_structure(ar1, orthodont):
    again = ar1.refit(orthodont["distance"])
    assert again.llf == pytest.approx(ar1.llf, abs=1e-8)
    smaller = ar1.update(". ~ . - Sex")
    assert smaller.design.terms[0].structure.name == "ar1" and smaller.llf < ar1.llf


def test_fit_many_equals_single_fits(orthodont):
    model = MixedModel.from_formula("~ age + Sex + ar1(0 + fage | Subject)", orthodont)
    rng = np.random.default_rng(3)
    Y = pd.DataFrame({"a": orthodont["distance"], "b": orthodont["distance"] + rng.normal(0, 1, len(orthodont))})
    many = fit_many(model, Y, method="ML")
    for name in Y:
        one = MixedModel.from_formula(AR1.replace("distance", name), orthodont.assign(**{name: Y[name]}))
        single = one.fit(method="ML")
        assert many.llf[name] == pytest.approx(single.llf, abs=1e-6)


def test_dask_fits_the_same_structure(orthodont, ar1):
    dd = pytest.importorskip("dask.dataframe")
    res = MixedModel.from_formula(AR1, dd.from_pandas(orthodont, npartitions=3)).fit(method="ML")
    assert res.llf == pytest.approx(ar1.llf, abs=1e-6)


def test_ranova_tests_a_structured_term_as_a_whole(ar1):
    table = ar1.ranova()
    assert "ar1(0 + fage | Subject)" in table.index
    assert table.loc["ar1(0 + fage | Subject)", "Df"] == 2


def test_kenward_roger_refuses_a_nonlinear_structure_and_emmeans_falls_back(ar1):
    with pytest.raises(FitError, match="Kenward-Roger .* ar1\\(0 \\+ fage \\| Subject\\)"):
        ar1.coef_table(ddf="kenward-roger")
    em = ar1.emmeans("Sex")
    satt = ar1.emmeans("Sex", ddf="satterthwaite")
    np.testing.assert_allclose(em["df"], satt["df"])


def test_kenward_roger_of_a_diag_term_equals_the_uncorrelated_lme4_terms():
    from midas_glmm import datasets

    ss = datasets.load("sleepstudy")
    diag = MixedModel.from_formula("Reaction ~ Days + diag(1 + Days | Subject)", ss).fit()
    lme4 = MixedModel.from_formula("Reaction ~ Days + (1 + Days || Subject)", ss).fit()
    assert diag.llf == pytest.approx(lme4.llf, abs=1e-7)
    a, b = diag.coef_table(ddf="kenward-roger"), lme4.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(a["df"], b["df"], rtol=1e-5)


def test_time_levels_out_of_order_are_refused(orthodont):
    text = orthodont.assign(fage=orthodont["fage"].astype(str))
    with pytest.raises(DataError, match="order 10, 12, 14, 8"):
        MixedModel.from_formula(AR1, text)
    numeric = orthodont.assign(fage=orthodont["fage"].astype(str).astype(int))
    res = MixedModel.from_formula(AR1.replace("fage", "C(fage)"), numeric).fit(method="ML")
    assert res.llf == pytest.approx(-216.957393, abs=1e-5)


def test_a_one_column_ar1_term_is_refused(orthodont):
    with pytest.raises(FormulaError, match="one column"):
        MixedModel.from_formula("distance ~ age + ar1(0 + age | Subject)", orthodont)
    with pytest.raises(DataError, match="factor\\(x\\) is C\\(x\\)"):
        MixedModel.from_formula("distance ~ age + ar1(0 + factor(age) | Subject)", orthodont)


def test_quadrature_names_the_structured_term(orthodont):
    binary = orthodont.assign(y=(orthodont["distance"] > 24).astype(int))
    model = MixedModel.from_formula("y ~ age + ar1(0 + fage | Subject)", binary, family="binomial")
    with pytest.raises(FitError, match="ar1\\(0 \\+ fage \\| Subject\\)"):
        model.fit(nAGQ=5)


def test_simulations_follow_the_ar1_correlation(ar1):
    """Responses simulated from the fit have the fitted lag-1 correlation within subjects."""
    sims = ar1.simulate(400, seed=7, random_effects="marginal")
    resid = sims - ar1.predict(random_effects=False)[:, None]
    d = ar1.design
    order = np.lexsort((d.terms[0].Zcols.argmax(axis=1), d.terms[0].codes))
    r = resid[order].reshape(27, 4, -1)
    lag1 = np.mean([np.corrcoef(r[:, 0, k], r[:, 1, k])[0, 1] for k in range(r.shape[2])])
    S = ar1.term_covariances()[0]
    implied = S[0, 1] / (S[0, 0] + ar1.sigma**2)
    assert lag1 == pytest.approx(implied, abs=0.03)


def test_a_poisson_ar1_summary_marks_the_structure():
    data = covstruct_data(covstruct_case("poisson_ar1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("count ~ x + ar1(0 + tf | g)", data, family="poisson").fit()
    assert "(ar1)" in str(res.summary())


def test_bootstrap_intervals_cover_the_structures_parameters(ar1):
    ci = ar1.conf_int(method="bootstrap", n_boot=40, seed=11)
    assert {"sd|Subject", "rho|Subject", "sigma"} <= set(ci.index)
    rho = ar1.structure_params().loc["rho|Subject", "estimate"]
    assert ci.loc["rho|Subject", "lower"] < rho <= ci.loc["rho|Subject", "upper"] <= 1.0
