"""The codes that name a family's compiled row pass in :mod:`.rowkernels`, kept apart from the
kernels so that a family states its code without loading numba."""

from __future__ import annotations

__all__ = ["LOGIT", "LOG", "GIVEN", "ORD_LOGIT", "ORD_PROBIT", "ORD_CLOGLOG", "ORD_LOGLOG", "ORD_CAUCHIT"]

#: binomial with the logit link, Poisson with the log link; GIVEN: any family, its working weights
#: and response computed beforehand (:func:`~.rowkernels.working_system` sums the blocks only)
LOGIT, LOG, GIVEN = 0, 1, -1
#: the ordinal family's links
ORD_LOGIT, ORD_PROBIT, ORD_CLOGLOG, ORD_LOGLOG, ORD_CAUCHIT = 0, 1, 2, 3, 4
