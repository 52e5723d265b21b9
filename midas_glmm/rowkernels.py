"""Compiled per-row passes of a GLMM (numba, cached on disk).

A PIRLS step reads every row once: the linear predictor, the log-likelihood, the working
weights and response, and the weighted cross-products of the working system. Done with numpy,
each of those is a row-sized temporary; here each is one loop over the rows that writes only
level-sized sums (and the two row-sized working vectors the step needs).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["linear_predictor", "canonical_working", "weighted_blocks", "LOGIT", "LOG"]

LOGIT, LOG = 0, 1
_MU_MIN, _MU_MAX = 1e-15, 1 - 1e-15


@njit(cache=True)
def linear_predictor(base, Zall, zidx, b, out):
    """η_i = base_i + Σ_c Z[i, c] b[zidx[i, c]] (base = offset + Xβ): ZΛu without Z."""
    n, k = Zall.shape
    for i in range(n):
        s = base[i]
        for c in range(k):
            s += Zall[i, c] * b[zidx[i, c]]
        out[i] = s


@njit(cache=True)
def canonical_working(link, eta, y, prior, off, const, ya, yb, W, z):
    """Σ log f(y | μ) with W and z of a canonical binomial (logit) or Poisson (log) model.

    Binomial: log f = const + a log μ + b log(1 − μ), W = w μ(1 − μ); Poisson: log f = const +
    a log μ − b μ, W = w μ; z = η − offset + (y − μ)/μ'. μ is kept inside the family's range as
    :meth:`Family.linkinv` does. Returns −∞ where the pass leaves the domain (a step to reject)."""
    ll = 0.0
    for i in range(len(eta)):
        e = eta[i]
        if link == LOGIT:  # one exp and one log1p: log μ = −log(1 + e^−η), log(1 − μ) = −η + log μ
            t = np.exp(-abs(e))
            lp = np.log1p(t)
            if e >= 0:
                mu, logmu, log1mu = 1.0 / (1.0 + t), -lp, -e - lp
            else:
                mu, logmu, log1mu = t / (1.0 + t), e - lp, -lp
            if mu < _MU_MIN or mu > _MU_MAX:  # far in a tail: μ held inside (0, 1) as Family.linkinv
                mu = min(max(mu, _MU_MIN), _MU_MAX)
                logmu, log1mu = np.log(mu), np.log1p(-mu)
            d = mu * (1.0 - mu)
            ll += const[i] + ya[i] * logmu + yb[i] * log1mu
        else:  # log μ = η unless μ is held at its floor
            mu = np.exp(e)
            logmu = e
            if mu < 1e-300:
                mu = 1e-300
                logmu = np.log(mu)
            d = mu
            ll += const[i] + ya[i] * logmu - yb[i] * mu
        W[i] = prior[i] * d
        z[i] = e - off[i] + (y[i] - mu) / d
        if not (np.isfinite(W[i]) and np.isfinite(z[i])):
            return -np.inf
    return ll


@njit(cache=True)
def weighted_blocks(w, Zall, dest, za, zb, zidx, Xy, A, XZ, XX):
    """Z'WZ into A (at ``dest``), Z'W[X y] into XZ (rows ``zidx``) and [X y]'W[X y] into XX,
    all zeroed by the caller, in one pass over the rows."""
    n, m = Xy.shape
    npair = dest.shape[1]
    ncol = zidx.shape[1]
    for i in range(n):
        wi = w[i]
        for k in range(npair):
            A[dest[i, k]] += wi * Zall[i, za[k]] * Zall[i, zb[k]]
        for c in range(ncol):
            wz = wi * Zall[i, c]
            r = zidx[i, c]
            for h in range(m):
                XZ[r, h] += wz * Xy[i, h]
        for a in range(m):
            wa = wi * Xy[i, a]
            for h in range(a + 1):
                XX[a, h] += wa * Xy[i, h]
    for a in range(m):
        for h in range(a):
            XX[h, a] = XX[a, h]
