"""The estimation engines, from a design to estimates.

What is computed once from the data and what is updated per θ are kept apart:

* ``sparsity`` — the symbolic analysis of the factor of Λ'Z'WZΛ + I, once per model;
* ``factor`` — the numbers of that factor for one θ (compiled kernels, dense tail by LAPACK);
* ``lmm`` — the profiled REML/ML criterion and its optimisation; ``gradient`` its analytic gradient;
* ``lmmbatch`` — the same criterion for many responses at once (fit_many's lock-step Newton):
  compiled (``linalg.batchkernels``), or numpy's for one term of one or two columns;
* ``pirls`` with ``glmmrows`` — PIRLS, the Laplace approximation and adaptive Gauss–Hermite;
* ``optimize`` — bounded optimisers, convergence checks; ``controls`` — the user's fit controls;
* ``estimates`` — the record an engine returns.
"""

from __future__ import annotations

from .estimates import Estimates
from .lmm import fit_lmm
from .pirls import fit_glmm

__all__ = ["Estimates", "fit_glmm", "fit_lmm"]
