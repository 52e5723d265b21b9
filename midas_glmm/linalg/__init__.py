"""Numerical building blocks that know nothing of models: compiled block-sparse Cholesky kernels
(``kernels``), compiled per-row passes of a GLMM (``rowkernels``), fit_many's compiled many-response criterion
and data passes (``batchkernels``), the factor of models of random intercepts eliminated term by
term in numpy (``stages``), fill-reducing orderings of
the random effects (``orderings``), the Gram matrix A'WA of a tall, narrow array (``gram``) and the
BLAS thread policy (``threads``)."""
