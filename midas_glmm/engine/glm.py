"""The GLM without random effects that starts a GLMM: iteratively reweighted least squares.

Each step solves the weighted least-squares problem of the working response
z = η − offset + (y − μ)/μ' with weights w·μ'²/V(μ), until the deviance changes by less than
1e-8 (R's ``glm.fit`` and statsmodels' GLM stop alike). The family is the one
:meth:`~midas_glmm.families.Family.start_family` names: itself, or for NB1 and beta the
exponential family with their link.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..families import Family
from .glmmrows import canonical_terms

__all__ = ["GLMFit", "fit_glm"]


class GLMFit:
    """β̂, the fitted means and the deviance of a GLM fit (the deviance computed when read)."""

    def __init__(self, beta: np.ndarray, mu: np.ndarray, converged: bool, family: Family, y, w):
        self.beta, self.mu, self.converged = beta, mu, converged
        self._dev = (family, y, w)

    @cached_property
    def deviance(self) -> float:
        family, y, w = self._dev
        return float(family.deviance(y, self.mu, w, 1.0))


def fit_glm(
    y, X, family: Family, offset=None, weights=None, tol: float = 1e-8, maxiter: int = 100, canonical=None
) -> GLMFit:
    """IRLS for the GLM y ~ X (+ offset) of ``family`` with prior weights ``weights``.

    ``canonical`` = (link code, a, b): the family is a canonical binomial (logit) or Poisson (log),
    whose log-likelihood is const + Σ a log μ + b log(1 − μ) or const + Σ a log μ − bμ
    (:attr:`~midas_glmm.engine.glmmrows.RowBlock.canonical_rows`). Its steps then take μ, μ' and
    the log-likelihood from one exp and one log1p per row (:func:`~.glmmrows.canonical_terms`),
    and stop on the change of −2 log-likelihood, which is the deviance's change."""
    n = len(y)
    offset = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    at = _canonical_state(w, *canonical) if canonical is not None else _family_state(family, y, w)
    start = family.start_mean(y)
    eta = family.linkfun(start)
    mu, d, W, _ = at(eta, start)
    beta = np.zeros(X.shape[1])
    dev = np.inf
    converged = False
    for _ in range(maxiter):
        z = eta - offset + (y - mu) / d
        root = np.sqrt(W)
        beta = _weighted_least_squares(X * root[:, None], z * root)
        eta = X @ beta + offset
        mu, d, W, dev_new = at(eta)
        if abs(dev_new - dev) <= tol:
            converged = True
            break
        dev = dev_new
    return GLMFit(beta, mu, converged, family, y, w)


def _family_state(family: Family, y, w):
    """The IRLS state at η from the family's own functions: (μ, μ', the weight w·μ'²/V(μ), the
    deviance; ∞ at the start, μ given, where no step has been taken)."""

    def at(eta, mu=None):
        start = mu is not None
        mu = family.linkinv(eta) if mu is None else mu
        d = family.mu_eta(eta, mu)
        dev = np.inf if start else family.deviance(y, mu, w, 1.0)
        return mu, d, w * d * d / family.variance(mu, 1.0), dev

    return at


def _canonical_state(w, link, a, b):
    """The IRLS state at η of a canonical binomial or Poisson family, where μ' = V(μ): (μ, μ', the
    weight w·μ', −2 log-likelihood: the deviance less a constant), by one exp and one log1p per
    row (:func:`~.glmmrows.canonical_terms`); a start's μ is the one at η."""

    def at(eta, mu=None):
        ll, mu, d = canonical_terms(link, eta, a, b)
        return mu, d, w * d, -2.0 * ll

    return at


def _weighted_least_squares(Xr: np.ndarray, zr: np.ndarray) -> np.ndarray:
    """argmin ‖zr − Xr β‖ by the normal equations (one pass over the rows; a start need not have
    the last digits a QR gives) when Xr'Xr, scaled to a unit diagonal, has a condition number
    below 1e10 (the normal equations square Xr's); by lstsq otherwise (near-collinear columns, a
    column of zero weight)."""
    G = Xr.T @ Xr
    d = np.sqrt(np.diag(G))
    if np.all(d > 0) and np.all(np.isfinite(G)):
        C = G / np.outer(d, d)
        w = np.linalg.eigvalsh(C)
        if w[0] > 1e-10 * w[-1]:
            beta = np.linalg.solve(C, (Xr.T @ zr) / d) / d
            if np.all(np.isfinite(beta)):
                return beta
    return np.linalg.lstsq(Xr, zr, rcond=None)[0]
