"""``midas_glmm.plots``: the figures of a fitted model (their code is :mod:`midas_glmm.posthoc.plots`).

Needs matplotlib (``pip install midas_glmm[plot]``): :func:`caterpillar`, :func:`shrinkage`,
:func:`diagnostics`, :func:`quantile_residuals`.
"""

from __future__ import annotations

from .posthoc.plots import caterpillar, diagnostics, quantile_residuals, shrinkage

__all__ = ["caterpillar", "shrinkage", "diagnostics", "quantile_residuals"]
