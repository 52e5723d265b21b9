"""Numerical building blocks that know nothing of models: compiled block-sparse Cholesky kernels
(``kernels``), compiled per-row passes of a GLMM (``rowkernels``), fit_many's compiled many-response criterion
and data passes (``batchkernels``), fill-reducing orderings of
the random effects (``orderings``) and the BLAS thread policy (``threads``)."""
