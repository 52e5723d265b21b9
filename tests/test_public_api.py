"""What ``import midas_glmm`` offers: every name of ``__all__`` is there and stays what it is,
whatever a user calls first (the ANOVA table used to rebind ``midas_glmm.anova`` to a module)."""

from __future__ import annotations

import types
import warnings

import pytest

import midas_glmm
from midas_glmm import MixedModel, datasets


def test_every_public_name_is_importable():
    for name in midas_glmm.__all__:
        assert getattr(midas_glmm, name) is not None, name
    assert isinstance(midas_glmm.plots, types.ModuleType) and callable(midas_glmm.plots.caterpillar)
    from midas_glmm.plots import caterpillar, diagnostics, quantile_residuals, shrinkage  # the module's path too

    assert all(callable(f) for f in (caterpillar, diagnostics, quantile_residuals, shrinkage))
    assert issubclass(midas_glmm.MidasError, ValueError)


@pytest.fixture(scope="module")
def two_fits():
    sleep = datasets.load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = MixedModel.from_formula("Reaction ~ 1 + (Days | Subject)", sleep).fit(method="ML")
        large = MixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(method="ML")
    return small, large


def test_compare_still_works_after_the_post_hoc_tables(two_fits):
    """fit, look at the ANOVA table (and the other post-hoc calls), then compare two models:
    midas_glmm.anova is the comparison function throughout."""
    small, large = two_fits
    before = midas_glmm.anova(small, large)
    large.anova()
    large.drop1()
    large.t_test([[0.0, 1.0]])
    large.summary(anova=True)
    assert callable(midas_glmm.anova) and midas_glmm.anova is midas_glmm.compare
    after = midas_glmm.anova(small, large)
    assert after["Chisq"].iloc[1] == pytest.approx(before["Chisq"].iloc[1], rel=1e-12)
    assert after["Chisq"].iloc[1] > 20  # Days matters in sleepstudy (lme4: Chisq 23.5 on 1 df)
