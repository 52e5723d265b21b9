"""Post-hoc inference: free functions of a fitted result, which the results class delegates to.

``ddf`` (denominator degrees of freedom, the one ``ddf`` parser), ``hypotheses`` (the
coefficient table, Wald/F/t tests of Lβ = c, ANOVA tables), ``compare`` (likelihood-ratio
tests), ``profile`` and ``bootstrap`` (intervals), ``simulate``, ``prediction`` (standard errors
of predictions), ``emmeans``, ``r2``, ``ranova``, ``quantile_residuals`` (simulated scaled residuals)
and ``plots``. They read the fit; none of them changes it.
"""

from __future__ import annotations

from . import plots
from .compare import anova, compare

__all__ = ["anova", "compare", "plots"]
