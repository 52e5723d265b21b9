"""Results and post-hoc tools of dispersion models (dispformula): the summary's block,
predictions of the dispersion, fit_many, save/load, update, and clear refusals where a tool
needs one residual variance."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import covstruct_case, covstruct_data
from hypothesis import given, settings
from hypothesis import strategies as st

from midas_glmm import MixedModel, load
from midas_glmm.errors import DataError, FamilyError, FitError, FormulaError
from midas_glmm.many import fit_many

FORMULA = "y ~ x + arm + (1 | g)"


@pytest.fixture(scope="module")
def arms():
    return covstruct_data(covstruct_case("disp_gaussian_factor"))


@pytest.fixture(scope="module")
def varident(arms):
    return MixedModel.from_formula(FORMULA, arms, dispformula="~ arm").fit()


@pytest.fixture(scope="module")
def nb2():
    data = covstruct_data(covstruct_case("disp_nb2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula("y ~ x + (1 | g)", data, family="nbinom2", dispformula="~ x").fit()


def test_summary_has_a_dispersion_model_block(varident, nb2):
    text = str(varident.summary())
    assert "Dispersion model (~ arm, log link: log sigma^2):" in text
    assert "Residual" not in text  # the residual SD differs by arm: no one value to show
    assert "log size theta" in str(nb2.summary())
    assert "Dispersion parameter" not in str(nb2.summary())


def test_predicted_dispersion_follows_the_coefficients(varident, arms):
    new = pd.DataFrame({"x": [0.0, 0.0, 0.0, 0.0], "arm": ["ctrl", "low", "high", None], "g": ["g01"] * 4})
    sd = varident.predict(new, kind="dispersion")
    g = varident.disp_params
    expect = np.sqrt(np.exp([g.iloc[0], g.iloc[0] + g["arm[T.low]"], g.iloc[0] + g["arm[T.high]"]]))
    np.testing.assert_allclose(sd[:3], expect)
    assert np.isnan(sd[3])


def test_prediction_intervals_take_each_rows_residual_variance(varident, arms):
    rows = arms.groupby("arm", observed=True).head(1)
    frame = varident.get_prediction(rows).summary_frame()
    half = (frame["obs_ci_upper"] - frame["obs_ci_lower"]) / (2 * 1.959964)
    resid_var = half**2 - frame["mean_se"] ** 2
    np.testing.assert_allclose(resid_var, varident.predict(rows, kind="dispersion") ** 2, rtol=1e-6)


def test_simulated_residual_sds_differ_by_arm(varident, arms):
    sims = varident.simulate(300, seed=2, random_effects="conditional")
    resid = sims - varident.fittedvalues.to_numpy()[:, None]
    by_arm = pd.Series(resid.std(axis=1), index=arms["arm"].astype(str)).groupby(level=0).mean()
    sd = pd.Series(varident.predict(kind="dispersion"), index=arms["arm"].astype(str)).groupby(level=0).mean()
    np.testing.assert_allclose(by_arm[sd.index], sd, rtol=0.05)


def test_satterthwaite_counts_the_dispersion_coefficients(varident):
    table = varident.coef_table(ddf="satterthwaite")
    assert np.all(np.isfinite(table["df"])) and np.all((table["df"] > 1) & (table["df"] < varident.nobs))
    # a variance parameter more changes the df: the weights are not taken as known
    known = MixedModel.from_formula(FORMULA, covstruct_data(covstruct_case("disp_gaussian_factor"))).fit()
    assert not np.allclose(table["df"], known.coef_table(ddf="satterthwaite")["df"], rtol=1e-3)


def test_fit_many_fits_each_response_with_its_dispersion_model(arms):
    model = MixedModel.from_formula("~ x + arm + (1 | g)", arms, dispformula="~ arm")
    Y = pd.DataFrame({"a": arms["y"], "b": arms["y"] * 2 + 1})
    many = fit_many(model, Y, method="ML")
    single = MixedModel.from_formula(FORMULA, arms, dispformula="~ arm").fit(method="ML")
    assert many.llf["a"] == pytest.approx(single.llf, abs=1e-6)
    # y → 2y + 1: the same fit, σᵢ doubled (log σ² + log 4), the log-likelihood less n log 2
    assert many.llf["b"] == pytest.approx(single.llf - len(arms) * np.log(2), abs=1e-5)


def test_save_load_and_update_keep_the_dispersion_model(varident, arms, tmp_path):
    path = tmp_path / "varident.pkl"
    varident.save(path)
    back = load(path)
    pd.testing.assert_series_equal(back.disp_params, varident.disp_params)
    np.testing.assert_allclose(
        back.predict(arms.head(5), kind="dispersion"), varident.predict(arms.head(5), kind="dispersion")
    )
    again = varident.update(". ~ . - x")
    assert list(again.disp_params.index) == list(varident.disp_params.index)
    plain = varident.update(dispformula=None)
    assert plain.disp_params is None and plain.llf < varident.llf


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda r: r.icc(), "one residual variance"),
        (lambda r: r.r2(), "dispersion formula"),
        (lambda r: r.ranova(), "dispersion formula"),
        (lambda r: r.conf_int(method="profile"), "dispersion formula"),
        (lambda r: r.conf_int(method="bootstrap", n_boot=5), "dispersion formula"),
        (lambda r: r.coef_table(ddf="kenward-roger"), "Kenward-Roger"),
    ],
)
def test_tools_that_need_one_residual_variance_say_so(varident, call, words):
    with pytest.raises(FitError, match=words):
        call(varident)


def test_emmeans_uses_satterthwaite_for_a_dispersion_model(varident):
    em = varident.emmeans("arm")
    np.testing.assert_allclose(em["df"], varident.emmeans("arm", ddf="satterthwaite")["df"])


@pytest.mark.parametrize(
    "family, dispformula, error, words",
    [
        ("poisson", "~ x", FamilyError, "no dispersion parameter"),
        ("nbinom2", "~ 0", FamilyError, "for Gaussian models"),
        (None, "y ~ x", FormulaError, "left-hand side"),
        (None, "~ x + (1 | g)", FormulaError, "fixed effects only"),
        (None, "~ zz", DataError, "dispformula '~ zz'"),
        (None, "x", FormulaError, "one-sided formula"),
    ],
)
def test_bad_dispersion_formulas_are_named(family, dispformula, error, words):
    data = covstruct_data(covstruct_case("disp_nb2"))
    with pytest.raises(error, match=words):
        MixedModel.from_formula("y ~ x + (1 | g)", data, family=family, dispformula=dispformula)


def test_no_residual_needs_a_term_that_can_carry_it(arms):
    with pytest.raises(FitError, match="carry it"):
        MixedModel.from_formula(FORMULA, arms, dispformula="~ 0").fit()


def test_a_constant_dispersion_formula_is_the_default(arms):
    a = MixedModel.from_formula(FORMULA, arms, dispformula="~ 1").fit()
    b = MixedModel.from_formula(FORMULA, arms).fit()
    assert a.llf == b.llf and a.disp_params is None


def test_dask_data_is_refused_clearly(arms):
    dd = pytest.importorskip("dask.dataframe")
    with pytest.raises(FitError, match="in memory only"):
        MixedModel.from_formula(FORMULA, dd.from_pandas(arms, npartitions=2), dispformula="~ arm")


def test_the_callers_data_is_not_changed(arms):
    before = arms.copy()
    MixedModel.from_formula(FORMULA, arms, dispformula="~ arm + x").fit()
    pd.testing.assert_frame_equal(arms, before)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.integers(2, 4), reml=st.booleans())
def test_a_dispersion_model_is_at_least_as_likely_as_one_residual_variance(seed, levels, reml):
    """The model with one residual variance is the dispersion model at γ = (log σ², 0, …): the
    fit with the dispersion formula can only be as likely or more; and its log-likelihood is
    the weighted LMM's at the fitted weights (the two routes to the criterion agree)."""
    rng = np.random.default_rng(seed)
    n_g, per = 12, 10
    g = np.repeat(np.arange(n_g), per)
    arm = rng.integers(0, levels, n_g * per)
    sd = np.exp(0.3 * arm)
    data = pd.DataFrame(
        {
            "y": 1 + rng.normal(0, 0.7, n_g)[g] + rng.normal(0, sd),
            "x": rng.normal(size=n_g * per),
            "arm": pd.Categorical([f"a{v}" for v in arm], categories=[f"a{v}" for v in range(levels)]),
            "g": g,
        }
    )
    method = "REML" if reml else "ML"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        disp = MixedModel.from_formula("y ~ x + (1 | g)", data, dispformula="~ arm").fit(method=method)
        one = MixedModel.from_formula("y ~ x + (1 | g)", data).fit(method=method)
        w = 1.0 / disp.predict(kind="dispersion") ** 2
        weighted = MixedModel.from_formula("y ~ x + (1 | g)", data, weights=w).fit(method=method, start=disp.theta)
    assert disp.llf >= one.llf - 1e-6
    # the weighted LMM with σ² free around the fitted weights: its optimum is the same point
    assert weighted.llf == pytest.approx(disp.llf, abs=1e-5)
