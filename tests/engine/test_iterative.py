"""The iterative solver (issue 27) against the exact engine, its kernels against dense algebra.

The iterative fit is an estimator of its own: the root of a gradient whose log-determinant part
is estimated with fixed random probes. It should agree with the exact fit within its reported
Monte Carlo error, exactly where the probes estimate nothing (one term, nested terms), and its
β̂, standard errors and modes follow from θ̂ exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from midas_glmm import MixedModel
from midas_glmm.engine import iterative
from midas_glmm.engine.iterative import CrossedRows, ThetaSystem, choose_solver, dense_tail
from midas_glmm.errors import FitError
from midas_glmm.linalg.matfree import crossprod_pass, schur_apply


def crossed_rows(n=6000, a=240, b=70, seed=11, slope_sd=0.0):
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"s": rng.integers(0, a, n), "i": rng.integers(0, b, n), "x": rng.normal(size=n)})
    d["c"] = d.s.astype(str) + "_" + rng.integers(0, 3, n).astype(str)
    u0, u1, v = rng.normal(0, 0.9, a), rng.normal(0, slope_sd, a), rng.normal(0, 0.6, b)
    eta = 0.4 + 0.5 * d.x + u0[d.s] + u1[d.s] * d.x + v[d.i]
    d["y"] = eta + rng.normal(0, 1.0, n)
    d["w"] = rng.uniform(0.5, 2.0, n)
    d["off"] = rng.normal(0, 0.3, n)
    d["yb"] = (rng.random(n) < 1 / (1 + np.exp(-(eta - 0.4)))).astype(float)
    d["yc"] = rng.poisson(np.exp(0.3 * (eta - 0.4) + d.off))
    return d


@pytest.fixture(scope="module")
def data():
    return crossed_rows()


def fit_both(formula, data, **kw):
    fam = kw.pop("family", None)
    model = MixedModel.from_formula(formula, data, family=fam, **kw.pop("model_kw", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = model.fit(solver="direct", **kw)
        it = model.fit(solver="iterative", **kw)
    return direct, it


def assert_agree(direct, it, beta_se=1e-3, exact=False):
    """θ within 5 Monte Carlo SEs (to 1e-5 relative where the probes estimate nothing), β within
    ``beta_se`` of its SE, SEs to 0.5%, log-likelihood within 5 MC SEs."""
    info = it.estimates.solver
    assert it.solver == "iterative" and direct.solver == "direct"
    tol = 1e-5 * np.maximum(np.abs(direct.theta), 1e-3) + (0 if exact else 5 * info.theta_mc_se)
    np.testing.assert_array_less(np.abs(it.theta - direct.theta), tol + 1e-6)
    np.testing.assert_array_less(np.abs(it.params - direct.params) / direct.bse, beta_se)
    np.testing.assert_allclose(it.bse, direct.bse, rtol=5e-3)
    if exact:  # the same optimum; at a boundary the direct optimizer may stop a hair below it
        assert direct.llf - 1e-6 <= it.llf <= direct.llf + 1e-4
    else:
        assert abs(it.llf - direct.llf) <= 5 * info.llf_mc_se
    if not exact:  # the approximation's own error is small beside the statistical one
        assert np.all(info.theta_mc_se < 0.02 * np.maximum(direct.theta, 0.05))


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_crossed_intercepts(data, method):
    direct, it = fit_both("y ~ x + (1|s) + (1|i)", data, method=method)
    assert_agree(direct, it)
    assert it.estimates.solver.probes == iterative.PROBES


def test_crossed_random_slope(data):
    d = crossed_rows(seed=12, slope_sd=0.4)
    direct, it = fit_both("y ~ x + (1 + x|s) + (1|i)", d, method="REML")
    assert_agree(direct, it)
    # the uncorrelated form too
    direct, it = fit_both("y ~ x + (x||s) + (1|i)", d, method="ML")
    assert_agree(direct, it)


def test_three_crossed_factors(data):
    direct, it = fit_both("y ~ x + (1|s) + (1|i) + (1|c)", data, method="ML")
    assert_agree(direct, it, beta_se=5e-3)
    assert it.singular == direct.singular


def test_nested_and_single_term_are_exact(data):
    """Nested: the Schur complement is diagonal and Rademacher probes estimate a diagonal's trace
    exactly; one term: nothing is left to probe. Both give the exact fit."""
    for formula in ("y ~ x + (1|s) + (1|c)", "y ~ x + (1|i) + (1|i:s)", "y ~ x + (1|s)"):
        direct, it = fit_both(formula, data, method="REML")
        assert_agree(direct, it, beta_se=1e-4, exact=True)


def test_weights_and_offset(data):
    direct, it = fit_both("y ~ x + (1|s) + (1|i)", data, method="ML", model_kw={"weights": "w", "offset": "off"})
    assert_agree(direct, it)


def test_binomial_crossed(data):
    direct, it = fit_both("yb ~ x + (1|s) + (1|i)", data, family="binomial")
    assert_agree(direct, it, beta_se=5e-3)
    mc = it.solver_error
    assert set(direct.params.index) <= set(mc.index) and (mc[direct.params.index] < 0.01 * direct.bse).all()
    fixed = it.summary().fixed  # the fixed effects' table shows their Monte Carlo SEs
    np.testing.assert_allclose(fixed["MC s.e."], mc[direct.params.index])


def test_binomial_successes_out_of_trials(data):
    rng = np.random.default_rng(5)
    d = data.assign(n=rng.integers(1, 6, len(data)))
    d["k"] = rng.binomial(d["n"], 1 / (1 + np.exp(-(0.3 * d.x + 0.5 * (d.yb - 0.5)))))
    direct, it = fit_both("cbind(k, n - k) ~ x + (1|s) + (1|i)", d, family="binomial")
    assert_agree(direct, it, beta_se=5e-3)


def test_poisson_crossed_with_offset(data):
    direct, it = fit_both("yc ~ x + (1|s) + (1|i)", data, family="poisson", model_kw={"offset": "off"})
    assert_agree(direct, it, beta_se=5e-3)


def test_conditional_modes_and_variances(data):
    direct, it = fit_both("y ~ x + (1|s) + (1|i)", data, method="REML")
    a, b = direct.ranef(condvar=True), it.ranef(condvar=True)
    np.testing.assert_allclose(b["condval"], a["condval"], atol=1e-3 * a["condval"].abs().max())
    # the conditional SDs are estimated by the probes (the summary and docs say so)
    np.testing.assert_allclose(b["condsd"], a["condsd"], rtol=0.05)
    np.testing.assert_allclose(it.predict(data.head(50)), direct.predict(data.head(50)), atol=1e-3)


def test_summary_says_which_solver_ran(data):
    direct, it = fit_both("y ~ x + (1|s) + (1|i)", data, method="ML")
    assert "Solver: direct" in str(direct.summary())
    text = str(it.summary())
    assert "Solver: iterative" in text and "MC s.e." in text
    assert it.fit_options["solver"] == "iterative"
    assert it.refit(method="REML").solver == "iterative"


def test_automatic_choice(data, monkeypatch):
    model = MixedModel.from_formula("y ~ x + (1|s) + (1|i)", data)
    nested = MixedModel.from_formula("y ~ x + (1|s) + (1|c)", data)
    assert dense_tail(model.design.terms) == 70  # i (70 levels) is crossed with s
    assert dense_tail(nested.design.terms) == 0  # c is nested in s: no fill-in
    assert choose_solver("auto", model.design, model.family) == "direct"
    monkeypatch.setattr(iterative, "AUTO_TAIL", 50)
    assert choose_solver("auto", model.design, model.family) == "iterative"
    assert choose_solver("auto", nested.design, nested.family) == "direct"
    assert model.fit(method="ML").solver == "iterative"
    assert choose_solver("direct", model.design, model.family) == "direct"


def test_refusals(data):
    model = MixedModel.from_formula("y ~ x + (1|s) + (1|i)", data)
    with pytest.raises(FitError, match="unknown solver"):
        model.fit(solver="cg")
    with pytest.raises(FitError, match="optimizer= applies to the direct solver"):
        model.fit(solver="iterative", optimizer="bobyqa")
    ar1 = data.assign(t=pd.Categorical(data.groupby("s").cumcount().clip(upper=5)))
    m2 = MixedModel.from_formula("y ~ x + ar1(0 + t|s)", ar1)
    with pytest.raises(FitError, match="ar1/cs/toep"):
        m2.fit(solver="iterative")
    gam = MixedModel.from_formula("yc ~ x + (1|s) + (1|i)", data.assign(yc=data.yc + 1.0), family="gamma")
    with pytest.raises(FitError, match="not the gamma family"):
        gam.fit(solver="iterative")
    binom = MixedModel.from_formula("yb ~ x + (1|s)", data, family="binomial")
    with pytest.raises(FitError, match="Laplace"):
        binom.fit(solver="iterative", nAGQ=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(solver="iterative")
    with pytest.raises(FitError, match="exact factorisation"):
        res.conf_int(method="profile")
    with pytest.raises(FitError, match="exact factorisation"):
        res.coef_table(ddf="satterthwaite")
    assert "Pr(>Chisq)" in res.anova().columns  # Wald by default for an iterative fit


def test_out_of_memory_in_the_direct_engine_says_what_to_do(data, monkeypatch):
    """The exact factor of a crossed design too large for memory: a FitError naming the
    iterative solver, not numpy's MemoryError."""
    import midas_glmm.model as model_module

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 56.1 GiB")

    monkeypatch.setattr(model_module, "fit_lmm", no_memory)
    model = MixedModel.from_formula("y ~ x + (1|s) + (1|i)", data)
    with pytest.raises(FitError, match="solver='iterative'"):
        model.fit(solver="direct")


def _dense(rows: CrossedRows, L):
    """Λ'Z'WZΛ + I densely, in the packed order."""
    blocks = []
    for j, t in enumerate(rows.terms):
        p = t.p
        Zt = sp.csr_matrix(
            (
                rows.Z[:, rows.zoff[j] : rows.zoff[j + 1]].ravel(),
                (np.repeat(np.arange(rows.n), p), (rows.codes[:, j][:, None] * p + np.arange(p)).ravel()),
            ),
            shape=(rows.n, t.q),
        )
        blocks.append(Zt @ sp.kron(sp.eye(t.nlevels), L[j, :p, :p]))
    ZL = sp.hstack(blocks).toarray()
    return ZL.T @ (rows.w[:, None] * ZL) + np.eye(ZL.shape[1])


def test_kernels_against_dense_algebra():
    d = crossed_rows(n=900, a=30, b=12, seed=3)
    model = MixedModel.from_formula("y ~ x + (1 + x|s) + (1|i)", d, weights="w")
    rows = CrossedRows(model.design.terms, model.design.X, model.design.y, model.design.weights)
    rng = np.random.default_rng(0)
    L = rows.lam_array([np.array([[0.8, 0.0], [0.3, 0.5]]), np.array([[0.7]])])
    A = _dense(rows, L)
    V = rng.normal(size=(rows.q, 3))
    got = crossprod_pass(rows.codes, rows.Z, rows.zoff, rows.qoff, rows.w, L, L, np.ones(2), np.ones(2), V)
    np.testing.assert_allclose(got, (A - np.eye(rows.q)) @ V, rtol=1e-10, atol=1e-10)
    # the Schur complement on the term eliminated second, and the block solve
    sys = ThetaSystem(rows, L, rows.call("grams", "prior"))
    qe = rows.qe
    S = A[qe:, qe:] - A[qe:, :qe] @ np.linalg.solve(A[:qe, :qe], A[:qe, qe:])
    VR = rng.normal(size=(rows.q - qe, 2))
    np.testing.assert_allclose(sys.S_matvec(VR), S @ VR, rtol=1e-9, atol=1e-9)
    out = schur_apply(
        rows.starts,
        rows.codes,
        rows.Z,
        rows.zoff,
        rows.qoff,
        rows.w,
        L,
        sys.Aee_inv,
        np.vstack([np.zeros((qe, 2)), VR]),
        rows.maxseg,
    )
    np.testing.assert_allclose(out[qe:] + VR, S @ VR, rtol=1e-9, atol=1e-9)
    B = rng.normal(size=(rows.q, 2))
    X, _, _ = sys.solve(B, None, 1e-12)
    np.testing.assert_allclose(A @ X, B, rtol=1e-8, atol=1e-8)
    assert abs(sys.logdet_ee - np.linalg.slogdet(A[:qe, :qe])[1]) < 1e-8


def test_dask_rows_give_the_in_memory_fit(data):
    """The iterative solver on a Dask DataFrame (a real LocalCluster, partitions shuffled by the
    eliminated term) equals its in-memory fit: the same probes, the passes summed over blocks."""
    dd = pytest.importorskip("dask.dataframe")  # the dask extra is part of the test extra
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for formula, family, kw in (
            ("y ~ x + (1|s) + (1|i)", None, {"method": "REML"}),
            ("yb ~ x + (1|s) + (1|i)", "binomial", {}),
        ):
            mem = MixedModel.from_formula(formula, data, family=family).fit(solver="iterative", **kw)
            frame = dd.from_pandas(data, npartitions=4)
            dsk = MixedModel.from_formula(formula, frame, family=family).fit(solver="iterative", **kw)
            assert dsk.solver == "iterative"
            np.testing.assert_allclose(dsk.theta, mem.theta, rtol=1e-6)
            np.testing.assert_allclose(dsk.params, mem.params, rtol=1e-7, atol=1e-7 * mem.bse.max())
            np.testing.assert_allclose(dsk.bse, mem.bse, rtol=1e-6)
            assert dsk.llf == pytest.approx(mem.llf, abs=1e-4)
    cluster.close()
