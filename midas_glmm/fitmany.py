"""Many responses, one design: :meth:`MixedModel.fit_many`.

Fitting the same model to thousands of responses (genes, voxels, taxa, metrics) repeats most
of a fit's work for nothing: the formula, the design, the grouping, the symbolic analysis of the
factor and the blocks Z'WZ, Z'WX, X'WX are the same for every response. Only the response's
own blocks change — Z'Wy, X'Wy and y'Wy — and for a Gaussian model they are computed here for a
whole batch of responses at once (one sparse product Z'W[y₁ … y_K] and one BLAS product), after
which each response's θ is optimised on the shared structure by the same algorithm as ``fit()``
(:func:`lmm._optimize_lmm`): each answer is the single fit's up to rounding (the batched
products differ from a single fit's in the last bits; log-likelihoods agree to ~1e-10).

A response with missing values uses its own rows: its model is built again from the data on
those rows (lme4's na.omit for that response only). Other families are fitted response by
response on the shared design (:meth:`MixedModel.with_response`). A response that fails does not
stop the others: its row holds NaN and ``errors`` says why.

``n_jobs`` processes (each with one BLAS thread) or a dask.distributed ``Client`` split the
responses into chunks; the model is sent once per worker.
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ConvergenceWarning, DataError, FitError, MidasError, SingularFitWarning
from .optimize import is_singular

__all__ = ["fit_many", "ManyResults"]

#: the column a response with missing values gets in its own model's data
_RESPONSE_COLUMN = "(fit_many response)"
#: responses per batch of the shared data pass (n × this many doubles at a time)
BATCH = 256


# ----------------------------------------------------------------------------- the responses
def response_matrix(model, Y) -> tuple[list[str], np.ndarray]:
    """(names, values): the responses as an (n_model_rows × K) float array, NaN where missing,
    aligned to the rows the model uses."""
    design = model.design
    nobs = design.nobs
    if isinstance(Y, pd.Series):
        Y = Y.to_frame(name=Y.name if Y.name is not None else "y")
    if isinstance(Y, pd.DataFrame):
        names = [str(c) for c in Y.columns]
        rows = design.row_index
        if rows is None and len(Y) != nobs:
            raise DataError(f"Y has {len(Y)} rows but the model uses {nobs}; give one row per row used")
        if rows is not None and not Y.index.equals(rows):
            if not Y.index.is_unique or not rows.isin(Y.index).all():
                raise DataError(
                    "Y's index does not hold every row the model uses: give Y the index of the model's data "
                    f"(the model uses {nobs} rows), or pass a 2-D array with one row per row used"
                )
            Y = Y.loc[rows]
        for c in Y.columns:
            if not (pd.api.types.is_numeric_dtype(Y[c]) or pd.api.types.is_bool_dtype(Y[c])):
                raise DataError(f"response column '{c}' is not numeric (dtype {Y[c].dtype}); fit_many needs numbers")
        values = Y.to_numpy(dtype=float, na_value=np.nan)
    else:
        try:
            values = np.asarray(Y, dtype=float)
        except (TypeError, ValueError):
            raise DataError("Y must be a DataFrame or a 2-D array of numbers, one column per response") from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise DataError(f"Y must be 2-D (rows × responses), not {values.ndim}-D")
        names = [f"y{j}" for j in range(values.shape[1])]
        if values.shape[0] != nobs:
            positions = _positions_in_data(model)
            if positions is None or values.shape[0] != len(model.built_from["data"]):
                raise DataError(
                    f"Y has {values.shape[0]} rows but the model uses {nobs} ({design.n_dropped} rows of the data "
                    "were dropped for missing values): give one row per row used, or a DataFrame with the data's index"
                )
            values = values[positions]
    if len(set(names)) != len(names):
        dup = pd.Index(names)[pd.Index(names).duplicated()][0]
        raise DataError(f"response name '{dup}' appears twice in Y; responses need distinct names")
    if values.shape[1] == 0:
        raise DataError("Y has no responses (no columns)")
    return names, np.ascontiguousarray(values)


def _positions_in_data(model) -> np.ndarray | None:
    """Positions of the model's rows in the data it was built from (None if unknown)."""
    src = model.built_from
    if src is None or not isinstance(src.get("data"), pd.DataFrame) or not src["data"].index.is_unique:
        return None
    return src["data"].index.get_indexer(model.design.row_index)


# ----------------------------------------------------------------------------- shared Gaussian work
class _GaussianShared:
    """What every response of a Gaussian model shares: the criterion's plan and Z'WZ, X'WZ,
    X'WX blocks, the standardised X and Z' per term; :meth:`criteria` adds a batch's own blocks."""

    def __init__(self, model, REML: bool):
        from .design import standardize
        from .lmm import lmm_criterion

        d = model.design
        self.REML = REML
        self.crit, self.S = lmm_criterion(d, REML)
        X = d.X
        self.p = X.shape[1]
        self.shift, self.scale, _ = standardize(X, list(d.fixed_names), d.gram)
        self.Xs = np.ascontiguousarray((X - self.shift) / self.scale)
        self.w = d.weights if d.has_prior_weights else None
        self.X = X
        self.Xc = np.ascontiguousarray(X, dtype=float)  # for the compiled data pass
        self.G, self.Xsum = (X.T @ X if d.gram is None else d.gram), X.sum(axis=0)  # X'X, X'1
        self.nobs = d.nobs
        # Z by rows: row r's non-zeros zval[r] sit in the columns zidx[r] (node order), one per
        # column of each term
        n = X.shape[0]
        idx, val, off = [], [], 0
        for t in d.terms:
            codes = np.asarray(t.codes, dtype=np.int64)
            for a in range(t.p):
                idx.append(off + codes * t.p + a)
                val.append(np.asarray(t.Zcols[:, a], dtype=float))
            off += t.nlevels * t.p
        self.q = off
        self.zidx = np.ascontiguousarray(np.column_stack(idx)) if idx else np.zeros((n, 0), np.int64)
        self.zval = np.ascontiguousarray(np.column_stack(val)) if val else np.zeros((n, 0))
        self.off = np.ascontiguousarray(d.offset, dtype=float)  # zeros without an offset
        self.w_rows = np.asarray(self.w, dtype=float) if self.w is not None else np.ones(n)

    def response_blocks(self, values: np.ndarray) -> SimpleNamespace:
        """A batch's own blocks (complete responses, n × K), as a single fit's data pass makes
        them: b (p × K, the rough OLS fit taken out), Z'Wr (K × q), X'Wr (K × p), r'Wr and y'Wy.

        Two compiled passes over the rows (:func:`~midas_glmm.lmmbatch.ols_sums` for b, then
        :func:`~midas_glmm.lmmbatch.residual_sums`), each sum taken row by row: a response's
        numbers do not depend on the other responses of its batch, so its fit is the same
        whichever batch or process it is in."""
        from .lmm import ols_from_sums
        from .lmmbatch import ols_sums, residual_sums

        K = values.shape[1]
        Y = values if values.dtype == np.float64 else values.astype(float)
        Xty, sy = np.zeros((self.p, K)), np.zeros(K)
        ols_sums(Y, self.off, self.Xc, Xty, sy)
        B = ols_from_sums(self.G, self.Xsum, self.X.shape[0], Xty, sy, self.shift, self.scale)
        zy, xy = np.zeros((self.q, K)), np.zeros((self.p, K))
        rr, yss = np.zeros(K), np.zeros(K)
        residual_sums(Y, self.off, self.Xs, np.ascontiguousarray(B), self.w_rows, self.zidx, self.zval, zy, xy, rr, yss)
        return SimpleNamespace(B=B, zy=np.ascontiguousarray(zy.T), xy=np.ascontiguousarray(xy.T), rr=rr, yss=yss)

    def criteria(self, values: np.ndarray, blocks: SimpleNamespace | None = None, which=None):
        """One criterion per column of ``values`` (complete responses, n × K), or per column
        ``which`` of the batch whose ``blocks`` are given."""
        from .blocks import CrossProducts

        blocks = self.response_blocks(values) if blocks is None else blocks
        base = self.crit.cp
        out = []
        off = np.concatenate([[0], np.cumsum([xz.shape[1] for xz in base.XytZ])])
        for k in range(len(blocks.rr)) if which is None else which:
            XytZ = [np.vstack([xz[:-1], blocks.zy[k, a:b]]) for xz, a, b in zip(base.XytZ, off[:-1], off[1:])]
            XytXy = base.XytXy.copy()
            XytXy[:-1, -1] = XytXy[-1, :-1] = blocks.xy[k]
            XytXy[-1, -1] = blocks.rr[k]
            cp = CrossProducts(base.ZtZ, base.ZjtZi, XytZ, XytXy, base.n)
            out.append(self.crit.for_response(cp, blocks.B[:, k].copy(), blocks.yss[k]))
        return out

    def newton(self, blocks: SimpleNamespace) -> list[dict | None]:
        """The batch's fits by lock-step Newton (:mod:`~midas_glmm.lmmbatch`): per response the
        estimates :func:`~midas_glmm.lmm.lmm_estimates` gives at θ̂ (computed here for the whole
        batch from the Schur factors at θ̂), or None for a response left to the single-fit
        optimizer (not converged by :func:`~midas_glmm.lmmbatch.newton_many`, or a residual
        variance or residual sum of squares at zero, which the single fit reports)."""
        from .lmm import moment_starts, ols_rss
        from .lmmbatch import BatchCriterion, newton_many

        crit, S = self.crit, self.S
        K = len(blocks.rr)
        if self.__dict__.get("batch_criterion") is None:  # the design's part: once per model
            self.batch_criterion = BatchCriterion(crit, blocks.zy, blocks.xy, blocks.rr)
        bc = self.batch_criterion.with_responses(blocks.zy, blocks.xy, blocks.rr)
        if not bc.usable or len(crit.tmap) == 0:
            return [None] * K
        start = moment_starts(crit.cp, crit.tmap, blocks.zy, blocks.xy, blocks.rr)
        out = newton_many(bc, start, crit.tmap.start)  # and λ = I where it is better, as fit()
        p, n = crit.p, crit.n
        rss = ols_rss(crit.blocks.XX[:p, :p], blocks.xy, blocks.rr)[1]
        Sf = out["S"]
        RX, c_beta, r = Sf[:, :p, :p], Sf[:, p, :p], Sf[:, p, p]
        denom = n - p if self.REML else n
        s2 = r**2 / denom
        logdetS = 2.0 * np.log(abs(np.linalg.det(S))) if self.REML else 0.0
        ok = out["done"] & (rss > 1e-26 * blocks.yss) & (s2 > 1e-10 * rss / max(n - p, 1))
        recs: list[dict | None] = [None] * K
        idx = np.flatnonzero(ok)
        if not len(idx):
            return recs
        if p:
            Rinv = np.linalg.inv(RX[idx])
            beta_r = np.einsum("kji,kj->ki", Rinv, c_beta[idx])  # R_X' β = c_β
            V = np.einsum("ab,kcb,kcd,ed->kae", S, Rinv, Rinv, S) * s2[idx, None, None]
        else:
            beta_r, V = np.zeros((len(idx), 0)), np.zeros((len(idx), 0, 0))
        beta = np.einsum("kb,ab->ka", beta_r + blocks.B[:, idx].T, S)  # per response, whatever the batch
        bse = np.sqrt(np.einsum("kii->ki", V))
        lower = crit.tmap.lower
        for a, k in enumerate(idx):
            theta, fun = out["theta"][k], float(out["fun"][k])
            llf = -0.5 * (fun - logdetS)
            opt = (theta, fun, int(out["nfev"][k]), True, "converged (fit_many's lock-step Newton)", "newton")
            singular = is_singular(theta, lower)
            recs[k] = _record(None, beta[a], bse[a], theta, np.sqrt(s2[k]), llf, singular, [], [], self.nobs, opt)
        return recs


def _shared(model, REML: bool) -> _GaussianShared:
    cache = model.__dict__.setdefault("_many_shared", {})
    if REML not in cache:
        cache[REML] = _GaussianShared(model, REML)
    return cache[REML]


# ----------------------------------------------------------------------------- one chunk
@dataclass
class _Settings:
    method: str | None
    fit_kwargs: dict
    ddf: str


def _record(name, params, bse, theta, sigma, llf, singular, messages, caught, nobs, opt=None) -> dict:
    """What the collection keeps of one response's fit (``opt``: the optimizer's outcome, for
    rebuilding a Gaussian response's full result at its θ̂ without a refit)."""
    return {
        "name": name,
        "params": np.asarray(params, float),
        "bse": np.asarray(bse, float),
        "theta": np.asarray(theta, float),
        "sigma": float(sigma),
        "llf": float(llf),
        "singular": bool(singular),
        "messages": list(messages) + [m for m in caught if m not in messages],
        "converged": not messages,
        "opt": opt,
        "nobs": nobs,
        "error": None,
        "df": None,
    }


def _record_from_estimates(name, est, nobs, caught) -> dict:
    o = est.opt
    opt = (np.asarray(o.x, float), float(o.fun), o.nfev, o.converged, o.message, o.optimizer)
    bse = np.sqrt(np.diag(est.vcov_beta))
    return _record(name, est.beta, bse, est.theta, est.sigma, est.llf, est.singular, est.convergence, caught, nobs, opt)


def _record_from_result(name, res, caught) -> dict:
    msgs = res.convergence_messages
    return _record(name, res.params, res.bse, res.theta, res.sigma, res.llf, res.singular, msgs, caught, res.nobs)


def _failed(name, exc, nobs) -> dict:
    return {"name": name, "error": f"{type(exc).__name__}: {exc}", "nobs": nobs, "messages": [], "df": None}


def run_chunk(model, settings: _Settings, names: list[str], values: np.ndarray) -> list[dict]:
    """Fit the responses ``values[:, j]`` (named ``names``) to ``model``; a record per response."""
    from .threads import fit_threads

    out: list[None | dict] = [None] * len(names)
    missing = ~np.isfinite(values).all(axis=0)  # one pass; the few such columns are looked at below
    for j in np.flatnonzero(missing):
        if np.isinf(values[:, j]).any():  # a single fit refuses these too
            i = int(np.argmax(np.isinf(values[:, j])))
            exc = DataError(f"response '{names[j]}' has an infinite value (row {i} of the model's rows)")
            out[j] = _failed(names[j], exc, int(np.isfinite(values[:, j]).sum()))
    fast = model.family.is_lmm and settings.fit_kwargs.get("standardize", True)
    if fast and (~missing).any():
        REML = (settings.method or "REML").upper() == "REML"
        shared = _shared(model, REML)
        cols = np.flatnonzero(~missing)
        # the lock-step Newton unless the user asked for the single fit's optimizer, start or limit
        newton = not any(settings.fit_kwargs.get(k) is not None for k in ("optimizer", "start", "maxiter"))
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
                        if settings.ddf != "normal":
                            crit = shared.criteria(None, blocks, [i])[0]
                            full = full_gaussian(model, shared, rec, values[:, j], crit, None)
                            _add_df(rec, full, settings.ddf)
                        out[j] = rec
                        continue
                    crit = shared.criteria(None, blocks, [i])[0]
                    out[j] = _fit_gaussian(model, shared, crit, names[j], settings, values[:, j])
    for j in range(len(names)):
        if out[j] is None:
            out[j] = _fit_one(model, settings, names[j], values[:, j])
    return out


def _fit_gaussian(model, shared: _GaussianShared, crit, name: str, settings: _Settings, y: np.ndarray) -> dict:
    from .lmm import _optimize_lmm
    from .model import _check_maxiter, _check_start
    from .optimize import FitControl, fit_control

    stub = SimpleNamespace(response_name=name)
    kw = settings.fit_kwargs
    control = FitControl(start=_check_start(kw.get("start"), model.design), maxiter=_check_maxiter(kw.get("maxiter")))
    with warnings.catch_warnings(record=True) as caught:  # summarised once by the collection
        warnings.simplefilter("always")
        try:
            with fit_control(control):
                est = _optimize_lmm(stub, crit, shared.S, shared.REML, kw.get("optimizer"))
            if control.hit_limit:  # as fit() says it
                est.convergence.append(f"the optimizer stopped at maxiter = {control.maxiter} evaluations")
        except (MidasError, np.linalg.LinAlgError, FloatingPointError) as exc:
            return _failed(name, exc, model.design.nobs)
    rec = _record_from_estimates(name, est, model.design.nobs, [str(w.message) for w in caught])
    if settings.ddf != "normal":
        _add_df(rec, full_gaussian(model, shared, rec, y, crit, kw.get("optimizer")), settings.ddf)
    return rec


def full_gaussian(model, shared: _GaussianShared, rec: dict, y: np.ndarray, crit=None, optimizer=None):
    """The full result of a complete Gaussian response fitted on the shared design, at its θ̂
    (no second optimisation: the same numbers as the record)."""
    from .lmm import lmm_estimates
    from .optimize import OptResult
    from .results import MixedModelResults

    m = model.with_response(y)
    crit = shared.criteria(y[:, None])[0] if crit is None else crit
    x, fun, nfev, conv, message, used = rec["opt"]  # used: the optimizer that found θ̂
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = lmm_estimates(
            m.design, crit, shared.S, shared.REML, OptResult(x, fun, nfev, conv, message, used), rec["messages"]
        )
    # what a refit or a bootstrap of this result uses: the optimizer the user asked fit_many for
    opts = {"method": "REML" if shared.REML else "ML", "optimizer": optimizer, "standardize": True}
    return MixedModelResults(m, est, fit_options=opts)


def _add_df(rec: dict, res, ddf: str) -> None:
    ct = res.coef_table(ddf=ddf)
    rec["df"] = ct["df"].to_numpy(dtype=float)
    rec["pvalues"] = ct["p_value"].to_numpy(dtype=float)


def _fit_one(model, settings: _Settings, name: str, y: np.ndarray) -> dict:
    """One response by a fit of its own: on the shared design when complete, else on its rows."""
    observed = ~np.isnan(y)
    with warnings.catch_warnings(record=True) as caught:  # summarised once by the collection
        warnings.simplefilter("always")
        try:
            m = model.with_response(y, name) if observed.all() else subset_model(model, y)
            res = m.fit(method=settings.method, **settings.fit_kwargs)
            _check_layout(model, res)
            rec = _record_from_result(name, res, [str(w.message) for w in caught])
            rec["theta"] = _theta_in_model_order(model, res)
            if settings.ddf != "normal":
                _add_df(rec, res, settings.ddf)
        except (MidasError, np.linalg.LinAlgError, FloatingPointError) as exc:
            return _failed(name, exc, int(observed.sum()))
    return rec


def _check_layout(model, res) -> None:
    """A response fitted on its own rows must have the model's coefficients (rows that lose a
    level of a factor, say, give a different model: an error for this response, not a NaN row)."""
    lost = [c for c in model.design.fixed_names if c not in set(res.params.index)]
    if lost:
        raise FitError(
            f"on this response's observed rows the design loses {', '.join(lost)} (no rows left for it); "
            "fit this response on its own"
        )


def _theta_in_model_order(model, res) -> np.ndarray:
    """θ of a fit on a subset of rows in the model's θ order (the terms are ordered by their
    number of levels, which a subset can change)."""
    from .reterms import ThetaMap

    want = ThetaMap(model.design.terms).names
    have = dict(zip(ThetaMap(res.design.terms).names, np.asarray(res.theta, float)))
    return np.array([have.get(n, np.nan) for n in want])


def subset_model(model, y: np.ndarray):
    """The model built again on the rows where ``y`` is observed, with ``y`` as its response."""
    from .model import MixedModel

    observed = ~np.isnan(y)
    if observed.sum() == 0:
        raise DataError("the response has no observed value")
    src = model.built_from
    positions = _positions_in_data(model)
    if positions is None:
        raise FitError(
            "a response with missing values needs the model's own rows again: build the model with "
            "MixedModel.from_formula on a DataFrame with a unique index, or drop the missing values first"
        )
    rows = positions[observed]
    if np.any(rows < 0):
        raise FitError("rows of the model are no longer in the DataFrame it was built from: build the model again")
    data = src["data"].iloc[rows]
    data = data.assign(**{_RESPONSE_COLUMN: y[observed]})
    rhs = str(src["formula"]).split("~", 1)[1]

    def subset(v):
        if v is None or isinstance(v, str):
            return v
        return np.asarray(v)[rows]

    d = model.design
    # proportions of a cbind() model keep their trials as weights
    weights = np.asarray(d.weights)[observed] if d.trials is not None else subset(src["weights"])
    sub = MixedModel.from_formula(
        f"`{_RESPONSE_COLUMN}` ~{rhs}",
        data,
        family=model.family,
        weights=weights,
        offset=subset(src["offset"]),
        ziformula=src.get("ziformula"),
    )
    same_columns = list(sub.design.fixed_names) == list(d.fixed_names)
    if same_columns and not np.allclose(sub.design.X, np.asarray(d.X)[observed], rtol=1e-12, atol=0):
        raise FitError(
            "the DataFrame the model was built from has changed since (its rows no longer give the model's "
            "design): build the model again before fit_many"
        )
    return sub


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
    ddf = str(ddf).lower()
    if ddf not in ("normal", "satterthwaite"):
        raise FitError(f"ddf must be 'normal' or 'satterthwaite' for fit_many, not {ddf!r}")
    if ddf == "satterthwaite" and not model.family.is_lmm:
        raise FitError("Satterthwaite degrees of freedom are for Gaussian models; a GLMM's tests are Wald z tests")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise FitError(f"n_jobs must be a positive integer or -1 (all cores), not {n_jobs!r}")
    if model.design.source is not None:
        raise FitError("fit_many needs the model's rows in memory (a pandas DataFrame), not Dask data")
    allowed = {"optimizer", "start", "maxiter", "standardize"} | (set() if model.family.is_lmm else {"nAGQ", "fast"})
    unknown = sorted(set(fit_kwargs) - allowed)
    if unknown:
        raise FitError(
            f"fit_many does not take {', '.join(unknown)} for this model; it takes {', '.join(sorted(allowed))}"
        )
    from .model import _check_maxiter, _check_start

    _check_start(fit_kwargs.get("start"), model.design)  # once, not once per response
    _check_maxiter(fit_kwargs.get("maxiter"))
    if model.family.is_lmm and method is not None and str(method).upper() not in ("REML", "ML"):
        raise FitError(f"unknown method '{method}' for a Gaussian model; use 'REML' or 'ML'")
    settings = _Settings(method, dict(fit_kwargs), ddf)
    K = len(names)
    bar = _Progress(K, progress)
    if client is not None:
        records = _run_dask(client, model, settings, names, values, bar)
    else:
        workers = _workers(n_jobs)
        if workers == 1 or K < 2:
            records = []
            # progress in steps of ~5%, but a Gaussian batch of at most BATCH responses at once
            step = BATCH if model.family.is_lmm else max(1, min(BATCH, K // 20 or 1))
            for a in range(0, K, step):
                records += run_chunk(model, settings, names[a : a + step], values[:, a : a + step])
                bar.update(min(step, K - a))
        else:
            records = _run_processes(workers, model, settings, names, values, bar)
    bar.close()
    res = ManyResults(model, settings, names, records, Y)
    res._warn()
    return res


def _workers(n_jobs: int) -> int:
    import os

    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def _chunks(K: int, parts: int) -> list[slice]:
    size = max(1, math.ceil(K / parts))
    return [slice(a, min(K, a + size)) for a in range(0, K, size)]


def _portable(model):
    """The model as sent to a worker: its data cut to the columns the formula uses."""
    import copy

    from .design import used_columns

    src = model.built_from
    out = copy.copy(model)
    out.__dict__.pop("_many_shared", None)
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
    from .threads import _blas_controller

    _WORKER_MODEL = model
    # one BLAS thread per process, no oversubscription (a forked worker has the parent's list of
    # BLAS libraries and need not search the loaded libraries again)
    _WORKER_LIMIT = _blas_controller().limit(limits=1)  # noqa: F841


def _worker_chunk(settings, names, values):
    return run_chunk(_WORKER_MODEL, settings, names, values)


#: (model, responses) a forked worker inherits from its parent instead of receiving them pickled
_FORK_STATE = None
_FORK_LOCK = threading.Lock()


def _init_forked_worker() -> None:
    _init_worker(_FORK_STATE[0])


def _forked_chunk(settings, names, cols: slice):
    return run_chunk(_WORKER_MODEL, settings, names, _FORK_STATE[1][:, cols])


def _run_processes(workers: int, model, settings, names, values, bar) -> list[dict]:
    """The responses in chunks over ``workers`` processes. Where processes start by fork (Linux),
    the model, its shared Gaussian blocks (built here first) and the responses are inherited,
    not pickled: only names and column ranges travel; elsewhere the model is sent once per
    process and each chunk's responses with it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _FORK_STATE
    parts = _chunks(len(names), workers * 4)
    # the start method set by the user, else the platform's default (without fixing it)
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    ctx = multiprocessing.get_context(method)
    fork = method == "fork"
    if not fork:
        pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=(_portable(model),))
        with pool:
            return _collect(parts, [pool.submit(_worker_chunk, settings, names[s], values[:, s]) for s in parts], bar)
    if model.family.is_lmm and settings.fit_kwargs.get("standardize", True):
        _shared(model, (settings.method or "REML").upper() == "REML")
    from .threads import _blas_controller

    _blas_controller()  # found here once, inherited by the workers
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
    from threadpoolctl import threadpool_limits

    with _DASK_LOCK, threadpool_limits(1):
        return run_chunk(model, settings, names, values)


def _run_dask(client, model, settings, names, values, bar) -> list[dict]:
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


class _Progress:
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


# ----------------------------------------------------------------------------- the results
@dataclass
class ManyResults:
    """The fits of many responses to one model.

    Tables (responses × coefficients): ``params``, ``bse``, ``tvalues``, ``pvalues`` (Wald z, or
    t with Satterthwaite df when fitted with ``ddf="satterthwaite"``; then ``df`` too);
    per response: ``llf``, ``theta``, ``sigma``, ``nobs``, ``converged``, ``singular``,
    ``errors``, ``messages``. ``res[name]`` is that response's full
    :class:`~midas_glmm.results.MixedModelResults`; ``to_frame()`` the tidy long table;
    ``pvalues_adjusted("fdr_bh")`` the multiplicity-adjusted p-values per coefficient.
    """

    model: object
    settings: _Settings
    names: list[str]
    records: list[dict]
    Y: object = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        ok = sum(r["error"] is None for r in self.records)
        unconverged = sum(r["error"] is None and not r["converged"] for r in self.records)
        return (
            f"<ManyResults: {len(self)} responses, {ok} fitted, {len(self) - ok} failed, "
            f"{int(self.singular.sum())} singular, {unconverged} not converged>"
        )

    # -------------------------------------------------------------- tables
    @property
    def _coef_names(self) -> list[str]:
        return list(self.model.design.fixed_names)

    def _table(self, key: str) -> pd.DataFrame:
        cols = self._coef_names
        M = np.full((len(self), len(cols)), np.nan)
        for i, r in enumerate(self.records):
            v = r.get(key)
            if r["error"] is None and v is not None and len(v) == len(cols):
                M[i] = v
        return pd.DataFrame(M, index=pd.Index(self.names, name="response"), columns=cols)

    @property
    def params(self) -> pd.DataFrame:
        return self._table("params")

    @property
    def bse(self) -> pd.DataFrame:
        return self._table("bse")

    @property
    def tvalues(self) -> pd.DataFrame:
        return self.params / self.bse

    @property
    def df(self) -> pd.DataFrame:
        """Satterthwaite degrees of freedom (fitted with ``ddf="satterthwaite"``)."""
        if self.settings.ddf == "normal":
            raise FitError("degrees of freedom were not computed: call fit_many(..., ddf='satterthwaite')")
        return self._table("df")

    @property
    def pvalues(self) -> pd.DataFrame:
        if self.settings.ddf != "normal":
            return self._table("pvalues")
        t = self.tvalues
        return pd.DataFrame(2 * stats.norm.sf(np.abs(t.to_numpy())), index=t.index, columns=t.columns)

    def pvalues_adjusted(self, method: str = "fdr_bh") -> pd.DataFrame:
        """p-values adjusted across responses, coefficient by coefficient (statsmodels'
        ``multipletests`` methods: ``"fdr_bh"``, ``"fdr_by"``, ``"bonferroni"``, ``"holm"``, ...);
        failed responses stay NaN and do not count."""
        from statsmodels.stats.multitest import multipletests, multitest_alias

        if method not in multitest_alias:  # statsmodels' own names and aliases
            raise FitError(f"unknown p-value adjustment '{method}'; try 'fdr_bh', 'bonferroni' or 'holm'")
        P = self.pvalues
        out = P.copy()
        for c in P.columns:
            ok = P[c].notna().to_numpy()
            if ok.any():
                out.loc[ok, c] = multipletests(P[c].to_numpy()[ok], method=method)[1]
        return out

    def _series(self, key: str, dtype=float, default=np.nan) -> pd.Series:
        vals = [r.get(key, default) if r["error"] is None or key in ("nobs",) else default for r in self.records]
        return pd.Series(vals, index=pd.Index(self.names, name="response"), name=key, dtype=dtype)

    @property
    def llf(self) -> pd.Series:
        return self._series("llf")

    @property
    def sigma(self) -> pd.Series:
        return self._series("sigma")

    @property
    def nobs(self) -> pd.Series:
        return self._series("nobs", dtype=int, default=0)

    @property
    def converged(self) -> pd.Series:
        return self._series("converged", dtype=bool, default=False)

    @property
    def singular(self) -> pd.Series:
        return self._series("singular", dtype=bool, default=False)

    @property
    def theta(self) -> pd.DataFrame:
        from .reterms import ThetaMap

        names = ThetaMap(self.model.design.terms).names
        M = np.full((len(self), len(names)), np.nan)
        for i, r in enumerate(self.records):
            if r["error"] is None:
                M[i] = r["theta"]
        return pd.DataFrame(M, index=pd.Index(self.names, name="response"), columns=names)

    @property
    def errors(self) -> pd.Series:
        """Why each failed response failed (responses that were fitted are not listed)."""
        bad = {r["name"]: r["error"] for r in self.records if r["error"] is not None}
        return pd.Series(bad, name="error", dtype=object)

    @property
    def messages(self) -> pd.Series:
        """The warnings of each response's fit, joined (empty for a clean fit)."""
        return pd.Series(
            ["; ".join(r["messages"]) for r in self.records],
            index=pd.Index(self.names, name="response"),
            name="messages",
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per response and coefficient: response, term, estimate, std_error,
        statistic, (df,) p_value."""
        P, B, T, Pv = self.params, self.bse, self.tvalues, self.pvalues
        out = pd.DataFrame(
            {
                "response": np.repeat(self.names, P.shape[1]),
                "term": np.tile(P.columns, len(self)),
                "estimate": P.to_numpy().ravel(),
                "std_error": B.to_numpy().ravel(),
                "statistic": T.to_numpy().ravel(),
            }
        )
        if self.settings.ddf != "normal":
            out["df"] = self.df.to_numpy().ravel()
        out["p_value"] = Pv.to_numpy().ravel()
        return out

    # -------------------------------------------------------------- one response in full
    def __getitem__(self, name: str):
        """The full result of one response (as a single ``fit()`` gives it)."""
        try:
            j = self.names.index(str(name))
        except ValueError:
            raise KeyError(f"no response named {name!r}") from None
        rec = self.records[j]
        if rec["error"] is not None:
            raise FitError(f"response '{name}' was not fitted: {rec['error']}")
        y = self._response(j)
        model = self.model
        if rec.get("opt") is not None and not np.isnan(y).any():  # fitted on the shared design
            REML = (self.settings.method or "REML").upper() == "REML"
            return full_gaussian(
                model, _shared(model, REML), rec, y, optimizer=self.settings.fit_kwargs.get("optimizer")
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = model.with_response(y) if not np.isnan(y).any() else subset_model(model, y)
            return m.fit(method=self.settings.method, **self.settings.fit_kwargs)

    def _response(self, j: int) -> np.ndarray:
        if self.Y is None:
            raise FitError("these results do not keep the responses (saved without data)")
        Y = self.Y
        if isinstance(Y, pd.DataFrame):
            Y = Y.iloc[:, [j]]
        elif isinstance(Y, pd.Series):
            pass
        else:
            arr = np.asarray(Y, dtype=float)
            Y = arr.reshape(len(arr), -1)[:, [j]]
        return response_matrix(self.model, Y)[1][:, 0]

    # -------------------------------------------------------------- warnings
    def _warn(self) -> None:
        nbad = int(sum(r["error"] is not None for r in self.records))
        if nbad:
            first = next(r for r in self.records if r["error"] is not None)
            warnings.warn(
                f"{nbad} of {len(self)} responses could not be fitted (see .errors); the first, "
                f"'{first['name']}': {first['error']}",
                ConvergenceWarning,
                stacklevel=4,
            )
        nsing = int(self.singular.sum())
        if nsing:
            warnings.warn(
                f"{nsing} of {len(self)} responses gave a boundary (singular) fit (see .singular)",
                SingularFitWarning,
                stacklevel=4,
            )
        nconv = int(((~self.converged) & self.errors.reindex(self.names).isna().to_numpy()).sum())
        if nconv:
            warnings.warn(
                f"{nconv} of {len(self)} responses did not converge cleanly (see .converged and .messages)",
                ConvergenceWarning,
                stacklevel=4,
            )
