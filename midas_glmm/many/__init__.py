"""Many responses, one design: :meth:`MixedModel.fit_many`.

Fitting the same model to thousands of responses (genes, voxels, taxa, metrics) repeats most
of a fit's work for nothing: the formula, the design, the grouping, the symbolic analysis of the
factor and the blocks Z'WZ, Z'WX, X'WX are the same for every response. Only the response's
own blocks change — Z'Wy, X'Wy and y'Wy — and for a Gaussian model they are computed here for a
whole batch of responses at once (one sparse product Z'W[y₁ … y_K] and one BLAS product), after
which each response's θ is optimised on the shared structure by the same algorithm as ``fit()``
(:func:`~midas_glmm.engine.lmm.optimize_lmm`): each answer is the single fit's up to rounding (the batched
products differ from a single fit's in the last bits; log-likelihoods agree to ~1e-10).

A response with missing values uses its own rows: its model is built again from the data on
those rows (lme4's na.omit for that response only). Other families are fitted response by
response on the shared design (:meth:`MixedModel.with_response`). A response that fails does not
stop the others: its row holds NaN and ``errors`` says why.

``n_jobs`` processes (each with one BLAS thread) or a dask.distributed ``Client`` split the
responses into chunks; the model is sent once per worker.
"""

from __future__ import annotations

from ..checks import check_jobs
from ..engine.controls import check_maxiter, check_start
from ..errors import FitError
from ..posthoc.ddf import SATTERTHWAITE, WALD, parse_ddf
from .records import Settings
from .responses import response_matrix
from .results import ManyResults
from .runners import BATCH, Progress, run_chunk, run_dask, run_processes

__all__ = ["fit_many", "ManyResults"]


# ----------------------------------------------------------------------------- drivers
def fit_many(
    model,
    Y,
    method: str | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    ddf: str = "normal",
    client=None,
    **fit_kwargs,
) -> ManyResults:
    """See :meth:`MixedModel.fit_many`."""
    names, values = response_matrix(model, Y)
    ddf = parse_ddf(ddf, allowed=(WALD, SATTERTHWAITE), where="for fit_many")
    if ddf == SATTERTHWAITE and not model.family.is_lmm:
        raise FitError("Satterthwaite degrees of freedom are for Gaussian models; a GLMM's tests are Wald z tests")
    workers = check_jobs(n_jobs)
    if model.design.source is not None:
        raise FitError("fit_many needs the model's rows in memory (a pandas DataFrame), not Dask data")
    allowed = {"optimizer", "start", "maxiter", "standardize"} | (set() if model.family.is_lmm else {"nAGQ", "fast"})
    unknown = sorted(set(fit_kwargs) - allowed)
    if unknown:
        raise FitError(
            f"fit_many does not take {', '.join(unknown)} for this model; it takes {', '.join(sorted(allowed))}"
        )
    check_start(fit_kwargs.get("start"), model.design)  # once, not once per response
    check_maxiter(fit_kwargs.get("maxiter"))
    if model.family.is_lmm and method is not None and str(method).upper() not in ("REML", "ML"):
        raise FitError(f"unknown method '{method}' for a Gaussian model; use 'REML' or 'ML'")
    settings = Settings(method, dict(fit_kwargs), ddf)
    K = len(names)
    bar = Progress(K, progress)
    if client is not None:
        records = run_dask(client, model, settings, names, values, bar)
    else:
        if workers == 1 or K < 2:
            records = []
            # progress in steps of ~5%, but a Gaussian batch of at most BATCH responses at once
            step = BATCH if model.family.is_lmm else max(1, min(BATCH, K // 20 or 1))
            for a in range(0, K, step):
                records += run_chunk(model, settings, names[a : a + step], values[:, a : a + step])
                bar.update(min(step, K - a))
        else:
            records = run_processes(workers, model, settings, names, values, bar)
    bar.close()
    res = ManyResults(model, settings, names, records, Y)
    res.report_warnings()
    return res
