"""The BLAS thread policy of a fit.

Per θ a fit runs many small dense operations (the tail of the factor, the fixed-effects block).
OpenBLAS's threads cost more than they gain on those — its workers spin between calls — and
when several fits run at once (a simulation study, bootstrap workers, a joblib loop, Dask
workers) threads in every process oversubscribe the cores. So the optimizer loop runs with one
BLAS thread unless the dense tail of the factor is large enough for threads to pay
(:data:`THREADED_TAIL` random effects; crossed factors with thousands of levels). The data pass
before it keeps the library's default (large products over the rows).

``MIDAS_GLMM_BLAS_THREADS`` overrides the choice (a number of threads).

Worker processes (fit_many's and the bootstrap's ``n_jobs``) start as :func:`process_context`
says: forked where the platform forks, unless numba's GNU OpenMP threads have run here.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

__all__ = ["THREADED_TAIL", "blas_threads", "fit_threads", "process_context"]

#: dense-tail size from which the per-θ factorisation uses every core
THREADED_TAIL = 2000


def blas_threads(dense_size: int) -> int | None:
    """BLAS threads for a fit whose largest dense block is ``dense_size`` square (None: default)."""
    env = os.environ.get("MIDAS_GLMM_BLAS_THREADS")
    if env:
        return max(1, int(env))
    return None if dense_size >= THREADED_TAIL else 1


@functools.cache
def blas_controller() -> ThreadpoolController:
    """The loaded BLAS libraries, found once per process (the search reads every loaded shared
    library and costs milliseconds: more than a small fit). numpy, which loads the BLAS every fit
    calls, is imported first: a search before it would find none, and keep finding none."""
    import numpy  # noqa: F401

    return ThreadpoolController().select(user_api="blas")


@contextmanager
def fit_threads(dense_size: int):
    """Run the enclosed fit with :func:`blas_threads` BLAS threads, restoring the setting after."""
    n = blas_threads(dense_size)
    if n is None:
        yield
        return
    blas = blas_controller()
    if all(lib.num_threads == n for lib in blas.lib_controllers):
        yield
        return
    with blas.limit(limits=n):
        yield


def process_context():
    """The multiprocessing context of worker processes: the start method the user set, else the
    platform's default, but "forkserver" for "fork" once numba's OpenMP threading layer has run
    in this process (the iterative solver's parallel kernels): GNU OpenMP's threads do not
    survive a fork, and numba terminates a forked child at its first parallel kernel."""
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if method == "fork" and _openmp_started():
        method = "forkserver"
    return multiprocessing.get_context(method)


def _openmp_started() -> bool:
    """Whether numba's threading layer has started here, and is OpenMP's."""
    layer = sys.modules.get("numba.np.ufunc.parallel")  # not imported: no parallel kernel has run
    return bool(getattr(layer, "_is_initialized", False)) and getattr(layer, "_threading_layer", None) == "omp"
