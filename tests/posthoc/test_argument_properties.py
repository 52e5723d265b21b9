"""Property-based checks of the post-hoc and workflow arguments: whatever a user passes for
alpha, level, ddf, a contrast matrix and its right-hand side, emmeans' specs and by, a number of
simulations or a new response, a call either answers (finite numbers where the answer is
defined) or raises one of the library's errors — never a raw numpy, scipy or pandas exception.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midas_glmm import MixedModel, datasets
from midas_glmm.errors import MidasError

PROPERTY = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)


@pytest.fixture(scope="module")
def fits():
    """An LMM with a factor and a covariate, and a binomial GLMM."""
    cbpp = datasets.load("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lmm = MixedModel.from_formula("incidence ~ C(period) + size + (1 | herd)", cbpp).fit()
        glmm = MixedModel.from_formula(
            "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", cbpp, family="binomial"
        ).fit()
    return {"lmm": lmm, "glmm": glmm}


def answer_or_library_error(call):
    """The call's value, or None when it raised one of the library's errors (anything else fails)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except MidasError:
        return None


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10**13),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.floats(-2, 2), max_size=3),
)
ddfs = st.one_of(
    st.sampled_from(["normal", "asymptotic", "satterthwaite", "kenward-roger", "KR", "Kenward_Roger", "lme4", ""]),
    st.text(max_size=6),
    st.integers(),
    st.none(),
)


@PROPERTY
@given(kind=st.sampled_from(["lmm", "glmm"]), alpha=numbers, level=numbers)
def test_alpha_and_level(fits, kind, alpha, level):
    res = fits[kind]
    frame = answer_or_library_error(lambda: res.get_prediction().summary_frame(alpha=alpha))
    if frame is not None:
        assert (frame["mean_ci_lower"] <= frame["mean_ci_upper"]).all()
        assert np.isfinite(frame["mean_ci_lower"]).all()
    ci = answer_or_library_error(lambda: res.conf_int(alpha=alpha))
    if ci is not None:
        assert (ci["lower"] < ci["upper"]).all()
    table = answer_or_library_error(lambda: res.coef_table(level=level))
    if table is not None:
        assert (table["ci_low"] < table["ci_high"]).all()
    answer_or_library_error(lambda: res.summary(alpha=alpha))
    answer_or_library_error(lambda: res.emmeans("period", level=level))


@PROPERTY
@given(kind=st.sampled_from(["lmm", "glmm"]), ddf=ddfs, type_=st.one_of(st.integers(0, 4), st.text(max_size=3)))
def test_ddf_and_anova_type(fits, kind, ddf, type_):
    res = fits[kind]
    for call in (
        lambda: res.anova(type=type_, ddf=ddf),
        lambda: res.coef_table(ddf=ddf),
        lambda: res.emmeans("period", ddf=ddf),
        lambda: res.contrasts("period", ddf=ddf),
    ):
        out = answer_or_library_error(call)
        if out is not None:
            values = out.select_dtypes("number")
            df = values.pop("df") if "df" in values else values.pop("DenDF") if "DenDF" in values else None
            assert np.isfinite(values.to_numpy()).all()
            assert df is None or (df > 0).all()  # inf for Wald tests


@PROPERTY
@given(
    kind=st.sampled_from(["lmm", "glmm"]),
    rows=st.integers(0, 4),
    cols=st.integers(0, 7),
    fill=st.floats(allow_nan=True, allow_infinity=True),
    rhs=numbers,
    labelled=st.booleans(),
)
def test_contrast_matrices(fits, kind, rows, cols, fill, rhs, labelled):
    res = fits[kind]
    L = np.full((rows, cols), fill)
    if labelled and cols <= len(res.params):
        L = pd.DataFrame(L, columns=list(res.params.index[::-1])[:cols])
    for call in (lambda: res.wald_test(L, rhs=rhs), lambda: res.t_test(L, rhs=rhs)):
        out = answer_or_library_error(call)
        if out is not None:
            values = pd.DataFrame(out).T if isinstance(out, pd.Series) else out
            df = values.pop("df") if "df" in values else values.pop("DenDF") if "DenDF" in values else None
            assert np.isfinite(values.to_numpy(dtype=float)).all()
            assert df is None or (df > 0).all()  # inf for Wald tests


@PROPERTY
@given(
    specs=st.one_of(st.sampled_from(["period", "herd", "size", "nope"]), st.lists(st.text(max_size=3), max_size=2)),
    by=st.one_of(st.none(), st.sampled_from(["period", "herd", "size"]), st.integers()),
    method=st.sampled_from(["pairwise", "trt.vs.ctrl", "poly", "consec"]),
    adjust=st.one_of(st.none(), st.sampled_from(["tukey", "sidak", "holm", "bonferroni", "none", "fdr"])),
)
def test_emmeans_arguments(fits, specs, by, method, adjust):
    res = fits["lmm"]
    answer_or_library_error(lambda: res.emmeans(specs, by=by))
    answer_or_library_error(lambda: res.contrasts(specs, method=method, adjust=adjust, by=by))


@PROPERTY
@given(
    n=st.one_of(st.integers(-2, 10**13), st.floats(), st.text(max_size=2)),
    seed=st.one_of(st.none(), st.integers(-5, 2**40), st.text(max_size=2), st.floats()),
)
def test_simulation_counts_and_seeds(fits, n, seed):
    res = fits["glmm"]
    sims = answer_or_library_error(lambda: res.simulate(n=n, seed=seed) if isinstance(n, int) and n < 50 else None)
    if sims is not None:
        assert sims.shape == (res.nobs, n)
    answer_or_library_error(
        lambda: res.simulate_residuals(n=n, seed=seed) if not isinstance(n, int) or n > 10**6 else None
    )


@PROPERTY
@given(
    values=st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=60),
        st.integers(0, 3).map(lambda k: pd.Series(np.arange(56.0) + k, index=np.arange(56) + k)),
        st.text(max_size=3),
    )
)
def test_new_responses(fits, values):
    res = fits["lmm"]
    answer_or_library_error(lambda: res.refit(values))
    answer_or_library_error(lambda: res.model.fit_many(values))
