"""Dask-backed fits on a real dask.distributed LocalCluster (2 worker processes) equal the
in-memory fits of the same rows."""

import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")  # the dask extra is part of the test extra (pyproject)
distributed = pytest.importorskip("distributed")

from conftest import case_data, load_case  # noqa: E402

from midas_glmm import MixedModel, compare  # noqa: E402
from midas_glmm.errors import DataError, FitError  # noqa: E402

CASES = [
    "sleepstudy_slope_reml",
    "sleepstudy_slope_ml",
    "penicillin_crossed_reml",
    "nested_reml",
    "sleepstudy_missing_ml",
    "factor_interaction_reml",
    "sleepstudy_weights_reml",
    "three_column_term_ml",
    "crossed_slopes_reml",
]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def fit_both(case, npartitions=3):
    ref = load_case(case)
    df = case_data(ref)
    method = ref["method"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = MixedModel.from_formula(ref["formula_py"], df, weights=ref.get("weights")).fit(method=method)
        dsk = MixedModel.from_formula(
            ref["formula_py"], dd.from_pandas(df, npartitions=npartitions), weights=ref.get("weights")
        ).fit(method=method)
    return ref, mem, dsk


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_dask_fit_equals_in_memory_fit(client, case):
    ref, mem, dsk = fit_both(case)
    assert dsk.llf == pytest.approx(mem.llf, abs=1e-6)
    assert np.all(np.abs(dsk.params - mem.params) <= 1e-6 * mem.bse)
    assert np.allclose(dsk.bse, mem.bse, rtol=1e-6)
    assert np.allclose(dsk.theta, mem.theta, atol=1e-5)
    assert dsk.nobs == mem.nobs == ref["nobs"] and dsk.n_dropped == mem.n_dropped
    assert dsk.ngroups == mem.ngroups
    assert dsk.aic() == pytest.approx(mem.aic(), abs=1e-5)
    pd.testing.assert_frame_equal(dsk.varcorr(), mem.varcorr(), rtol=1e-5, atol=1e-6)
    for g, frame in mem.ranef().items():
        got = dsk.ranef()[g].loc[frame.index, frame.columns]
        assert np.allclose(got, frame, atol=1e-5 * np.abs(frame.to_numpy()).max())
    assert "Fixed effects:" in str(dsk.summary())


@pytest.mark.slow
def test_lazy_predictions_residuals_and_lrt(client):
    ref, mem, dsk = fit_both("sleepstudy_slope_reml")
    fitted = dsk.fittedvalues
    assert type(fitted).__module__.startswith("dask")
    assert np.allclose(fitted.compute().to_numpy(), mem.fittedvalues.to_numpy(), atol=1e-4)
    assert np.allclose(dsk.resid.compute().to_numpy(), mem.resid.to_numpy(), atol=1e-4)
    new = case_data(ref, "newdata")
    assert np.allclose(dsk.predict(new), ref["predict_conditional"], atol=1e-3)
    lazy = dsk.predict(dd.from_pandas(new, npartitions=2), random_effects=False)
    assert np.allclose(lazy.compute().to_numpy(), ref["predict_marginal"], atol=1e-3)
    ddf = dd.from_pandas(case_data(ref), npartitions=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", ddf).fit()
        tab = compare(small, dsk)
    assert tab["logLik"].to_numpy() == pytest.approx(
        [load_case("sleepstudy_intercept_ml")["loglik"], load_case("sleepstudy_slope_ml")["loglik"]], abs=1e-4
    )


def test_partition_results_are_sized_by_levels_not_rows():
    rng = np.random.default_rng(0)
    n = 50_000
    df = pd.DataFrame(
        {"y": rng.normal(size=n), "x": rng.normal(size=n), "g": rng.integers(0, 40, n), "h": rng.integers(0, 7, n)}
    )
    ddf = dd.from_pandas(df, npartitions=2)
    model = MixedModel.from_formula("y ~ x + (x|g) + (1|h)", ddf)
    src = model.design.source
    cp, _ = src.partition_blocks(df.iloc[: n // 2], weighted=False)
    sizes = [a.size for a in cp.ZtZ + cp.XytZ + [cp.XytXy]] + [m.nnz for m in cp.ZjtZi.values()]
    assert max(sizes) <= 40 * 2 * 3 + 40 * 7 * 2  # levels × columns, nothing of the 25,000 rows
    assert model.design.X.shape[0] == 0  # the client holds no rows either


def test_errors_come_before_any_pass_over_the_rows():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"y": rng.normal(size=20), "x": np.arange(20.0), "g": np.repeat(np.arange(5), 4)})
    ddf = dd.from_pandas(df, npartitions=2)
    with pytest.raises(DataError, match="column 'xx'"):
        MixedModel.from_formula("y ~ xx + (1|g)", ddf)
    parts = [df.iloc[:10], df.iloc[10:].assign(x=lambda d: d["x"].astype(str))]
    mixed = dd.from_delayed([distributed_delayed(p) for p in parts], meta=df, verify_meta=False)
    with pytest.raises(DataError, match="column 'x' is other in partition 1"):
        MixedModel.from_formula("y ~ x + (1|g)", mixed)
    with pytest.raises(FitError, match="Kenward-Roger is not available for Dask data"):
        MixedModel.from_formula("y ~ x + (1|g)", ddf).fit().coef_table(ddf="kenward-roger")


def distributed_delayed(part):
    import dask

    return dask.delayed(lambda p: p)(part)


def test_rank_deficiency_and_missing_values_match_in_memory():
    from midas_glmm import datasets

    df = datasets.load("sleepstudy").assign(Days2=lambda d: 2.0 * d["Days"])
    df.loc[[3, 50, 51], "Reaction"] = np.nan
    with pytest.warns(Warning, match="rank deficient"):
        mem = MixedModel.from_formula("Reaction ~ Days + Days2 + (1|Subject)", df).fit()
    with pytest.warns(Warning, match="rank deficient"):
        dsk = MixedModel.from_formula("Reaction ~ Days + Days2 + (1|Subject)", dd.from_pandas(df, npartitions=3)).fit()
    assert list(dsk.params.index) == list(mem.params.index) == ["(Intercept)", "Days"]
    assert dsk.nobs == mem.nobs == 177 and dsk.n_dropped == 3
    assert dsk.reml_criterion == pytest.approx(mem.reml_criterion, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["cbpp_binomial_laplace", "poisson_offset_laplace", "binary_agq15", "binomial_slope_laplace"]
)
def test_dask_glmm_equals_in_memory_fit(client, case):
    """Each PIRLS step is one map-reduce over the partitions, with the modes broadcast."""
    import statsmodels.api as sm

    ref = load_case(case)
    df = case_data(ref)
    fam = {"binomial": sm.families.Binomial(), "poisson": sm.families.Poisson()}[ref["family"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = MixedModel.from_formula(ref["formula_py"], df, family=fam).fit(nAGQ=ref["nAGQ"])
        dsk = MixedModel.from_formula(ref["formula_py"], dd.from_pandas(df, npartitions=3), family=fam).fit(
            nAGQ=ref["nAGQ"]
        )
    assert dsk.llf == pytest.approx(mem.llf, abs=1e-6)
    assert np.all(np.abs(dsk.params - mem.params) <= 1e-4 * mem.bse)
    assert np.allclose(dsk.bse, mem.bse, rtol=1e-4)
    assert np.allclose(dsk.theta, mem.theta, atol=1e-5)
    # lme4's deviance (Σ unit deviances) is not stationary at the optimum: it moves with the
    # estimates (equal to 1e-4 SE), unlike -2 logLik
    assert dsk.deviance == pytest.approx(mem.deviance, abs=1e-3)
    assert dsk.minus2llf == pytest.approx(mem.minus2llf, abs=2e-6)
    assert dsk.notes == mem.notes
    fitted = dsk.fittedvalues.compute().to_numpy()
    assert np.allclose(fitted, mem.fittedvalues.to_numpy(), atol=1e-5)
    for kind in ("resid_pearson", "resid_deviance"):
        assert np.allclose(getattr(dsk, kind).compute().to_numpy(), getattr(mem, kind).to_numpy(), atol=1e-4)
    with pytest.raises(FitError, match="needs the rows in memory"):
        dsk.r2()


def test_blocks_too_large_for_memory_are_refused_before_the_data_pass(monkeypatch):
    import midas_glmm.checks as checks
    import midas_glmm.design.daskdata as daskdata

    df = pd.DataFrame({"y": np.arange(1.0, 41.0), "a": np.arange(40) % 10, "b": np.arange(40) % 8})
    monkeypatch.setattr(daskdata, "memory_bytes", lambda: 1000.0)
    monkeypatch.setattr(checks, "memory_bytes", lambda: 1000.0)
    # a family the iterative solver does not fit: refused before the long pass
    with pytest.raises(DataError, match="more than half of this machine's memory"):
        MixedModel.from_formula("y ~ 1 + (1|a) + (1|b)", dd.from_pandas(df, npartitions=2), family="gamma")
    # a Gaussian model is built, and fit(solver="auto") takes the iterative solver, which forms no such block
    model = MixedModel.from_formula("y ~ 1 + (1|a) + (1|b)", dd.from_pandas(df, npartitions=2))
    from midas_glmm.engine.iterative import choose_solver

    assert choose_solver("auto", model.design, model.family) == "iterative"


def test_glmm_pirls_passes_return_level_sized_answers():
    from midas_glmm.engine.glmmrows import RowBlock
    from midas_glmm.families import resolve_family

    rng = np.random.default_rng(3)
    n = 20_000
    df = pd.DataFrame({"y": rng.poisson(2, n).astype(float), "x": rng.normal(size=n), "g": rng.integers(0, 30, n)})
    model = MixedModel.from_formula("y ~ x + (1|g)", dd.from_pandas(df, npartitions=2), family="poisson")
    src = model.design.source
    block = RowBlock(resolve_family("poisson"), *src.rows(df))
    lams, us = [np.ones((1, 1))], [np.zeros(30)]
    ll, cp = block.evaluate(np.zeros(2), lams, us, 1.0, True, np.zeros(2), np.ones(2))
    sizes = [a.size for a in cp.ZtZ + cp.XytZ + [cp.XytXy]]
    assert np.isscalar(ll) and max(sizes) <= 30 * 3
    assert block.agq_terms(np.zeros(2), 1.0, us[0], np.ones(30), np.array([-1.0, 0.0, 1.0]), 1.0).shape == (3, 30)


def test_issue_14_calls_work_on_dask_fits_or_say_why(client):
    """Each post-fit tool on a Dask-fitted LMM: the same answer as in memory, or a FitError that
    says what needs the rows in memory."""
    ref, mem, dsk = fit_both("crossed_slopes_reml")
    L = np.eye(len(mem.params))[1:]
    sat_mem, sat_dsk = mem.wald_test(L), dsk.wald_test(L)
    assert sat_dsk["F value"] == pytest.approx(sat_mem["F value"], rel=1e-5)
    assert sat_dsk["DenDF"] == pytest.approx(sat_mem["DenDF"], rel=1e-3)
    pd.testing.assert_frame_equal(dsk.anova(), mem.anova(), rtol=1e-3)
    # type 1 factors X'X, which a Dask fit has from its data pass (it used to raise LinAlgError)
    pd.testing.assert_frame_equal(dsk.anova(type=1), mem.anova(type=1), rtol=1e-3)
    new = case_data(ref).iloc[:5]
    f_dsk, f_mem = dsk.get_prediction(new).summary_frame(), mem.get_prediction(new).summary_frame()
    assert np.allclose(f_dsk.to_numpy(), f_mem.to_numpy(), rtol=1e-4)
    assert np.allclose(dsk.resid_pearson.compute().to_numpy(), mem.resid_pearson.to_numpy(), atol=1e-6)
    for call, match in (
        (lambda: dsk.anova(ddf="kenward-roger"), "Kenward-Roger"),
        (lambda: dsk.r2(), "in memory"),
        (lambda: dsk.ranova(), "Dask"),
        (lambda: dsk.simulate_residuals(n=10), "simulation"),
        (lambda: dsk.emmeans("x"), "pandas DataFrame"),
        (lambda: dsk.get_prediction(), "newdata"),
    ):
        with pytest.raises(FitError, match=match):
            call()


def test_glmmtmb_families_and_zero_inflation_say_they_are_in_memory_only():
    """Issue 15's Dask path: a clear error naming what is in memory only, before any fitting."""
    from midas_glmm import MixedModel, datasets

    sal = dd.from_pandas(datasets.load("salamanders").assign(site=lambda d: d["site"].astype(str)), npartitions=2)
    with pytest.raises(FitError, match="zero-inflated models are fitted in memory only"):
        MixedModel.from_formula("count ~ mined + (1|site)", sal, family="poisson", ziformula="~ mined")
    model = MixedModel.from_formula("count ~ mined + (1|site)", sal, family="nbinom2")
    with pytest.raises(FitError, match="nbinom2 models are fitted in memory only"):
        model.fit()


def test_categorical_columns_of_a_dask_frame_give_the_in_memory_fit():
    """pandas Categorical predictors in a Dask frame (their level order kept): building the design
    read dask's ``cat.known`` off the pandas meta, an AttributeError; now the fit equals the
    in-memory one."""
    from midas_glmm import MixedModel, datasets

    sal = datasets.load("salamanders").assign(site=lambda d: d["site"].astype(str))
    f = "count ~ spp + mined + (1|site)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = MixedModel.from_formula(f, sal, family="poisson").fit()
        dsk = MixedModel.from_formula(f, dd.from_pandas(sal, npartitions=3), family="poisson").fit()
    assert list(dsk.params.index) == list(mem.params.index)
    assert dsk.llf == pytest.approx(mem.llf, abs=1e-6)
    assert np.allclose(dsk.params, mem.params, atol=1e-3 * mem.bse.min())
