"""Parametric bootstrap intervals, as lme4's ``confint(method = "boot")`` (``bootMer``):
responses simulated from the fit, the model refitted to each with the fit's settings, and the
percentiles of the refitted parameters."""

from __future__ import annotations

import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from ..checks import check_count, check_jobs, check_level, refuse_dispersion_model, select_names
from ..design.reterms import ThetaMap
from ..engine.iterative import choose_solver
from ..errors import ConvergenceWarning, FitError
from ..linalg.threads import process_context
from .simulate import simulate

__all__ = ["bootstrap_ci"]

#: a Gaussian bootstrap whose fit_many batch needs the compiled batch kernels (several terms, or
#: a term of three or more columns) takes it once the refits one by one would take longer than
#: this (seconds, from the first refit's time), or when the kernels are loaded already: loading
#: them costs a process ~0.4 s, compiling them after an install 3-4 s
COMPILED_BATCH_FROM = 2.0

#: an SD below this × σ (1 for a GLMM) is zero for the bootstrap table: the correlations it
#: joins are undefined there (the optimizers end on the bound at 0 or within ~1e-11 of it)
ZERO_SD = 1e-7


def bootstrap_ci(
    res,
    n_boot: int = 200,
    seed=None,
    level: float = 0.95,
    progress: bool = False,
    n_jobs: int = 1,
    which=None,
) -> pd.DataFrame:
    """Parametric bootstrap percentile intervals (as lme4's ``confint(method = "boot")``).

    Responses are simulated from the fit (new random effects each time), the model is refitted
    with the settings of the original fit (``res.fit_options``: method, nAGQ, fast, optimizer),
    and the ``(1−level)/2`` and ``(1+level)/2`` quantiles of the refitted fixed effects and
    variance components (and sigma, √φ for Gamma) are reported. ``n_jobs > 1`` refits in
    parallel processes (-1: one per core); ``progress=True`` shows a progress bar when tqdm is
    installed. Refits that fail numerically are left out with a :class:`ConvergenceWarning` (as
    ``bootMer`` counts its failures); ``attrs["n_ok"]`` holds the number used. A refit whose SD is
    zero has no correlation with it (0/0): left out of that correlation's quantiles."""
    refuse_dispersion_model(res, "bootstrap intervals", "use method='wald' (disp_bse for the dispersion coefficients)")
    level = check_level(level)
    names = ThetaMap(res.design.terms).interval_names(list(res.params.index), res.family.has_dispersion, True)
    which = select_names(which, names, "bootstrap")
    n_boot = check_count(n_boot, "n_boot")
    n_jobs = check_jobs(n_jobs)
    ysim = simulate(res, n_boot, seed=seed)
    # not the results, nor the data the model was built from: only what a refit needs
    spec = (res.model.with_response(res.design.y, check=False), _refit_options(res))
    outcomes: list = []
    batch = _batched(res)
    if batch and not _batch_ready(res.model.design):  # the compiled batch where the refits would take longer
        start = time.perf_counter()
        outcomes.append(_boot_one(spec, ysim[:, 0]))
        batch = (n_boot - 1) * (time.perf_counter() - start) >= COMPILED_BATCH_FROM
    if batch:
        outcomes += _gaussian_batch(res, ysim[:, len(outcomes) :], n_jobs, progress)
    else:
        outcomes = _one_by_one(spec, ysim, outcomes, n_jobs, progress)
    return _table(outcomes, n_boot, names, which, level)


def _one_by_one(spec, ysim: np.ndarray, outcomes: list, n_jobs: int, progress: bool) -> list:
    """``outcomes`` and :func:`_boot_one`'s for the columns of ``ysim`` after them."""
    n_boot = ysim.shape[1]
    tasks = [ysim[:, k] for k in range(len(outcomes), n_boot)]
    if n_jobs > 1:
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=process_context()) as ex:
            found = _progress(ex.map(_boot_one, [spec] * len(tasks), tasks), len(tasks), progress)
            return outcomes + list(found)
    return outcomes + [_boot_one(spec, y) for y in _progress(tasks, len(tasks), progress)]


def _table(outcomes: list, n_boot: int, names: list, which: list, level: float) -> pd.DataFrame:
    """The percentile table of the refits' statistics (failures counted and left out)."""
    failures = [o for o in outcomes if isinstance(o, str)]
    if len(failures) == n_boot:
        raise FitError(f"every bootstrap refit failed; the first: {failures[0]}")
    if failures:
        warnings.warn(
            f"{len(failures)} of {n_boot} bootstrap refits failed and are left out (the first: {failures[0]})",
            ConvergenceWarning,
            stacklevel=3,
        )
    arr = np.array([o for o in outcomes if not isinstance(o, str)])
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # a correlation undefined in every refit (its SD always 0): NaN
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        lo, hi = np.nanquantile(arr, [alpha, 1 - alpha], axis=0)
    out = pd.DataFrame({"lower": lo, "upper": hi}, index=names).loc[which]
    out.attrs["n_ok"] = len(arr)
    return out


def _refit_options(res) -> dict:
    """The fit's settings for a refit one by one; a GLMM of the direct solver also starts at the
    fit's θ̂ (as lme4's ``refit``, which ``bootMer`` calls): the simulated responses' optima lie
    near it (grouseticks' refits 0.75 of their time, cbpp's 0.87, the same optima to 1e-8)."""
    opts = dict(res.fit_options)
    model = res.model
    if not model.family.is_lmm and model.design.source is None:
        nagq, fast = opts.get("nAGQ") or 1, bool(opts.get("fast"))
        if choose_solver(opts.get("solver"), model.design, model.family, nagq, fast) == "direct":
            opts["start"] = np.asarray(res.theta, dtype=float)
    return opts


def _batched(res) -> bool:
    """Whether the refits go through the model's ``fit_many``: a Gaussian model in memory fitted
    by the direct solver, whose simulated responses share every response-free block (the data
    pass of Z'[y₁ … y_B] is one product per batch, each θ found by fit()'s algorithm on the shared
    structure; sleepstudy's 200 refits 0.05 s against 0.5 s one by one)."""
    model, opts = res.model, res.fit_options
    if not model.family.is_lmm or model.design.source is not None or model.design.disp is not None:
        return False
    return choose_solver(opts.get("solver"), model.design, model.family) == "direct"


def _batch_ready(design) -> bool:
    """Whether fit_many's batch costs no kernel load: the design is one term of one or two
    columns (numpy's :class:`~midas_glmm.engine.lmmbatch.LevelBatch`, or below a few dozen
    levels the all-dense plan, which calls no batch kernel either: 3-40 levels checked in fresh
    processes), or the compiled batch kernels are loaded in this process."""
    if len(design.terms) == 1 and design.terms[0].p <= 2:
        return True
    return "midas_glmm.linalg.batchkernels" in sys.modules


def _gaussian_batch(res, ysim: np.ndarray, n_jobs: int, progress: bool) -> list:
    """:func:`_boot_one`'s outcomes for every column of ``ysim`` from one ``fit_many`` call with
    the fit's settings (method, optimizer, standardize)."""
    opts = res.fit_options
    kw = {k: opts[k] for k in ("optimizer", "standardize") if opts.get(k) is not None}
    with warnings.catch_warnings():  # the refits' cautions (singular samples) are not the fit's
        warnings.simplefilter("ignore")
        many = res.model.fit_many(ysim, method=opts.get("method"), n_jobs=n_jobs, progress=progress, **kw)
    tmap = ThetaMap(res.model.design.terms)
    out = []
    for rec in many.records:
        if rec["error"] is not None:
            out.append(rec["error"])
            continue
        out.append(_statistics(tmap, rec["theta"], rec["sigma"], rec["params"], rec["sigma"]))
    return out


def _boot_one(spec, y):
    """Refit (model, fit options) to the simulated response y: the statistics, in the order of
    the bootstrap table, or the reason the refit failed."""
    model, options = spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = model.with_response(y, check=False).fit(**options)
        except (np.linalg.LinAlgError, FloatingPointError, FitError) as exc:  # this sample's fit failed
            return f"{type(exc).__name__}: {exc}"
    tmap = ThetaMap(r.design.terms)
    sigma = r.sigma if r.family.has_dispersion else None
    return _statistics(tmap, r.theta, r.sigma if r.family.is_lmm else 1.0, r.params.to_numpy(), sigma)


def _statistics(tmap: ThetaMap, theta, scale: float, params: np.ndarray, sigma: float | None) -> np.ndarray:
    """A refit's row of the bootstrap table: the fixed effects, each term's natural values (SDs,
    correlations; ``scale`` σ for an LMM, 1 for a GLMM), and ``sigma`` where the family has one. A
    correlation is NaN where an SD it joins is zero (below :data:`ZERO_SD` × ``scale``; all the
    term's SDs for a structure's ρ): 0/0, as lme4's bootMer has it, and left out of its quantiles
    (the optimizer's resolution at the bound, exactly 0 or 1e-11, would otherwise pick it)."""
    theta = np.asarray(theta, dtype=float)
    parts = [np.asarray(params, dtype=float)]
    for t, sl in zip(tmap.terms, tmap.slices()):
        values, names = t.structure.natural(theta[sl], scale)
        values = np.array(values, dtype=float)
        zero = {n for n, v in zip(names, values) if n.startswith("sd") and not v > ZERO_SD * scale}
        n_sd = sum(n.startswith("sd") for n in names)
        for k, name in enumerate(names):
            if name.startswith("sd"):
                continue
            if name.startswith("cor_") and "." in name:  # an unstructured term's cor_r.c
                r, c = name[4:].split(".")
                undefined = f"sd_{r}" in zero or f"sd_{c}" in zero
            else:  # a structure's ρ or lag correlations
                undefined = n_sd > 0 and len(zero) == n_sd
            if undefined:
                values[k] = np.nan
        parts.append(values)
    parts.append([] if sigma is None else [sigma])
    return np.concatenate(parts)


def _progress(it, total, show):
    if not show:
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total)
