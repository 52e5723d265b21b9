"""fit_many (issue 16): one model, many responses. Each response's numbers must be the ones a
single fit() of that response gives (the independent reference here: the single fit builds
its own design, blocks and start from the rows), whatever path fit_many took for it (the shared
Gaussian path, a response with missing values on its own rows, a GLMM, a worker process)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from midas_glmm import MixedModel
from midas_glmm.errors import ConvergenceWarning, DataError, FitError, SingularFitWarning


@pytest.fixture(scope="module")
def crossed():
    """A crossed design (subject × item) and eight responses with different variance ratios,
    one with missing values, one constant within subjects (singular/degenerate), one that fails."""
    rng = np.random.default_rng(7)
    n = 600
    df = pd.DataFrame(
        {
            "subject": rng.integers(0, 30, n).astype(str),
            "item": rng.integers(0, 12, n).astype(str),
            "x": rng.normal(size=n),
        },
        index=pd.RangeIndex(1000, 1000 + n),  # not 0..n-1: alignment by label is tested
    )
    s = df.subject.astype(int).to_numpy()
    it = df.item.astype(int).to_numpy()
    Y = {}
    for k, (ss, si) in enumerate([(1.0, 0.5), (0.2, 1.0), (2.0, 0.0), (0.5, 0.5), (1.5, 0.3), (0.0, 0.0)]):
        Y[f"g{k}"] = (
            2 + 0.5 * df.x.to_numpy() + ss * rng.normal(size=30)[s] + si * rng.normal(size=12)[it] + rng.normal(size=n)
        )
    # no item variation at all (the noise centred within items): the item variance is on its bound
    e = rng.normal(size=n)
    e -= pd.Series(e).groupby(it).transform("mean").to_numpy()
    Y["g6"] = 2 + 0.5 * df.x.to_numpy() + rng.normal(size=30)[s] + e
    Y = pd.DataFrame(Y, index=df.index)
    Y.loc[Y.index[[3, 50, 51]], "g1"] = np.nan  # missing for this response only
    Y["fails"] = 1.0 + 2.0 * df.x  # an exact linear function of the fixed effects
    return df, Y


def single(df, y, formula="y ~ x + (1|subject) + (1|item)", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, df.assign(y=y), **kw).fit()


@pytest.fixture(scope="module")
def many(crossed):
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit_many(Y)
    return model, res, caught


@pytest.mark.parametrize("name", ["g0", "g1", "g2", "g3", "g4", "g5", "g6"])
def test_each_response_equals_its_single_fit(crossed, many, name):
    df, Y = crossed
    _, res, _ = many
    ref = single(df, Y[name])
    assert res.llf[name] == pytest.approx(ref.llf, abs=1e-8)
    assert np.all(np.abs(res.params.loc[name] - ref.params) <= 1e-6 * ref.bse)
    assert np.allclose(res.bse.loc[name], ref.bse, rtol=1e-6)
    assert np.allclose(res.theta.loc[name], ref.theta, atol=1e-5)
    assert res.sigma[name] == pytest.approx(ref.sigma, rel=1e-6)
    assert res.nobs[name] == ref.nobs
    assert res.singular[name] == ref.singular
    # the full result of one response is that response's fit
    full = res[name]
    assert full.llf == pytest.approx(res.llf[name], abs=1e-9)
    assert np.allclose(full.params, res.params.loc[name], rtol=0, atol=1e-9 * ref.bse.min())
    assert full.nobs == ref.nobs


def test_missing_values_drop_rows_for_that_response_only(crossed, many):
    df, Y = crossed
    _, res, _ = many
    assert res.nobs["g1"] == len(df) - 3 and res.nobs["g0"] == len(df)


def test_a_failing_response_says_why_and_the_others_complete(many):
    _, res, caught = many
    assert list(res.errors.index) == ["fails"]
    assert "exact linear function" in res.errors["fails"]
    assert res.params.loc["fails"].isna().all() and res.params.drop("fails").notna().all().all()
    with pytest.raises(FitError, match="was not fitted"):
        res["fails"]
    # one summary warning per kind, not one per response
    kinds = [w.category for w in caught]
    assert kinds.count(ConvergenceWarning) == 1  # the failure (the fitted ones converge)
    assert kinds.count(SingularFitWarning) == (1 if res.singular.any() else 0)


def test_tables_tidy_frame_and_fdr(many):
    _, res, _ = many
    assert res.params.shape == (8, 2) and list(res.params.columns) == ["(Intercept)", "x"]
    tidy = res.to_frame()
    assert list(tidy.columns) == ["response", "term", "estimate", "std_error", "statistic", "p_value"]
    row = tidy[(tidy.response == "g3") & (tidy.term == "x")].iloc[0]
    assert row.estimate == res.params.loc["g3", "x"] and row.p_value == res.pvalues.loc["g3", "x"]
    adj = res.pvalues_adjusted("fdr_bh")
    p = res.pvalues["x"].dropna().sort_values()
    m = len(p)
    bh = np.minimum.accumulate((p.to_numpy() * m / np.arange(1, m + 1))[::-1])[::-1]
    assert np.allclose(adj["x"].dropna().loc[p.index], np.minimum(bh, 1))
    assert np.isnan(adj.loc["fails", "x"])
    with pytest.raises(FitError, match="adjustment"):
        res.pvalues_adjusted("nonsense")


def test_satterthwaite_df_on_request(crossed):
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y[["g0", "g1"]], ddf="satterthwaite")
    for name in ["g0", "g1"]:
        ref = single(df, Y[name]).coef_table(ddf="satterthwaite")
        assert np.allclose(res.df.loc[name], ref["df"], rtol=1e-4)
        assert np.allclose(res.pvalues.loc[name], ref["p_value"], rtol=1e-4)
    assert "df" in res.to_frame().columns


def test_ml_processes_and_arrays(crossed):
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    cols = ["g0", "g1", "g3", "g4"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = model.fit_many(Y[cols], method="ML")
        two = model.fit_many(Y[cols], method="ML", n_jobs=2)
        arr = model.fit_many(Y[["g0", "g3"]].to_numpy(), method="ML")
    assert np.array_equal(one.llf.to_numpy(), two.llf.to_numpy())
    assert one.llf["g0"] == pytest.approx(single_ml(df, Y["g0"]), abs=1e-8)
    assert list(arr.params.index) == ["y0", "y1"] and arr.llf["y1"] == one.llf["g3"]


def single_ml(df, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula("y ~ x + (1|subject) + (1|item)", df.assign(y=y)).fit(method="ML").llf


def test_glmm_responses(crossed):
    df, _ = crossed
    rng = np.random.default_rng(3)
    s = df.subject.astype(int).to_numpy()
    eta = -0.3 + 0.8 * df.x.to_numpy() + rng.normal(size=30)[s]
    Y = pd.DataFrame(
        {f"b{k}": (rng.random(len(df)) < 1 / (1 + np.exp(-eta))).astype(float) for k in range(3)}, index=df.index
    )
    Y.iloc[5, 0] = np.nan
    model = MixedModel.from_formula("~ x + (1|subject)", df, family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y)
    for name in Y.columns:
        ref = single(df, Y[name], "y ~ x + (1|subject)", family="binomial")
        assert res.llf[name] == pytest.approx(ref.llf, abs=1e-8)
        assert np.all(np.abs(res.params.loc[name] - ref.params) <= 1e-6 * ref.bse)
        assert res.nobs[name] == ref.nobs
    assert res["b1"].llf == res.llf["b1"]


def test_progress_output(crossed, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):  # the plain progress lines (tqdm is optional)
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit_many(Y[["g0", "g2"]], progress=True)
    err = capsys.readouterr().err
    assert "fit_many: 2/2 responses" in err


def test_bad_inputs(crossed):
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    with pytest.raises(DataError, match="index"):
        model.fit_many(Y.reset_index(drop=True))
    with pytest.raises(DataError, match="rows"):
        model.fit_many(np.zeros((7, 2)))
    with pytest.raises(DataError, match="not numeric"):
        model.fit_many(Y.assign(g0=df.subject))
    with pytest.raises(FitError, match="n_jobs"):
        model.fit_many(Y, n_jobs=0)
    with pytest.raises(FitError, match="no response"):
        model.fit()
    with pytest.raises(FitError, match="unknown method"):
        model.fit_many(Y, method="laplace")
    with pytest.raises(FitError, match="does not take nAGQ"):
        model.fit_many(Y, nAGQ=5)
    with pytest.raises(FitError, match="start= has 1 values"):
        model.fit_many(Y, start=[0.5])
    with pytest.raises(FitError, match="maxiter"):
        model.fit_many(Y, maxiter=0)


def test_dask_client_spreads_responses(crossed):
    distributed = pytest.importorskip("distributed")
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = model.fit_many(Y[["g0", "g1", "g3"]])
        with distributed.Client(processes=False, n_workers=2, threads_per_worker=1) as client:
            remote = model.fit_many(Y[["g0", "g1", "g3"]], client=client)
    assert np.array_equal(local.llf.to_numpy(), remote.llf.to_numpy())
    assert remote.nobs["g1"] == len(df) - 3


def test_the_example_set_has_a_singular_response(many):
    _, res, caught = many
    assert res.singular.any()  # so that the singular summary warning above is exercised
    assert any(w.category is SingularFitWarning and "boundary" in str(w.message) for w in caught)


def test_worker_count():
    import os

    from midas_glmm.checks import check_jobs

    assert check_jobs(1) == 1 and check_jobs(3) == 3 and check_jobs(-1) == (os.cpu_count() or 1)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(FitError, match=r"n_jobs must be a positive integer or -1 \(all cores\)"):
            check_jobs(bad)


def test_fit_controls_reach_every_response(crossed):
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = model.fit_many(Y[["g0", "g3"]], maxiter=3)
        full = model.fit_many(Y[["g0", "g3"]])
        started = model.fit_many(Y[["g0", "g3"]], start=full.theta.loc["g0"].to_numpy())
    assert not short.converged.any() and "maxiter = 3" in short.messages["g0"]
    assert np.all(short.llf < full.llf + 1e-12)
    assert np.allclose(started.llf, full.llf, atol=1e-8)


def test_prior_weights_and_an_offset_in_the_shared_path():
    rng = np.random.default_rng(3)
    n = 500
    df = pd.DataFrame(
        {
            "a": rng.integers(0, 25, n).astype(str),
            "b": rng.integers(0, 8, n).astype(str),
            "x": rng.normal(size=n),
            "w": rng.uniform(0.5, 2, n),
            "off": rng.normal(size=n),
        }
    )
    a = df.a.astype(int).to_numpy()
    Y = pd.DataFrame(
        {f"r{k}": 1 + df.x + rng.normal(size=25)[a] + rng.normal(size=n) / np.sqrt(df.w) for k in range(3)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("~ x + offset(off) + (1|a) + (1|b)", df, weights="w").fit_many(Y)
        for name in Y:
            ref = MixedModel.from_formula(
                "y ~ x + offset(off) + (1|a) + (1|b)", df.assign(y=Y[name]), weights="w"
            ).fit()
            assert res.llf[name] == pytest.approx(ref.llf, abs=1e-8)
            assert np.all(np.abs(res.params.loc[name] - ref.params) <= 1e-6 * ref.bse)


def test_cbind_response_with_missing_values_keeps_its_trials():
    rng = np.random.default_rng(5)
    n = 300
    df = pd.DataFrame({"g": rng.integers(0, 20, n).astype(str), "x": rng.normal(size=n)})
    df["n"] = rng.integers(5, 15, n)
    df["s"] = rng.binomial(df["n"], 1 / (1 + np.exp(-(0.3 * df.x))))
    model = MixedModel.from_formula("cbind(s, n - s) ~ x + (1|g)", df, family="binomial")
    prop = (df.s / df.n).to_numpy().copy()
    prop[0] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = model.fit_many(pd.DataFrame({"p": prop}, index=df.index))
    assert not any("trials" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MixedModel.from_formula("cbind(s, n - s) ~ x + (1|g)", df.iloc[1:], family="binomial").fit()
    assert res.llf["p"] == pytest.approx(ref.llf, abs=1e-6)
    assert np.all(np.abs(res.params.loc["p"] - ref.params) <= 1e-5 * ref.bse)


def test_subset_rows_keep_the_model_layout():
    """A response missing on rows that change the term order or lose a coefficient."""
    rng = np.random.default_rng(8)
    n = 400
    df = pd.DataFrame({"a": rng.integers(0, 30, n).astype(str), "b": rng.integers(0, 25, n).astype(str)})
    df["x"] = rng.normal(size=n)
    df["f"] = np.where(np.arange(n) < 20, "rare", "common")
    a = df.a.astype(int).to_numpy()
    b = df.b.astype(int).to_numpy()
    y = 1 + df.x + 2.5 * rng.normal(size=30)[a] + 0.5 * rng.normal(size=25)[b] + rng.normal(size=n)
    few_a = y.copy()
    few_a[np.isin(a, np.arange(10))] = np.nan  # a keeps 20 levels < b's 25: the term order flips
    no_rare = y.copy()
    no_rare[:20] = np.nan  # level "rare" of f has no row left
    Y = pd.DataFrame({"full": y, "few_a": few_a, "no_rare": no_rare}, index=df.index)
    model = MixedModel.from_formula("~ x + f + (1|a) + (1|b)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y)
        keep = ~np.isnan(few_a)
        ref = MixedModel.from_formula("y ~ x + f + (1|a) + (1|b)", df[keep].assign(y=few_a[keep])).fit()
    theta_ref = dict(zip(ref.varcorr()["grp"], ref.varcorr()["sdcor"] / ref.sigma))
    assert res.theta.loc["few_a", "a.(Intercept)"] == pytest.approx(theta_ref["a"], rel=1e-5)
    assert res.theta.loc["few_a", "b.(Intercept)"] == pytest.approx(theta_ref["b"], rel=1e-5)
    assert "loses" in res.errors["no_rare"] and np.isnan(res.llf["no_rare"])


def test_infinite_values_and_array_models():
    rng = np.random.default_rng(9)
    n = 120
    g = np.repeat(np.arange(12), 10)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    model = MixedModel(rng.normal(size=n), X, g)
    Y = pd.DataFrame({"ok": rng.normal(size=n) + rng.normal(size=12)[g], "inf": rng.normal(size=n)})
    Y.loc[3, "inf"] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y)
    assert "infinite value" in res.errors["inf"] and np.isfinite(res.llf["ok"])
    with pytest.raises(DataError, match="rows but the model uses"):
        model.fit_many(Y.iloc[:50])


def test_data_changed_after_building_is_caught(crossed):
    df, Y = crossed
    df = df.copy()
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    df["x"] *= 100  # the caller edits the frame the model was built from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y[["g0", "g1"]])  # g1 has missing values: refitted on its own rows
    assert np.isfinite(res.llf["g0"]) and "has changed since" in res.errors["g1"]


def test_duplicate_response_names_are_named(crossed):
    """Y with a column name twice: a DataError naming it (it used to be an AttributeError)."""
    df, Y = crossed
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    twice = pd.concat([Y[["g0"]], Y[["g0"]]], axis=1)
    with pytest.raises(DataError, match="response name 'g0' appears more than once in Y"):
        model.fit_many(twice)


def test_messages_hold_each_fits_warnings(crossed, many):
    """messages is "the warnings of each fit": a singular response says so, as its single fit
    warns (the lock-step Newton path left it empty)."""
    df, Y = crossed
    _, res, _ = many
    for name in res.singular[res.singular].index:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            MixedModel.from_formula("y ~ x + (1|subject) + (1|item)", df.assign(y=Y[name])).fit()
        said = {str(w.message) for w in caught if w.category is SingularFitWarning}
        assert said and all(m in res.messages[name] for m in said)
    assert not any("boundary" in res.messages[n] for n in res.singular[~res.singular].index)


def test_a_response_constant_within_groups_is_named_once():
    """A response constant within the groups (a group-level variable given as a response): its
    message and its full result's say what a single fit() says — the residual variance is (near)
    zero — once, naming the response as fit_many names it."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=200), "g": np.repeat(np.arange(20), 10)})
    Y = pd.DataFrame({"ok": rng.normal(size=200), "level": np.repeat(rng.normal(size=20), 10)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MixedModel.from_formula("~ x + (1|g)", df).fit_many(Y)
        full = res["level"].convergence_messages
    said = [m for m in full if "residual variance is (near) zero" in m]
    assert len(said) == 1 and "'level'" in said[0]
    assert res.messages["level"].count("residual variance is (near) zero") == 1
    assert "'level'" in res.messages["level"] and not res.converged["level"]
    assert "residual variance" not in res.messages["ok"]


def test_a_model_fit_would_take_to_the_iterative_solver_is_fitted_response_by_response(crossed, monkeypatch):
    """Where fit()'s solver="auto" takes the iterative solver (a dense tail too large to form),
    fit_many builds no shared blocks (their dense tail is what is too large): each response is
    fitted by fit(), its answer that fit's."""
    import midas_glmm.engine.iterative as iterative
    import midas_glmm.many.runners as runners

    df, Y = crossed
    monkeypatch.setattr(iterative, "AUTO_TAIL", 5)  # this design's tail counts as large
    model = MixedModel.from_formula("~ x + (1|subject) + (1|item)", df)
    assert iterative.choose_solver("auto", model.design, model.family) == "iterative"

    def no_shared(*args, **kwargs):
        raise AssertionError("the shared blocks were built")

    monkeypatch.setattr(runners, "shared_for", no_shared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_many(Y[["g0", "g3"]])
    for name in ("g0", "g3"):
        ref = single(df, Y[name])
        assert ref.fit_options["solver"] == "auto" and ref.estimates.opt.optimizer == "iterative"
        assert res.llf[name] == pytest.approx(ref.llf, abs=1e-9)
        assert np.allclose(res.params.loc[name], ref.params, rtol=1e-9)
