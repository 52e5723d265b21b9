"""fit_many's runs: a chunk of responses fitted in one process, and the chunks spread over
``n_jobs`` processes (forked where the platform forks: the model and the responses are
inherited, not pickled) or a dask.distributed cluster."""

from __future__ import annotations

import copy
import math
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..design.columns import used_columns
from ..engine.controls import FitControl, check_maxiter, check_start, fit_control
from ..engine.iterative import choose_solver
from ..engine.lmm import optimize_lmm
from ..errors import DataError, FitError, MidasError
from ..linalg.threads import blas_controller, fit_threads, process_context
from ..posthoc.ddf import WALD
from .gaussian import GaussianShared, full_gaussian, shared_for
from .records import Settings, failed, record_from_estimates, record_from_result
from .responses import check_layout, subset_model, theta_in_model_order

__all__ = ["run_chunk", "run_processes", "run_dask", "Progress", "BATCH"]


#: responses per batch of the shared data pass (n × this many doubles at a time)
BATCH = 256


def batched(model, settings: Settings) -> bool:
    """Whether a Gaussian model's responses share its blocks (the batch of
    :class:`~.gaussian.GaussianShared`): not for a dispersion model (the blocks serve one residual
    variance), nor where fit()'s solver="auto" takes the iterative solver (the exact factor's dense
    tail too large to form): those responses are fitted one by one, as fit() fits them."""
    if not model.family.is_lmm or not settings.fit_kwargs.get("standardize", True) or model.design.disp is not None:
        return False
    return choose_solver("auto", model.design, model.family) == "direct"


def run_chunk(model, settings: Settings, names: list[str], values: np.ndarray) -> list[dict]:
    """Fit the responses ``values[:, j]`` (named ``names``) to ``model``; a record per response."""
    out: list[None | dict] = [None] * len(names)
    missing = ~np.isfinite(values).all(axis=0)  # one pass; the few such columns are looked at below
    for j in np.flatnonzero(missing):
        if np.isinf(values[:, j]).any():  # a single fit refuses these too
            i = int(np.argmax(np.isinf(values[:, j])))
            exc = DataError(f"response '{names[j]}' has an infinite value (row {i} of the model's rows)")
            out[j] = failed(names[j], exc, int(np.isfinite(values[:, j]).sum()))
    fast = batched(model, settings)
    if fast and (~missing).any():
        REML = (settings.method or "REML").upper() == "REML"
        shared = shared_for(model, REML)
        cols = np.flatnonzero(~missing)
        # the lock-step Newton unless the user asked for the single fit's optimizer, start or limit
        # (its finite-difference stencil is laid out for a λ linear in θ: a structured term's
        # responses take the single fit's optimizer on the shared blocks)
        newton = shared.crit.tmap.linear and not any(
            settings.fit_kwargs.get(k) is not None for k in ("optimizer", "start", "maxiter")
        )
        with fit_threads(shared.crit.plan.qt):
            for a in range(0, len(cols), BATCH):
                batch = cols[a : a + BATCH]
                contiguous = batch[-1] - batch[0] + 1 == len(batch)  # a view, read by row blocks
                batch_values = values[:, batch[0] : batch[-1] + 1] if contiguous else values[:, batch]
                blocks = shared.response_blocks(batch_values)
                recs = shared.newton(blocks) if newton else [None] * len(batch)
                for i, (j, rec) in enumerate(zip(batch, recs)):
                    if rec is not None:
                        rec["name"] = names[j]
                        if settings.ddf != WALD:
                            crit = shared.criteria(None, blocks, [i])[0]
                            full = full_gaussian(model, shared, rec, values[:, j], crit, None)
                            add_df(rec, full, settings.ddf)
                        out[j] = rec
                        continue
                    crit = shared.criteria(None, blocks, [i])[0]
                    out[j] = fit_gaussian(model, shared, crit, names[j], settings, values[:, j])
    for j in range(len(names)):
        if out[j] is None:
            out[j] = fit_one(model, settings, names[j], values[:, j])
    return out


def fit_gaussian(model, shared: GaussianShared, crit, name: str, settings: Settings, y: np.ndarray) -> dict:
    stub = SimpleNamespace(response_name=name)
    kw = settings.fit_kwargs
    control = FitControl(start=check_start(kw.get("start"), model.design), maxiter=check_maxiter(kw.get("maxiter")))
    with warnings.catch_warnings(record=True) as caught:  # summarised once by the collection
        warnings.simplefilter("always")
        try:
            with fit_control(control):
                est = optimize_lmm(stub, crit, shared.S, shared.REML, kw.get("optimizer"))
            if control.hit_limit:  # as fit() says it
                est.convergence.append(f"the optimizer stopped at maxiter = {control.maxiter} evaluations")
        except (MidasError, np.linalg.LinAlgError, FloatingPointError) as exc:
            return failed(name, exc, model.design.nobs)
    rec = record_from_estimates(name, est, model.design.nobs, [str(w.message) for w in caught])
    if settings.ddf != WALD:
        add_df(rec, full_gaussian(model, shared, rec, y, crit, kw.get("optimizer")), settings.ddf)
    return rec


def add_df(rec: dict, res, ddf: str) -> None:
    ct = res.coef_table(ddf=ddf)
    rec["df"] = ct["df"].to_numpy(dtype=float)
    rec["pvalues"] = ct["p_value"].to_numpy(dtype=float)


def fit_one(model, settings: Settings, name: str, y: np.ndarray) -> dict:
    """One response by a fit of its own: on the shared design when complete, else on its rows."""
    observed = ~np.isnan(y)
    with warnings.catch_warnings(record=True) as caught:  # summarised once by the collection
        warnings.simplefilter("always")
        try:
            m = model.with_response(y, name) if observed.all() else subset_model(model, y)
            res = m.fit(method=settings.method, **settings.fit_kwargs)
            check_layout(model, res)
            rec = record_from_result(name, res, [str(w.message) for w in caught])
            rec["theta"] = theta_in_model_order(model, res)
            if settings.ddf != WALD:
                add_df(rec, res, settings.ddf)
        except (MidasError, np.linalg.LinAlgError, FloatingPointError) as exc:
            return failed(name, exc, int(observed.sum()))
    return rec


def _chunks(K: int, parts: int) -> list[slice]:
    size = max(1, math.ceil(K / parts))
    return [slice(a, min(K, a + size)) for a in range(0, K, size)]


def _portable(model):
    """The model as sent to a worker: its data cut to the columns the formula uses."""
    src = model.built_from
    out = copy.copy(model)
    if src is not None and isinstance(src.get("data"), pd.DataFrame):
        used = used_columns(model.design.parsed) | (model.design.zi.variables() if model.design.zi else set())
        cols = [c for c in src["data"].columns if c in used]
        for v in (src.get("weights"), src.get("offset")):
            if isinstance(v, str) and v in src["data"].columns and v not in cols:
                cols.append(v)
        out.built_from = dict(src, data=src["data"][cols])
    return out


_WORKER_MODEL = None


def _init_worker(model) -> None:
    global _WORKER_MODEL, _WORKER_LIMIT
    _WORKER_MODEL = model
    # one BLAS thread per process, no oversubscription (a forked worker has the parent's list of
    # BLAS libraries and need not search the loaded libraries again)
    _WORKER_LIMIT = blas_controller().limit(limits=1)  # noqa: F841


def _worker_chunk(settings, names, values):
    return run_chunk(_WORKER_MODEL, settings, names, values)


#: (model, responses) a forked worker inherits from its parent instead of receiving them pickled
_FORK_STATE = None

_FORK_LOCK = threading.Lock()


def _init_forked_worker() -> None:
    _init_worker(_FORK_STATE[0])


def _forked_chunk(settings, names, cols: slice):
    return run_chunk(_WORKER_MODEL, settings, names, _FORK_STATE[1][:, cols])


def run_processes(workers: int, model, settings, names, values, bar) -> list[dict]:
    """The responses in chunks over ``workers`` processes. Where processes start by fork (Linux),
    the model, its shared Gaussian blocks (built here first) and the responses are inherited,
    not pickled: only names and column ranges travel; elsewhere the model is sent once per
    process and each chunk's responses with it."""
    global _FORK_STATE
    parts = _chunks(len(names), workers * 4)
    # the start method set by the user, else the platform's default (without fixing it)
    ctx = process_context()
    fork = ctx.get_start_method() == "fork"
    if not fork:
        pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=(_portable(model),))
        with pool:
            return _collect(parts, [pool.submit(_worker_chunk, settings, names[s], values[:, s]) for s in parts], bar)
    if batched(model, settings):
        shared_for(model, (settings.method or "REML").upper() == "REML")
    blas_controller()  # found here once, inherited by the workers
    with _FORK_LOCK:  # one fit_many's state at a time for the processes it forks
        _FORK_STATE = (model, values)
        try:
            with ProcessPoolExecutor(workers, ctx, initializer=_init_forked_worker) as pool:
                futures = [pool.submit(_forked_chunk, settings, names[s], s) for s in parts]
                return _collect(parts, futures, bar)
        finally:
            _FORK_STATE = None


def _collect(parts, futures, bar) -> list[dict]:
    out = []
    for s, fut in zip(parts, futures):
        out += fut.result()
        bar.update(s.stop - s.start)
    return out


_DASK_LOCK = threading.Lock()


def _dask_chunk(model, settings, names, values):
    """A chunk on a dask worker. Chunks run one at a time per worker process: the per-response
    warning capture (warnings.catch_warnings) and the BLAS thread limit are process-wide, so
    threads of one worker would mix them up; parallelism comes from the worker processes."""
    with _DASK_LOCK, threadpool_limits(1):
        return run_chunk(model, settings, names, values)


def run_dask(client, model, settings, names, values, bar) -> list[dict]:
    try:
        nworkers = max(1, len(client.scheduler_info()["workers"]))
    except (AttributeError, KeyError, TypeError):
        raise FitError("client= must be a dask.distributed Client") from None
    shared = client.scatter(_portable(model), broadcast=True)  # once per worker
    parts = _chunks(len(names), nworkers * 4)
    futures = [client.submit(_dask_chunk, shared, settings, names[s], values[:, s], pure=False) for s in parts]
    out = []
    for s, fut in zip(parts, futures):
        out += fut.result()
        bar.update(s.stop - s.start)
    return out


class Progress:
    """tqdm's bar when installed, else a line on stderr at each tenth; nothing when off."""

    def __init__(self, total: int, on: bool):
        self.total, self.on, self.done, self.bar, self.shown = total, on, 0, None, -1
        if on:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="fit_many", unit="response")
            except ImportError:
                self.bar = None

    def update(self, k: int) -> None:
        if not self.on:
            return
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            return
        tenth = 10 * self.done // max(self.total, 1)
        if tenth != self.shown:
            self.shown = tenth
            print(f"fit_many: {self.done}/{self.total} responses", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
