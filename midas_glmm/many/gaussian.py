"""What every Gaussian response of fit_many shares, and each response's own blocks.

The criterion's plan and the blocks Z'WZ, X'WZ and X'WX are the same for every response; only
Z'Wy, X'Wy and y'Wy change, and they are computed for a batch of responses at once, after which
each response's θ is optimised on the shared structure (the lock-step Newton of
:mod:`~midas_glmm.engine.lmmbatch`, or fit()'s optimizer).
"""

from __future__ import annotations

import warnings
import weakref
from types import SimpleNamespace

import numpy as np

from ..design.blocks import CrossProducts
from ..design.fixed import standardize
from ..engine.lmm import lmm_criterion, lmm_estimates, moment_starts, ols_from_sums, ols_rss
from ..engine.lmmbatch import BatchCriterion, LevelBatch, newton_many
from ..engine.optimize import OptResult, is_singular
from ..linalg import lazy
from ..results import MixedModelResults
from .records import record

__all__ = ["GaussianShared", "shared_for", "full_gaussian"]

batchkernels = lazy.load("batchkernels")  # compiled: loaded on first use

#: most rows of a design whose batches' blocks are summed by numpy, response by response:
#: fit_many's time level with the compiled passes' at 2,000-10,000 rows, 1.04-1.07x at 20,000; above,
#: the compiled passes (~1.5 s to compile once, ~0.7 s to load in a new process)
NUMPY_ROWS = 10_000


# ----------------------------------------------------------------------------- shared Gaussian work
class GaussianShared:
    """What every response of a Gaussian model shares: the criterion's plan and Z'WZ, X'WZ,
    X'WX blocks, the standardised X and Z' per term; :meth:`criteria` adds a batch's own blocks."""

    def __init__(self, model, REML: bool):

        d = model.design
        self.REML = REML
        self.crit, self.S = lmm_criterion(d, REML, dense=False)  # the batch engines read the sparse layout
        X = d.X
        self.p = X.shape[1]
        self.shift, self.scale, _ = standardize(X, list(d.fixed_names), d.gram)
        self.Xs = np.ascontiguousarray((X - self.shift) / self.scale)
        self.w = d.weights if d.has_prior_weights else None
        self.X = X
        self.Xc = np.ascontiguousarray(X, dtype=float)
        self.G, self.Xsum = (X.T @ X if d.gram is None else d.gram), X.sum(axis=0)  # X'X, X'1
        self.nobs = d.nobs
        # Z's non-zeros, one per column of each term: row r's value val[a][r] sits in the column
        # idx[a][r] (node order)
        n = X.shape[0]
        idx, val, off = [], [], 0
        for t in d.terms:
            codes = np.asarray(t.codes, dtype=np.int64)
            for a in range(t.p):
                idx.append(off + codes * t.p + a)
                val.append(np.asarray(t.Zcols[:, a], dtype=float))
            off += t.nlevels * t.p
        self.q = off
        self.off = np.ascontiguousarray(d.offset, dtype=float)  # zeros without an offset
        self.w_rows = np.asarray(self.w, dtype=float) if self.w is not None else np.ones(n)
        #: one term of one or two columns: the criterion is numpy's (LevelBatch), and up to
        #: NUMPY_ROWS rows the data pass of any design: then such a design compiles nothing
        self.batch_kind = LevelBatch if LevelBatch.applies(self.crit) else BatchCriterion
        self.numpy_rows = n <= NUMPY_ROWS
        if self.numpy_rows:  # Z by column for the bincounts (a column of ones: None, no product)
            self.zidx_cols = idx
            self.zval_cols = [None if np.all(v == 1.0) else np.ascontiguousarray(v) for v in val]
        else:  # Z by rows for the compiled pass
            self.zidx = np.ascontiguousarray(np.column_stack(idx)) if idx else np.zeros((n, 0), np.int64)
            self.zval = np.ascontiguousarray(np.column_stack(val)) if val else np.zeros((n, 0))

    def response_blocks(self, values: np.ndarray) -> SimpleNamespace:
        """A batch's own blocks (complete responses, n × K), as a single fit's data pass makes
        them: b (p × K, the rough OLS fit taken out), Z'Wr (K × q), X'Wr (K × p), r'Wr and y'Wy.

        Each sum is taken response by response: a response's numbers do not depend on the other
        responses of its batch, so its fit is the same whichever batch or process it is in. A
        design of at most :data:`NUMPY_ROWS` rows sums in numpy, compiling nothing; larger ones
        by two compiled passes over the rows (:func:`~midas_glmm.linalg.batchkernels.ols_sums`
        for b, then :func:`~midas_glmm.linalg.batchkernels.residual_sums`)."""
        if self.numpy_rows:
            return self._numpy_blocks(values)
        K = values.shape[1]
        Y = values if values.dtype == np.float64 else values.astype(float)
        Xty, sy = np.zeros((self.p, K)), np.zeros(K)
        batchkernels.ols_sums(Y, self.off, self.Xc, Xty, sy, np.empty(K))
        B = ols_from_sums(self.G, self.Xsum, self.X.shape[0], Xty, sy, self.shift, self.scale)
        zy, xy = np.zeros((self.q, K)), np.zeros((self.p, K))
        rr, yss = np.zeros(K), np.zeros(K)
        B = np.ascontiguousarray(B)
        batchkernels.residual_sums(
            Y, self.off, self.Xs, B, self.w_rows, self.zidx, self.zval, zy, xy, rr, yss, np.empty((2, K))
        )
        return SimpleNamespace(B=B, zy=np.ascontiguousarray(zy.T), xy=np.ascontiguousarray(xy.T), rr=rr, yss=yss)

    def _numpy_blocks(self, values: np.ndarray) -> SimpleNamespace:
        """:meth:`response_blocks` by numpy, one response at a time (BLAS products, bincounts;
        over chunks of responses at once it cost 1.1-1.3x more at 2,000-10,000 rows)."""
        K = values.shape[1]
        Y = np.ascontiguousarray(values.T, dtype=float)  # one response per row
        if self.off.any():
            Y = Y - self.off  # y = response − offset (a new array: values may be the caller's)
        Xty = np.empty((self.p, K))
        for k in range(K):
            Xty[:, k] = self.Xc.T @ Y[k]
        B = ols_from_sums(self.G, self.Xsum, self.X.shape[0], Xty, Y.sum(axis=1), self.shift, self.scale)
        zy, xy = np.empty((K, self.q)), np.empty((K, self.p))
        rr, yss = np.empty(K), np.empty(K)
        w = self.w_rows if self.w is not None else None
        for k in range(K):
            y = Y[k]
            e = y - self.Xs @ B[:, k] if self.p else y
            we = e if w is None else w * e
            rr[k] = e @ we
            yss[k] = y @ (y if w is None else w * y)
            xy[k] = self.Xs.T @ we
            zk = zy[k]
            zk[:] = 0.0
            for idx, val in zip(self.zidx_cols, self.zval_cols):
                zk += np.bincount(idx, weights=we if val is None else val * we, minlength=self.q)
        return SimpleNamespace(B=B, zy=zy, xy=xy, rr=rr, yss=yss)

    def criteria(self, values: np.ndarray, blocks: SimpleNamespace | None = None, which=None):
        """One criterion per column of ``values`` (complete responses, n × K), or per column
        ``which`` of the batch whose ``blocks`` are given."""

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
        """The batch's fits by lock-step Newton (:mod:`~midas_glmm.engine.lmmbatch`): per response the
        estimates :func:`~midas_glmm.engine.lmm.lmm_estimates` gives at θ̂ (computed here for the whole
        batch from the Schur factors at θ̂), or None for a response left to the single-fit
        optimizer (not converged by :func:`~midas_glmm.engine.lmmbatch.newton_many`, or a residual
        variance or residual sum of squares at zero, which the single fit reports)."""

        crit, S = self.crit, self.S
        K = len(blocks.rr)
        if self.__dict__.get("batch_criterion") is None:  # the design's part: once per model
            self.batch_criterion = self.batch_kind(crit, blocks.zy, blocks.xy, blocks.rr)
        bc = self.batch_criterion.with_responses(blocks.zy, blocks.xy, blocks.rr)
        if not bc.usable or len(crit.tmap) == 0:
            return [None] * K
        p, n = crit.p, crit.n
        ols = ols_rss(crit.cp.XytXy[:p, :p], blocks.xy, blocks.rr)  # the starts' OLS fits, and their RSS
        start = moment_starts(crit.cp, crit.tmap, blocks.zy, blocks.xy, blocks.rr, ols=ols)
        out = newton_many(bc, start, crit.tmap.start)  # and λ = I where it is better, as fit()
        rss = ols[1]
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
            recs[k] = record(None, beta[a], bse[a], theta, np.sqrt(s2[k]), llf, singular, [], [], self.nobs, opt)
        return recs


#: each model's shared Gaussian blocks, by REML: built once per model (in the parent before
#: forked workers start, so that they inherit them), and never saved with the model
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_for(model, REML: bool) -> GaussianShared:
    """The :class:`GaussianShared` of ``model`` (REML or ML), built on first use."""
    cache = _SHARED.setdefault(model, {})
    if REML not in cache:
        cache[REML] = GaussianShared(model, REML)
    return cache[REML]


def full_gaussian(model, shared: GaussianShared, rec: dict, y: np.ndarray, crit=None, optimizer=None):
    """The full result of a complete Gaussian response fitted on the shared design, at its θ̂
    (no second optimisation: the same numbers as the record)."""

    m = model.with_response(y, name=rec["name"])
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
