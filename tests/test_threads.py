"""Fits in threads of one process: the compiled kernels release the GIL (nogil), so the fits'
kernels run at once; each fit must still get its own answer, whatever the others do meanwhile."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from midas_glmm import MixedModel


def _data(seed: int, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, g = rng.integers(0, 40, n), rng.integers(0, 25, n), rng.integers(0, 60, n)
    x = rng.normal(size=n)
    eta = 0.3 * x + rng.normal(0, 0.8, 40)[a] + rng.normal(0, 0.5, 25)[b] + rng.normal(0, 0.6, 60)[g] * x
    return pd.DataFrame(
        {
            "y": eta + rng.normal(size=n),
            "k": rng.binomial(1, 1 / (1 + np.exp(-eta))),
            "c": rng.poisson(np.exp(0.5 * eta)),
            "x": x,
            "a": a,
            "b": b,
            "g": g,
        }
    )


#: (formula, family): crossed terms through the compiled pass and the sparse factor's kernels,
#: a random slope through the level kernels, an LMM through the block-sparse kernels
MODELS = [
    ("k ~ x + (1|a) + (1|b) + (x|g)", "binomial"),
    ("c ~ x + (x|g)", "poisson"),
    ("y ~ x + (1|a) + (1|b) + (x|g)", None),
    ("c ~ x + (1|a) + (1|b)", "poisson"),
]


def _fit(job):
    formula, family, seed = job
    res = MixedModel.from_formula(formula, _data(seed), family=family).fit()
    return res.llf, np.asarray(res.params), np.asarray(res.bse), np.asarray(res.theta)


def test_fits_in_threads_equal_the_same_fits_in_turn():
    """Eight fits on four threads give, to the bit, what they give one after another. BLAS is held
    to one thread throughout (after the libraries are loaded with their defaults): its thread count
    is one setting of the process, which a fit lowers for its loop and restores after, so fits
    overlapping in threads can otherwise run some of each other's sums on other thread counts and
    differ in the last bits (benchmarks/RESULTS_THREADS.md)."""
    from threadpoolctl import threadpool_limits

    jobs = [(f, fam, seed) for seed in (1, 2) for f, fam in MODELS]
    _fit(jobs[0])
    with threadpool_limits(1):
        alone = [_fit(j) for j in jobs]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(_fit, jobs))
    for job, (llf0, p0, se0, th0), (llf, p, se, th) in zip(jobs, alone, together):
        assert llf == llf0, job
        assert np.array_equal(p, p0) and np.array_equal(se, se0) and np.array_equal(th, th0), job
    # and the models differ from each other: no fit took another's answer
    assert len({round(r[0], 6) for r in alone}) == len(jobs)


def test_blas_controller_finds_the_blas_when_asked_before_numpy_is_imported():
    """The controller is found once per process; asked before numpy had loaded its BLAS it found
    none and kept none, so every later fit ran its loop on the library's default thread count."""
    import subprocess
    import sys

    code = (
        "from midas_glmm.linalg.threads import blas_controller; c = blas_controller(); "
        "print(len(c.lib_controllers), sum(lib.num_threads >= 1 for lib in c.lib_controllers))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 1 and out[0] == out[1]


def test_worker_processes_are_not_forked_after_numbas_openmp_threads(monkeypatch):
    """A child forked after GNU OpenMP's threads ran is terminated by numba at its first parallel
    kernel (a BrokenProcessPool from bootstrap(n_jobs=2) of an iterative fit): once numba's
    OpenMP layer has started, "fork" becomes "forkserver"; the user's own start method otherwise."""
    import multiprocessing
    import sys
    import types

    from midas_glmm.linalg.threads import process_context

    default = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    layer = types.SimpleNamespace(_is_initialized=False, _threading_layer=None)
    monkeypatch.setitem(sys.modules, "numba.np.ufunc.parallel", layer)
    assert process_context().get_start_method() == default
    layer._is_initialized, layer._threading_layer = True, "workqueue"
    assert process_context().get_start_method() == default
    layer._threading_layer = "omp"
    assert process_context().get_start_method() == ("forkserver" if default == "fork" else default)


def test_bootstrap_of_an_iterative_fit_in_worker_processes():
    """The iterative solver's parallel kernels in the parent, then its refits in two worker
    processes: the serial table (the workers were forked into numba's termination before)."""
    import warnings

    from midas_glmm import datasets

    ss = datasets.load("sleepstudy")
    res = MixedModel.from_formula("Reaction ~ Days + (1|Subject)", ss).fit(solver="iterative")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = res.conf_int(method="bootstrap", n_boot=6, seed=2)
        parallel = res.conf_int(method="bootstrap", n_boot=6, seed=2, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
