"""conf_int's arguments are checked, and refits (refit(), the bootstrap) use the original fit's
settings: the bootstrap is checked against refits done by hand on the same simulated responses."""

import copy
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import case_data, fitted
from hypothesis import given, settings
from hypothesis import strategies as st

import midas_glmm.posthoc.bootstrap
import midas_glmm.posthoc.profile
from midas_glmm import MixedModel, datasets
from midas_glmm.errors import FitError


@pytest.fixture(scope="module")
def slope():
    return MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()


def by_hand(case, n_boot, seed, **fit_kwargs):
    """The bootstrap's statistics from refits done here: the responses res.simulate draws with the
    same seed, put into the case's data frame, fitted by from_formula with ``fit_kwargs``."""
    ref, res = fitted(case)
    data = case_data(ref)
    out = []
    for y in res.simulate(n_boot, seed=seed).T:
        if ref["formula_py"].startswith("cbind"):  # simulated proportions -> counts of size trials
            data["incidence"] = np.round(y * data["size"])
        else:
            data[ref["formula_py"].split("~")[0].strip()] = y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = MixedModel.from_formula(ref["formula_py"], data, family=res.family).fit(**fit_kwargs)
        vc = r.varcorr()
        sds = vc[vc["var2"].isna() & (vc["grp"] != "Residual")]["sdcor"].to_numpy()
        out.append(np.concatenate([r.params.to_numpy(), sds, [r.sigma] if r.family.has_dispersion else []]))
    return np.array(out)


@pytest.mark.parametrize("method", ["wald", "profile", "bootstrap"])
def test_misspelt_parameter_name_is_an_error_with_a_suggestion(slope, method):
    with pytest.raises(FitError, match=r"no parameter 'Day'; did you mean 'Days'\? The names are: .*Days"):
        slope.conf_int(method=method, which=["Day"])


def test_which_selects_rows_and_accepts_a_single_name(slope):
    assert list(slope.conf_int(which="Days").index) == ["Days"]
    ci = slope.conf_int(method="profile", which=["sigma", "Days"])
    assert list(ci.index) == ["sigma", "Days"]  # table order
    assert ci.loc["Days", "lower"] < slope.params["Days"] < ci.loc["Days", "upper"]


def test_wald_interval_of_a_variance_component_points_to_profile(slope):
    with pytest.raises(FitError, match="Wald intervals cover the fixed effects only: use method='profile'"):
        slope.conf_int(which="sd_Days|Subject")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": 95}, r"level must be in \(0, 1\).*did you mean 0.95\?"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\)"),
        ({"method": "bootsrap"}, r"unknown interval method 'bootsrap'; did you mean 'bootstrap'\?"),
        ({"method": "wald", "n_boot": 10}, r"conf_int\(method='wald'\) has no option 'n_boot'"),
        ({"method": "bootstrap", "nboot": 10}, r"has no option 'nboot'; did you mean 'n_boot'\?"),
        ({"method": "bootstrap", "n_boot": 0}, r"n_boot must be a positive integer"),
        ({"method": "bootstrap", "n_jobs": 0}, r"n_jobs must be a positive integer or -1 \(all cores\), not 0"),
    ],
)
def test_bad_interval_arguments_are_clear_errors(slope, kwargs, message):
    with pytest.raises(FitError, match=message):
        slope.conf_int(**kwargs)


def test_gamma_bootstrap_interval_of_sigma_is_that_of_the_refitted_sigmas():
    _, res = fitted("gamma_log_tmb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = res.conf_int(method="bootstrap", n_boot=8, seed=3)
    hand = by_hand("gamma_log_tmb", 8, seed=3)
    expected = np.quantile(hand, [0.025, 0.975], axis=0)
    assert list(boot.index)[-1] == "sigma"
    assert np.allclose(boot["lower"], expected[0], rtol=1e-6)
    assert np.allclose(boot["upper"], expected[1], rtol=1e-6)
    lo, hi = boot.loc["sigma"]
    assert 0.5 * res.sigma < lo < hi < 2 * res.sigma  # not the constant 1 of a binomial/Poisson sigma


def _recorded(monkeypatch, method: str, keyword: str) -> list:
    """The ``keyword`` argument of every call of MixedModel.``method`` from here on."""
    calls = []
    real = getattr(MixedModel, method)

    def recorded(self, *args, **kwargs):
        calls.append(kwargs.get(keyword))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MixedModel, method, recorded)
    return calls


@pytest.mark.parametrize("case", ["penicillin_crossed_reml", "sleepstudy_uncorrelated_reml", "dyestuff_ml"])
def test_gaussian_bootstrap_refits_in_one_batch_and_matches_refits_by_hand(case, monkeypatch):
    """A Gaussian bootstrap goes through fit_many (the shared blocks and one data pass per batch):
    its table is that of refits done one by one from the formula."""
    _, res = fitted(case)
    monkeypatch.setattr(midas_glmm.posthoc.bootstrap, "COMPILED_BATCH_FROM", 0.0)
    calls = _recorded(monkeypatch, "fit_many", "method")
    boot = res.conf_int(method="bootstrap", n_boot=12, seed=7)
    assert calls == [res.fit_options["method"]]  # one batch, with the fit's method
    hand = by_hand(case, 12, seed=7, method=res.fit_options["method"])
    expected = np.quantile(hand, [0.025, 0.975], axis=0)
    assert np.allclose(boot["lower"], expected[0], rtol=1e-6)
    assert np.allclose(boot["upper"], expected[1], rtol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    levels=st.integers(5, 14),
    rows=st.integers(3, 9),
    slope=st.booleans(),
    weighted=st.booleans(),
    collinear=st.booleans(),
)
def test_a_gaussian_bootstrap_in_a_batch_is_the_one_by_one_table(seed, levels, rows, slope, weighted, collinear):
    """On any small design of one term (intercepts or random slopes; prior weights; a collinear
    column dropped): the batch's table is the table of refits one by one, each statistic in its
    place, to 1e-4 of an interval's width (a correlation near ±1 on six levels is flat: the two
    optimizers end ~1e-6 apart in it). Derandomized: on six levels of random slopes a refit's
    BOBYQA can stop on a ridge 5e-6 of log-likelihood short, by either path (the runs of 250
    random examples found two), which is the optimizer's, not the batch's layout this checks."""
    rng = np.random.default_rng(seed)
    n = levels * rows
    g = np.repeat(np.arange(levels), rows)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 0.8, levels)[g] + (rng.normal(0, 0.4, levels)[g] * x if slope else 0)
    df = pd.DataFrame(
        {"y": y + rng.normal(size=n), "x": x, "x2": 2 * x, "g": g.astype(str), "w": rng.uniform(0.5, 2, n)}
    )
    formula = "y ~ x" + (" + x2" if collinear else "") + (" + (x|g)" if slope else " + (1|g)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula(formula, df, weights="w" if weighted else None).fit()
        batch = res.conf_int(method="bootstrap", n_boot=6, seed=seed)
        real = midas_glmm.posthoc.bootstrap._batched
        midas_glmm.posthoc.bootstrap._batched = lambda r: False
        try:
            one_by_one = res.conf_int(method="bootstrap", n_boot=6, seed=seed)
        finally:
            midas_glmm.posthoc.bootstrap._batched = real
    assert list(batch.index) == list(one_by_one.index)
    assert batch.attrs["n_ok"] == one_by_one.attrs["n_ok"]
    width = np.maximum((one_by_one["upper"] - one_by_one["lower"]).to_numpy(), 1e-8)
    a, b = batch.to_numpy(), one_by_one.to_numpy()
    assert np.all((np.abs(a - b) <= 1e-4 * width[:, None]) | (np.isnan(a) & np.isnan(b)))


def test_a_correlation_whose_sd_is_zero_is_left_out_of_the_bootstrap_table():
    """A refit with an SD at 0 (exactly, or within the optimizer's 1e-11 of it) has no
    correlation there (0/0, as lme4's bootMer): NaN in its row, left out of that quantile; the
    hypothesis above found the batch's 1e-11 giving 0.998 where the refit's exact 0 gave 0."""
    from midas_glmm.design.reterms import ThetaMap
    from midas_glmm.posthoc.bootstrap import _statistics

    _, res = fitted("sleepstudy_slope_reml")
    tm = ThetaMap(res.design.terms)
    beta = res.params.to_numpy()
    for theta in ([0.0, 0.0, 0.0], [7.8e-12, 2.5e-12, 1.7e-13], [0.0, 0.3, 0.2], [0.9, 0.1, 0.0]):
        row = _statistics(tm, theta, 25.0, beta, 25.0)
        sd0, cor, sd1 = row[2:5]
        assert np.isnan(cor) == (not (sd0 > 25e-7 and sd1 > 25e-7)), theta
        assert row[-1] == 25.0 and np.array_equal(row[:2], beta)
    assert np.isfinite(_statistics(tm, [0.9, 0.1, 0.2], 25.0, beta, 25.0)).all()


def test_the_compiled_batch_waits_for_refits_that_take_longer_than_loading_it(monkeypatch):
    """Several terms need the compiled batch kernels (a process's load, or after an install their
    compile): refits that one by one take less than COMPILED_BATCH_FROM stay one by one; a term of
    one or two columns is batched in numpy whatever the time."""
    monkeypatch.delitem(sys.modules, "midas_glmm.linalg.batchkernels", raising=False)  # as in a new process
    monkeypatch.setattr(midas_glmm.posthoc.bootstrap, "COMPILED_BATCH_FROM", 1e9)
    calls = _recorded(monkeypatch, "fit_many", "method")
    crossed = fitted("penicillin_crossed_reml")[1].conf_int(method="bootstrap", n_boot=5, seed=1)
    assert calls == [] and crossed.attrs["n_ok"] == 5
    fitted("sleepstudy_slope_reml")[1].conf_int(method="bootstrap", n_boot=5, seed=1)
    assert calls == ["REML"]


def test_gaussian_bootstrap_with_a_correlation_matches_the_one_by_one_refits(slope, monkeypatch):
    """The batch's correlations and sigma in the table's order: the refits one by one (the
    bootstrap's path for the other families) give the same table."""
    batch = slope.conf_int(method="bootstrap", n_boot=30, seed=2)
    monkeypatch.setattr(midas_glmm.posthoc.bootstrap, "_batched", lambda res: False)
    one_by_one = slope.conf_int(method="bootstrap", n_boot=30, seed=2)
    assert list(batch.index) == list(one_by_one.index) and "cor_Days.(Intercept)|Subject" in batch.index
    assert np.allclose(batch.to_numpy(), one_by_one.to_numpy(), rtol=1e-5)


def test_a_glmms_refits_start_at_its_theta_as_lme4s_refit(monkeypatch):
    """bootMer's refits start from the fit's θ̂ (lme4's refit): a GLMM's refits one by one take
    start=θ̂ (the same optima: the table matches refits by hand from lme4's start, above); an LMM's
    keep the moment start (the balanced designs' exact one)."""
    glmm, lmm = fitted("cbpp_binomial_laplace")[1], fitted("penicillin_crossed_reml")[1]
    starts = _recorded(monkeypatch, "fit", "start")
    glmm.conf_int(method="bootstrap", n_boot=3, seed=1)
    assert len(starts) == 3 and all(np.array_equal(s, glmm.theta) for s in starts)
    starts.clear()
    monkeypatch.setattr(midas_glmm.posthoc.bootstrap, "_batched", lambda res: False)
    lmm.conf_int(method="bootstrap", n_boot=2, seed=1)
    assert starts == [None, None]


def test_a_glmm_bootstrap_checks_n_jobs_as_fit_many_does():
    """0 or -2 processes mean nothing: an error on every path (a GLMM's refits one by one ran
    serially on them; check_jobs: -1 is one per core)."""
    _, glmm = fitted("cbpp_binomial_laplace")
    for bad in (0, -2):
        with pytest.raises(FitError, match=r"n_jobs must be a positive integer or -1 \(all cores\)"):
            glmm.conf_int(method="bootstrap", n_boot=2, seed=1, n_jobs=bad)


def test_only_gaussian_models_of_the_direct_solver_bootstrap_in_a_batch():
    from midas_glmm.posthoc.bootstrap import _batched

    assert _batched(fitted("sleepstudy_slope_reml")[1])
    assert not _batched(fitted("cbpp_binomial_laplace")[1])
    res = copy.copy(fitted("dyestuff_reml")[1])  # not the shared fit's options
    res.fit_options = dict(res.fit_options, solver="iterative")
    assert not _batched(res)


def test_bootstrap_of_a_fast_fit_refits_with_nagq_zero():
    _, res = fitted("cbpp_binomial_nagq0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = res.conf_int(method="bootstrap", n_boot=4, seed=5)
    fast = np.quantile(by_hand("cbpp_binomial_nagq0", 4, seed=5, fast=True), [0.025, 0.975], axis=0)
    laplace = np.quantile(by_hand("cbpp_binomial_nagq0", 4, seed=5), [0.025, 0.975], axis=0)
    assert np.allclose(boot["lower"], fast[0], rtol=1e-6) and np.allclose(boot["upper"], fast[1], rtol=1e-6)
    assert not np.allclose(fast, laplace, rtol=1e-4)  # so the check can tell the two apart


def test_refit_keeps_the_settings_of_the_fit():
    _, res = fitted("cbpp_binomial_nagq0")
    again = res.refit()
    assert again.method == "nAGQ=0" and again.fit_options == res.fit_options
    assert again.llf == pytest.approx(res.llf, abs=1e-10)
    ss = datasets.load("sleepstudy")
    nm = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", ss).fit(optimizer="nelder-mead")
    assert nm.fit_options == {"method": "REML", "optimizer": "nelder-mead", "standardize": True, "solver": "auto"}
    ml = nm.refit(method="ML")
    assert ml.fit_options == {"method": "ML", "optimizer": "nelder-mead", "standardize": True, "solver": "auto"}
    agq = fitted("cbpp_binomial_agq25")[1]
    assert agq.refit().llf == pytest.approx(agq.llf, abs=1e-8)


def test_bootstrap_reports_failed_refits_instead_of_swallowing_them():
    res = MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", datasets.load("sleepstudy")).fit()
    res.fit_options = dict(res.fit_options, optimizer="no-such-optimizer")
    with pytest.raises(FitError, match="every bootstrap refit failed; the first: FitError: unknown optimizer"):
        res.conf_int(method="bootstrap", n_boot=3, seed=1)


def test_profile_lets_the_librarys_own_errors_through(slope, monkeypatch):
    """A library error inside a profile evaluation is raised, not read as 'outside the interval'."""
    real = midas_glmm.posthoc.profile.lmm_criterion

    def failing(*args, **kwargs):
        if kwargs.get("fix") is not None:
            raise FitError("a library error inside the profile")
        return real(*args, **kwargs)

    monkeypatch.setattr(midas_glmm.posthoc.profile, "lmm_criterion", failing)
    with pytest.raises(FitError, match="a library error inside the profile"):
        slope.conf_int(method="profile", which="Days")


def test_interval_tables_are_dataframes_with_lower_and_upper(slope):
    ci = slope.conf_int(method="wald")
    assert isinstance(ci, pd.DataFrame) and list(ci.columns) == ["lower", "upper"]


def test_dask_profile_refuses_fixed_effects_clearly_and_profiles_variance_parameters():
    """Profiling a fixed effect needs more passes over Dask rows; that used to be swallowed by the
    profile's except ValueError and read as 'outside the interval'."""
    import dask.dataframe as dd

    ss = datasets.load("sleepstudy")
    mem = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", ss).fit(method="ML")
    dsk = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", dd.from_pandas(ss, npartitions=3)).fit(method="ML")
    with pytest.raises(FitError, match=r"profiling the fixed effects \(\(Intercept\), Days\).*which=\["):
        dsk.conf_int(method="profile")
    varpar = ["sd_(Intercept)|Subject", "sigma"]
    got, expected = dsk.conf_int(method="profile", which=varpar), mem.conf_int(method="profile", which=varpar)
    width = (expected["upper"] - expected["lower"]).to_numpy()
    assert np.all(np.abs(got.to_numpy() - expected.to_numpy()) <= 1e-4 * width[:, None])


def test_gaussian_glmm_with_a_log_link_can_be_simulated_and_bootstrapped():
    """Gaussian GLMMs with a non-identity link are fitted; simulation refused them."""
    import statsmodels.api as sm
    from conftest import REF

    data = pd.read_csv(REF / "links" / "gaussian_log.csv")
    family = sm.families.Gaussian(sm.families.links.Log())
    res = MixedModel.from_formula("y ~ x + (1|g)", data, family=family).fit()
    sims = res.simulate(400, seed=2, random_effects="conditional")
    resid = sims - res.fittedvalues.to_numpy()[:, None]
    assert np.abs(resid.mean(axis=1)).max() < 5 * res.sigma / np.sqrt(400)
    assert resid.std() == pytest.approx(res.sigma, rel=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = res.conf_int(method="bootstrap", n_boot=6, seed=1)
    assert boot.loc["sigma", "lower"] < res.sigma * 1.2 and boot.loc["sigma", "upper"] > res.sigma * 0.8
